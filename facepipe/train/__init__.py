"""What the detector and recognizer trainers (and dataset preparation) share.

config.py       RunConfig (name, output_dir, resume, device, amp, workers, threads, seed, progress) and the
                YAML + key=value loader (nested sections, older key names)
runlog.py       the run folder: resume policy, config.yaml, metrics.jsonl, plots
schedule.py     the learning-rate schedule (warm-up, poly / cosine / step / constant)
checkpoint.py   atomic save, weights_only load, format check, RNG states
distributed.py  torchrun / DDP set-up
onnx_export.py  torch -> ONNX, the export report, parity failures remove the file
progress.py     the rich progress bar
recordio.py     insightface/MXNet RecordIO, written by `prepare`, read by the recognizer's data
"""
