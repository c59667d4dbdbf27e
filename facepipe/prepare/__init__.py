"""Dataset preparation: raw identity-per-folder photos -> aligned, filtered, optionally masked training sets.

config.py       PrepareConfig: the per-image options, saved in DST/prepare_config.json
scan.py         list SRC/<identity>/**: sources, output names, content hashes
worker.py       per-image work in worker processes: detect, choose, align, check, write, embed
select.py       --faces largest | all | single-only
quality.py      face size, sharpness (variance of Laplacian), yaw/pitch from 5 landmarks
masks.py        synthetic masks from 68 or 5 landmarks; MaskAugment (online) and apply_random_mask
landmarks68.py  dlib's 68-point predictor on any detector's box
manifest.py     DST/manifest.jsonl: one decision record per source image
outputs.py      chip files: orphan sweep after a killed run, DST/.excluded for overlapping identities
hygiene.py      same person under two folders, outlier images, overlap with an evaluation set
reference.py    embeddings of an evaluation set (--exclude-overlap-with)
pack.py         --format recordio: train.rec / train.idx / property / labels.tsv
summary.py      counts; summary.json, identities.csv
contact_sheet.py  DST/contact_sheet.png
pairs.py        masked verification pairs (`facepipe prepare-pairs`)
run.py          prepare(): the whole resumable run
cli.py          the `prepare` and `prepare-pairs` commands
"""
__all__ = ["MaskAugment", "add_mask", "apply_random_mask"]


def __getattr__(name: str):
    """Lazy: `facepipe --help` imports facepipe.cli.prepare, which should not pay for cv2 and numpy."""
    if name in __all__:
        from facepipe.prepare import masks

        return getattr(masks, name)
    raise AttributeError(f"module 'facepipe.prepare' has no attribute {name!r}")
