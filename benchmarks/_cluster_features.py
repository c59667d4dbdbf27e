"""Per-photo descriptors for benchmarks/cluster.py, computed once and cached outside the repository.

For every photo, the largest face, as
  recipe   face_recognition's recipe with dlib itself: HOG upsampled once, 68 points, dlib's chip, dlib's
           ResNet (through facepipe's ONNX conversion, held to cosine >= 0.9999 against dlib by
           tests/test_align_dlib_chip.py) -- the anchors' input, as in benchmarks/open_set.py;
  default  what facepipe's default pipeline stores (detect, embed the largest face), with its seconds.
NaN rows where no face was found. The cache lives in $FACEPIPE_BENCH_CACHE (default ~/.cache/facepipe-bench),
keyed by the list of photos; --refresh in the caller recomputes.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np


def bench_cache() -> Path:
    path = Path(os.environ.get("FACEPIPE_BENCH_CACHE", Path.home() / ".cache" / "facepipe-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def descriptors(photos: list[Path], cache_name: str, refresh: bool = False) -> dict[str, np.ndarray]:
    """{"recipe": N x 128, "default": N x D, "seconds": N (facepipe's default, per photo)}."""
    import dlib
    from rich.progress import track

    from facepipe.batch import ModelSpec, build_pipeline
    from facepipe.errors import FacepipeError
    from facepipe.runtime.align import dlib_face_chip
    from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path
    from facepipe.runtime.image import read_image

    cache = bench_cache() / f"{cache_name}.npz"
    keys = np.array([str(p) for p in photos])
    if cache.exists() and not refresh:
        saved = dict(np.load(cache))
        if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all():
            return saved
    pipeline = build_pipeline(ModelSpec(threads=1))
    recognizer = pipeline.recognizer
    hog = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    recipe = np.full((len(photos), 128), np.nan, np.float32)
    default = np.full((len(photos), recognizer.embedding_size), np.nan, np.float32)
    seconds = np.zeros(len(photos))
    for i, path in enumerate(track(photos, description=f"descriptors {cache_name}")):
        try:
            image = read_image(path)
        except FacepipeError:
            continue
        shapes = [shape_predictor(image, r) for r in hog(image, 1)]
        if shapes:
            shape = max(shapes, key=lambda s: s.rect.area())
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
            recipe[i] = recognizer.embed_raw(dlib_face_chip(image, points)[None])[0]
        start = time.perf_counter()
        faces = pipeline.detect(image)
        if faces:
            largest = max(faces, key=lambda f: f.area)
            default[i] = pipeline.embed(image, [largest])[0].embedding
        seconds[i] = time.perf_counter() - start
    saved = {"keys": keys, "recipe": recipe, "default": default, "seconds": seconds}
    np.savez(cache, **saved)
    return saved
