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


CHUNK = 128  # photos per cached file: an interrupted run resumes, and several processes can share the work


def descriptors(photos: list[Path], cache_name: str, refresh: bool = False, part: tuple[int, int] = (0, 1)
                ) -> dict[str, np.ndarray]:
    """{"recipe": N x 128, "default": N x D, "seconds": N (facepipe's default, per photo)}.
    part=(i, n): compute only every n-th chunk from the i-th (run n processes to share the work)."""
    import hashlib

    folder = bench_cache() / cache_name
    folder.mkdir(exist_ok=True)
    chunks = [photos[lo:lo + CHUNK] for lo in range(0, len(photos), CHUNK)]
    out: dict[str, list] = {"recipe": [], "default": [], "seconds": []}
    worker = None
    for number, chunk in enumerate(chunks):
        key = hashlib.sha256("\n".join(map(str, chunk)).encode()).hexdigest()[:16]
        cache = folder / f"{key}.npz"
        if cache.exists() and not refresh:
            saved = dict(np.load(cache))
        elif number % part[1] != part[0]:
            continue
        else:
            worker = worker or _Worker()
            saved = worker.run(chunk)
            np.savez(cache.with_suffix(".tmp.npz"), **saved)
            cache.with_suffix(".tmp.npz").replace(cache)
        for name in out:
            out[name].append(saved[name])
    if len(out["seconds"]) != len(chunks):
        return {}
    return {name: np.concatenate(parts) for name, parts in out.items()}


class _Worker:
    def __init__(self):
        import dlib

        from facepipe.pipeline.batch import ModelSpec, build_pipeline
        from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path

        self.pipeline = build_pipeline(ModelSpec(threads=1))
        self.hog = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def run(self, photos: list[Path]) -> dict[str, np.ndarray]:
        from facepipe.errors import FacepipeError
        from facepipe.runtime.align import dlib_face_chip
        from facepipe.runtime.image import read_image

        recognizer = self.pipeline.recognizer
        recipe = np.full((len(photos), 128), np.nan, np.float32)
        default = np.full((len(photos), recognizer.embedding_size), np.nan, np.float32)
        seconds = np.zeros(len(photos))
        for i, path in enumerate(photos):
            try:
                image = read_image(path)
            except FacepipeError:
                continue
            shapes = [self.shape_predictor(image, r) for r in self.hog(image, 1)]
            if shapes:
                shape = max(shapes, key=lambda s: s.rect.area())
                points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
                recipe[i] = recognizer.embed_raw(dlib_face_chip(image, points)[None])[0]
            start = time.perf_counter()
            faces = self.pipeline.detect(image)
            if faces:
                largest = max(faces, key=lambda f: f.area)
                default[i] = self.pipeline.embed(image, [largest])[0].embedding
            seconds[i] = time.perf_counter() - start
        return {"recipe": recipe, "default": default, "seconds": seconds}
