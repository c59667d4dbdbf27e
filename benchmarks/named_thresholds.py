"""Default cosine thresholds of recognizers, measured on celeba-dev pairs at a stated false-accept rate.

    python benchmarks/named_thresholds.py [--recognizer sface] [--recognizer dlib] [--detector yunet] [--far 0.01]

Each photo's largest face (found by --detector, default the YuNet file of $FACEPIPE_MODELS or the named
`yunet`) is aligned on the recognizer's own template and embedded; pairs: every same-identity pair up to 3,000
and as many random different-identity pairs (facepipe.recognition.verification.make_pairs, seed 0). The
threshold is the cosine similarity that lets --far of the different-identity pairs through. A recognizer that
cannot be loaded here (the named `sface`, offline) is reported with the registry's published value instead.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_root, identity_photos  # noqa: E402


def default_detector() -> str:
    shared = Path(os.environ.get("FACEPIPE_MODELS",
                                 REPO.parent / "shared" / "models")) / "face_detection_yunet_2023mar.onnx"
    return f"yunet:{shared}" if shared.is_file() else "yunet"


def embeddings(detector, recognizer, photos: list[Path]) -> np.ndarray:
    from rich.progress import track

    from facepipe.pipeline.face_pipeline import FacePipeline
    from facepipe.runtime.image import read_image

    pipeline = FacePipeline(detector, recognizer)
    out = np.full((len(photos), recognizer.embedding_size), np.nan, np.float32)
    for i, path in enumerate(track(photos, description=recognizer.name)):
        image = read_image(path)
        faces = pipeline.detect(image)
        if faces:
            out[i] = recognizer.embed(pipeline.chips(image, [max(faces, key=lambda f: f.area)]))[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recognizer", action="append", default=None, help="named model, file or 'dlib' (repeat)")
    parser.add_argument("--detector", default=None)
    parser.add_argument("--far", type=float, default=0.01)
    args = parser.parse_args()

    from facepipe.errors import FacepipeError
    from facepipe.recognition.verification import make_pairs, tar_at_far
    from facepipe.runtime.loader import load_detector, load_recognizer
    from facepipe.runtime.models import REGISTRY

    people = identity_photos(data_root() / "celeba-dev")
    photos = [p for n in people for p in people[n]]
    labels = np.array([i for i, n in enumerate(people) for _ in people[n]])
    detector = load_detector(args.detector or default_detector(), threads=1)
    for spec in args.recognizer or ["sface", "dlib"]:
        try:
            recognizer = load_recognizer(None if spec == "dlib" else spec, threads=1)
        except FacepipeError as exc:
            published = REGISTRY[spec].default_threshold if spec in REGISTRY else None
            print(f"{spec}: not measured here ({exc})" +
                  (f"; default stays {published} ({REGISTRY[spec].threshold_source})" if published is not None else ""))
            continue
        emb = embeddings(detector, recognizer, photos)
        found = ~np.isnan(emb[:, 0])
        a, b, same = make_pairs(labels[found], 3000, seed=0)
        scores = (emb[found][a] * emb[found][b]).sum(1)
        tar, threshold = tar_at_far(scores, same, args.far)
        print(f"{spec} ({recognizer.name}, {recognizer.embedding_size}-d) with {detector.name}: {found.sum()} of "
              f"{len(photos)} photos with a face, {same.sum()} same / {(~same).sum()} different pairs; at FAR "
              f"{args.far:g}: cosine threshold {threshold:.3f}, TAR {tar:.3f}; its current default "
              f"{recognizer.threshold:.3f}")


if __name__ == "__main__":
    main()
