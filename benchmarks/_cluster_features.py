"""Per-photo descriptors for benchmarks/cluster.py, computed once and cached outside the repository.

For every photo, the largest face, as
  recipe   face_recognition's recipe with dlib itself: HOG upsampled once, 68 points, dlib's chip, dlib's
           ResNet (through facepipe's ONNX conversion, held to cosine >= 0.9999 against dlib by
           tests/test_align_dlib_chip.py) -- the anchors' input, as in benchmarks/open_set.py;
  default  what facepipe's default pipeline stores (detect, embed the largest face), with its seconds.
NaN rows where no face was found. The cache lives in $FACEPIPE_BENCH_CACHE (default ~/.cache/facepipe-bench),
one file per chunk of photos: the recipe's keyed by the photos (it runs dlib as it is), facepipe's by the
photos AND `pipeline_key` (the models, the detector's settings and the source of the code that detects,
aligns and embeds), so a change to facepipe's detector -- such as issue 22's second chance -- recomputes it
instead of reusing a stale file. --refresh in the caller recomputes both.
"""
from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np


def bench_cache() -> Path:
    path = Path(os.environ.get("FACEPIPE_BENCH_CACHE", Path.home() / ".cache" / "facepipe-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


CHUNK = 128  # photos per cached file: an interrupted run resumes, and several processes can share the work
RECIPE = ("recipe",)
DEFAULT = ("default", "seconds")


def pipeline_key(pipeline) -> str:
    """What facepipe's default descriptors depend on: the models' fingerprints, the detector's own settings
    (detect_size, upsample, second_chance...) and the source of facepipe/runtime and the face pipeline (the
    module constants of the passes live there). Over-invalidates on a cosmetic edit, never reuses a stale file."""
    import facepipe

    root = Path(facepipe.__file__).parent
    digest = hashlib.sha256()
    detector, recognizer = pipeline.detector, pipeline.recognizer
    settings = sorted((k, repr(v)) for k, v in vars(detector).items()
                      if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None))))
    digest.update(repr((detector.fingerprint, settings, recognizer.fingerprint)).encode())
    for path in sorted([*(root / "runtime").rglob("*.py"), root / "pipeline" / "face_pipeline.py"]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def descriptors(photos: list[Path], cache_name: str, refresh: bool = False, part: tuple[int, int] = (0, 1)
                ) -> dict[str, np.ndarray]:
    """{"recipe": N x 128, "default": N x D, "seconds": N (facepipe's default, per photo)}.
    part=(i, n): compute only every n-th chunk from the i-th (run n processes to share the work)."""
    folder = bench_cache() / cache_name
    folder.mkdir(exist_ok=True)
    chunks = [photos[lo:lo + CHUNK] for lo in range(0, len(photos), CHUNK)]
    out: dict[str, list] = {name: [] for name in RECIPE + DEFAULT}
    worker = _Worker()
    for number, chunk in enumerate(chunks):
        photos_key = hashlib.sha256("\n".join(map(str, chunk)).encode()).hexdigest()[:16]
        for names, file, run in ((RECIPE, folder / f"{photos_key}.npz", worker.recipe),
                                 (DEFAULT, folder / f"{photos_key}-{worker.key}.npz", worker.default)):
            if file.exists() and not refresh and all(n in np.load(file) for n in names):
                saved = dict(np.load(file))
            elif number % part[1] != part[0]:
                continue
            else:
                saved = run(chunk)
                if file.exists():  # keep what else the file holds (older files hold both)
                    saved = {**dict(np.load(file)), **saved}
                np.savez(file.with_suffix(".tmp.npz"), **saved)
                file.with_suffix(".tmp.npz").replace(file)
            for name in names:
                out[name].append(saved[name])
    if any(len(parts) != len(chunks) for parts in out.values()):
        return {}
    return {name: np.concatenate(parts) for name, parts in out.items()}


class _Worker:
    def __init__(self):
        import dlib

        from facepipe.pipeline.batch import ModelSpec, build_pipeline
        from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path

        self.pipeline = build_pipeline(ModelSpec(threads=1))
        self.key = pipeline_key(self.pipeline)
        self.hog = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def _images(self, photos: list[Path]):
        from facepipe.errors import FacepipeError
        from facepipe.runtime.image import read_image

        for i, path in enumerate(photos):
            try:
                yield i, read_image(path)
            except FacepipeError:
                continue

    def recipe(self, photos: list[Path]) -> dict[str, np.ndarray]:
        from facepipe.runtime.align import dlib_face_chip

        recipe = np.full((len(photos), 128), np.nan, np.float32)
        for i, image in self._images(photos):
            shapes = [self.shape_predictor(image, r) for r in self.hog(image, 1)]
            if shapes:
                shape = max(shapes, key=lambda s: s.rect.area())
                points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
                recipe[i] = self.pipeline.recognizer.embed_raw(dlib_face_chip(image, points)[None])[0]
        return {"recipe": recipe}

    def default(self, photos: list[Path]) -> dict[str, np.ndarray]:
        default = np.full((len(photos), self.pipeline.recognizer.embedding_size), np.nan, np.float32)
        seconds = np.zeros(len(photos))
        for i, image in self._images(photos):
            start = time.perf_counter()
            faces = self.pipeline.detect(image)
            if faces:
                largest = max(faces, key=lambda f: f.area)
                default[i] = self.pipeline.embed(image, [largest])[0].embedding
            seconds[i] = time.perf_counter() - start
        return {"default": default, "seconds": seconds}
