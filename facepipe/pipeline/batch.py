"""Run the pipeline over many images, in worker processes when asked (facepipe.pipeline.parallel).

Results come back in input order. A bad image becomes a result with an error message, never an exception
that stops the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Iterator

import numpy as np

from facepipe.errors import FacepipeError
from facepipe.pipeline.parallel import process_map, threads_per_worker
from facepipe.runtime.image import read_image
from facepipe.types import Face


@dataclass(frozen=True)
class ModelSpec:
    """What to load: detector and recognizer (None = embedded dlib; a file; or a model name)."""

    detector: str | None = None
    recognizer: str | None = None
    device: str = "cpu"
    threads: int | None = None
    detect_threshold: float | None = None
    second_chance: bool = True  # the detector's second chance on photos where it finds no face (dlib's)


@dataclass
class ImageResult:
    path: Path
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # width, height
    error: str | None = None
    image: np.ndarray | None = field(default=None, repr=False)  # kept only when asked (annotated copies)


def load_spec_detector(spec: ModelSpec):
    """The detector the spec names, without its second chance when the spec turns that off."""
    from facepipe.runtime.loader import load_detector

    detector = load_detector(spec.detector, spec.device, spec.threads)
    if not spec.second_chance and hasattr(detector, "with_passes"):
        detector = detector.with_passes(second_chance=False)
    return detector


def build_pipeline(spec: ModelSpec, with_recognizer: bool = True):
    from facepipe.pipeline.face_pipeline import FacePipeline
    from facepipe.runtime.loader import load_recognizer

    recognizer = load_recognizer(spec.recognizer, spec.device, spec.threads) if with_recognizer else None
    return FacePipeline(load_spec_detector(spec), recognizer)


def largest_first(faces: list[Face]) -> list[Face]:
    """The largest face first (the one enrolled or verified), the others after it in detector order."""
    if not faces:
        return faces
    largest = max(faces, key=lambda f: f.area)
    return [largest] + [f for f in faces if f is not largest]


def analyze(pipeline, image: np.ndarray, mode: str, detect_threshold: float | None = None) -> list[Face]:
    """The per-photo work every path shares (this process, the process pool, Ray actors).
    mode: "detect" (faces only), "largest" (the largest face first, only it embedded), "all" (embed every face)."""
    faces = pipeline.detect(image, detect_threshold)
    if mode == "largest":
        faces = largest_first(faces)
        pipeline.embed(image, faces[:1])
    elif mode == "all":
        pipeline.embed(image, faces)
    return faces


def process_image(spec: ModelSpec, mode: str, keep_image: bool, pipeline, path: Path) -> ImageResult:
    """mode: "detect" (faces only), "largest" (embed the largest face), "all" (embed every face)."""
    try:
        image = read_image(path)
        faces = analyze(pipeline, image, mode, spec.detect_threshold)
        return ImageResult(path, faces, (image.shape[1], image.shape[0]), image=image if keep_image else None)
    except FacepipeError as exc:
        return ImageResult(path, error=str(exc))
    except MemoryError:
        return ImageResult(path, error=f"{path}: out of memory while processing this image")


def run_images(paths: list[Path], spec: ModelSpec, mode: str, workers: int = 1,
               keep_images: bool = False, pipeline=None) -> Iterator[ImageResult]:
    """process_image over many paths; with one worker, `pipeline` (already built by the caller) is used here."""
    with_recognizer = mode != "detect"
    if workers > 1:
        spec = replace(spec, threads=spec.threads or threads_per_worker(workers))
    work = partial(process_image, spec, mode, keep_images)
    yield from process_map(partial(build_pipeline, spec, with_recognizer), work, paths, workers, state=pipeline)
