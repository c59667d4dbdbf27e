"""Helpers the benchmark scripts share: where the data is, and cached embeddings of a photo set."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    root = Path(os.environ.get("FACEPIPE_DATA", REPO.parent / "shared" / "data"))
    if not root.is_dir():
        sys.exit(f"benchmark data not found at {root}: set FACEPIPE_DATA to the shared data folder")
    return root


def cache_dir() -> Path:
    """Where cached descriptors go: $FACEPIPE_BENCH_CACHE (e.g. outside the repository, shared by worktrees)
    or models/cache."""
    path = Path(os.environ.get("FACEPIPE_BENCH_CACHE", REPO / "models" / "cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_for(cache: Path, photos: list[Path], refresh: bool = False) -> dict[str, np.ndarray] | None:
    """The arrays saved in `cache` when it was made for exactly these photos (its "keys"), else None."""
    if refresh or not cache.exists():
        return None
    saved = dict(np.load(cache))
    keys = np.array([str(p) for p in photos])
    return saved if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all() else None


def identity_photos(folder: Path, min_photos: int = 1) -> dict[str, list[Path]]:
    out = {}
    for person in sorted(p for p in folder.iterdir() if p.is_dir()):
        photos = sorted(person.glob("*.jpg"))
        if len(photos) >= min_photos:
            out[person.name] = photos
    return out


# CelebA ids that are one person (looked at: same face, 30 of 30 and 26 of 26 photos matched to the other
# id). Kept apart, whichever is a "stranger" is named in every photo, by any method.
CELEBA_SAME_PERSON = [("07392", "07393"), ("07317", "07319")]


def celeba_dev(merge_same_person: bool = True) -> tuple[list[str], list[Path], np.ndarray]:
    """celeba-dev's identity names, every photo, and each photo's label (an index into names); the ids that are
    one person share a label unless merge_same_person is False."""
    people = identity_photos(data_root() / "celeba-dev")
    names = list(people)
    photos = [p for n in names for p in people[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in people[n]])
    if merge_same_person:
        for a, b in CELEBA_SAME_PERSON:
            if a in names and b in names:
                labels[labels == names.index(b)] = names.index(a)
    return names, photos, labels


def embed_photos(photos: list[Path], cache_name: str) -> np.ndarray:
    """Raw (unnormalised) embedding of the largest face of each photo with the default models;
    a NaN row where no face is found. Cached under models/cache by name."""
    from rich.progress import track

    from facepipe.errors import FacepipeError
    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.image import read_image

    cache = cache_dir() / f"{cache_name}.npz"
    keys = np.array([str(p) for p in photos])
    if cache.exists():
        saved = np.load(cache)
        if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all():
            return saved["embeddings"]
    pipeline = build_pipeline(ModelSpec())
    out = np.full((len(photos), pipeline.recognizer.embedding_size), np.nan, np.float32)
    for i, path in enumerate(track(photos, description=f"embedding {cache_name}")):
        try:
            image = read_image(path)
        except FacepipeError:
            continue
        faces = pipeline.detect(image)
        if faces:
            largest = max(faces, key=lambda f: f.area)
            out[i] = pipeline.recognizer.embed_raw(pipeline.chips(image, [largest]))[0]
    np.savez(cache, keys=keys, embeddings=out)
    return out
