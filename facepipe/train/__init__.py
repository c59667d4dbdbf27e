"""What the detector and recognizer trainers share: config, checkpoints, DDP set-up, run folders."""
