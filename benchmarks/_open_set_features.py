"""Per-photo descriptors for benchmarks/open_set.py, computed once per photo and cached (models/cache).

For every photo, the largest face, as:
  recipe      face_recognition's recipe with dlib itself: HOG upsampled once, 68 points, dlib's chip
              (get_face_chip, 150 px, padding 0.25) and dlib's ResNet. The ResNet runs through facepipe's
              ONNX conversion, which tests/test_align_dlib_chip.py holds to cosine >= 0.9999 against
              dlib's compute_face_descriptor on the same shape (dlib's own net is what
              `time_side_by_side` times).
  fp5         facepipe's detector, 68 points reduced to 5, 5-point similarity chip (facepipe before issue 8)
  dchip       facepipe's detector, dlib's own chip
  dchip_flip  the same chip mirrored (for mirror averaging)
  dchip_jit   mean of 4 dlib jitters of the chip (dlib's num_jitters)
All raw (not normalised); NaN rows where no face was found. (facepipe's default, end to end and timed,
is `default_embeddings` below: cheap, recomputed whenever the defaults change.)
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from _common import cache_dir

VARIANTS = ("recipe", "fp5", "dchip", "dchip_flip", "dchip_jit")


def _largest(faces):
    return max(faces, key=lambda f: f.area) if faces else None


def compute(photos: list[Path], cache_name: str, refresh: bool = False) -> dict[str, np.ndarray]:
    import dlib
    from rich.progress import track

    from facepipe.errors import FacepipeError
    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.align import align_face, dlib_face_chip
    from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path
    from facepipe.runtime.image import read_image

    cache = cache_dir() / f"{cache_name}.npz"
    keys = np.array([str(p) for p in photos])
    if cache.exists() and not refresh:
        saved = dict(np.load(cache))
        if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all():
            return saved
    pipeline = build_pipeline(ModelSpec(threads=1))
    rec = pipeline.recognizer
    hog = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    dim = rec.embedding_size
    out = {v: np.full((len(photos), dim), np.nan, np.float32) for v in VARIANTS}
    for i, path in enumerate(track(photos, description=f"descriptors {cache_name}")):
        try:
            image = read_image(path)
        except FacepipeError:
            continue
        # face_recognition's recipe
        shapes = [shape_predictor(image, r) for r in hog(image, 1)]
        if shapes:
            shape = max(shapes, key=lambda s: s.rect.area())
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
            out["recipe"][i] = rec.embed_raw(dlib_face_chip(image, points)[None])[0]
        face = _largest(pipeline.detect(image))
        if face is None:
            continue
        chip = dlib_face_chip(image, face.landmarks68)
        jitters = np.stack(dlib.jitter_image(chip, 4))
        batch = np.stack([align_face(image, face.landmarks, rec.template), chip, chip[:, ::-1], *jitters])
        raw = rec.embed_raw(batch)
        out["fp5"][i], out["dchip"][i], out["dchip_flip"][i] = raw[0], raw[1], raw[2]
        out["dchip_jit"][i] = raw[3:].mean(0)
    saved = {"keys": keys, **out}
    np.savez(cache, **saved)
    return saved


def recipe_embeddings(photos: list[Path], cache_name: str, refresh: bool = False) -> np.ndarray:
    """face_recognition's recipe alone (the `recipe` variant above, without the others' cost)."""
    import dlib
    from rich.progress import track

    from facepipe.runtime.align import dlib_face_chip
    from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path
    from facepipe.runtime.image import read_image
    from facepipe.runtime.loader import load_recognizer

    cache = cache_dir() / f"{cache_name}.npz"
    keys = np.array([str(p) for p in photos])
    if cache.exists() and not refresh:
        saved = np.load(cache)
        if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all():
            return saved["recipe"]
    rec = load_recognizer(threads=1)
    hog = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    out = np.full((len(photos), rec.embedding_size), np.nan, np.float32)
    for i, path in enumerate(track(photos, description=f"recipe {cache_name}")):
        image = read_image(path)
        shapes = [shape_predictor(image, r) for r in hog(image, 1)]
        if shapes:
            shape = max(shapes, key=lambda s: s.rect.area())
            points = np.array([[p.x, p.y] for p in shape.parts()], np.float32)
            out[i] = rec.embed_raw(dlib_face_chip(image, points)[None])[0]
    np.savez(cache, keys=keys, recipe=out)
    return out


def default_embeddings(photos: list[Path], cache_name: str, refresh: bool = False, detector: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What facepipe's default pipeline (detect, then embed the largest face) stores for each photo, the
    seconds each photo took, and which detector pass found that face ("" where none). detector: another
    detector in front of the default recognizer (a --detector spec)."""
    from rich.progress import track

    from facepipe.errors import FacepipeError
    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.image import read_image

    cache = cache_dir() / f"{cache_name}.npz"
    keys = np.array([str(p) for p in photos])
    if cache.exists() and not refresh:
        saved = np.load(cache)
        if saved["keys"].shape == keys.shape and (saved["keys"] == keys).all() and "passes" in saved:
            return saved["embeddings"], saved["seconds"], saved["passes"]
    pipeline = build_pipeline(ModelSpec(detector=detector, threads=1))
    out = np.full((len(photos), pipeline.recognizer.embedding_size), np.nan, np.float32)
    seconds = np.zeros(len(photos))
    passes = np.full(len(photos), "", dtype=object)
    for i, path in enumerate(track(photos, description=f"facepipe default {cache_name}")):
        try:
            image = read_image(path)
        except FacepipeError:
            continue
        t = time.perf_counter()
        face = _largest(pipeline.detect(image))
        if face is not None:
            out[i] = pipeline.embed(image, [face])[0].embedding
            passes[i] = face.detector_pass or ""
        seconds[i] = time.perf_counter() - t
    passes = passes.astype(str)
    np.savez(cache, keys=keys, embeddings=out, seconds=seconds, passes=passes)
    return out, seconds, passes


def time_side_by_side(photos: list[Path], n: int = 60) -> tuple[float, float, float, float]:
    """Seconds per photo of face_recognition's recipe (dlib: HOG upsampled once, 68 points, dlib's own
    compute_face_descriptor on every face) and of facepipe's default (detect + embed every face), on the
    same sample, alternating photo by photo so that the machine's load weighs on both alike: wall seconds
    per photo of each, then CPU seconds (process time) per photo of each."""
    import dlib

    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.dlib_files import LANDMARKS_68, RESNET, dlib_model_path
    from facepipe.runtime.image import read_image

    pipeline = build_pipeline(ModelSpec(threads=1))
    hog = dlib.get_frontal_face_detector()
    shape_predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    net = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    sample = photos[:: max(1, len(photos) // n)][:n]
    wall, cpu = np.zeros(2), np.zeros(2)  # recipe, facepipe
    for path in sample:
        image = read_image(path)
        for side in (0, 1):
            t, c = time.perf_counter(), time.process_time()
            if side == 0:
                for rect in hog(image, 1):
                    net.compute_face_descriptor(image, shape_predictor(image, rect))
            else:
                pipeline.analyze(image)
            wall[side] += time.perf_counter() - t
            cpu[side] += time.process_time() - c
    wall, cpu = wall / len(sample), cpu / len(sample)
    return wall[0], wall[1], cpu[0], cpu[1]
