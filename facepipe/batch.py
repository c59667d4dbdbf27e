"""Run the pipeline over many images, in worker processes when asked (dlib's HOG uses one core).

Each worker builds its own pipeline once; results come back in input order. A bad image becomes a
result with an error message, never an exception that stops the run.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from facepipe.errors import FacepipeError
from facepipe.runtime.image import read_image
from facepipe.types import Face


@dataclass(frozen=True)
class ModelSpec:
    detector: str | None = None
    recognizer: str | None = None
    device: str = "cpu"
    threads: int | None = None
    detect_threshold: float | None = None


@dataclass
class ImageResult:
    path: Path
    faces: list[Face] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)  # width, height
    error: str | None = None
    image: np.ndarray | None = None  # kept only when asked (annotated copies)


_pipeline = None
_spec: ModelSpec | None = None


def build_pipeline(spec: ModelSpec, with_recognizer: bool = True):
    from facepipe.runtime.loader import load_detector, load_recognizer
    from facepipe.pipeline import FacePipeline

    recognizer = load_recognizer(spec.recognizer, spec.device, spec.threads) if with_recognizer else None
    return FacePipeline(load_detector(spec.detector, spec.device, spec.threads), recognizer)


def _init_worker(spec: ModelSpec, with_recognizer: bool) -> None:
    global _pipeline, _spec
    _spec = spec
    _pipeline = build_pipeline(spec, with_recognizer)


def _process(args: tuple[Path, str, bool]) -> ImageResult:
    path, mode, keep_image = args
    try:
        image = read_image(path)
        faces = _pipeline.detect(image, _spec.detect_threshold)
        if mode == "largest" and faces:
            largest = max(faces, key=lambda f: f.area)
            faces = [largest] + [f for f in faces if f is not largest]  # the enrolled face comes first
            _pipeline.embed(image, [largest])
        elif mode == "all":
            _pipeline.embed(image, faces)
        return ImageResult(path, faces, (image.shape[1], image.shape[0]), image=image if keep_image else None)
    except FacepipeError as exc:
        return ImageResult(path, error=str(exc))
    except MemoryError:
        return ImageResult(path, error=f"{path}: out of memory while processing this image")


def run_images(paths: list[Path], spec: ModelSpec, mode: str, workers: int = 1,
               keep_images: bool = False, pipeline=None) -> Iterator[ImageResult]:
    """mode: "detect" (faces only), "largest" (embed the largest face), "all" (embed every face).

    With one worker, `pipeline` (already built by the caller) is used in this process."""
    global _pipeline, _spec
    with_recognizer = mode != "detect"
    jobs = [(p, mode, keep_images) for p in paths]
    workers = max(1, min(workers, len(paths)))
    if workers == 1:
        if pipeline is None:
            _init_worker(spec, with_recognizer)
        else:
            _pipeline, _spec = pipeline, spec
        yield from map(_process, jobs)
        return
    # Split the threads between workers so two processes don't fight over the same cores.
    threads = spec.threads or max(1, (os.cpu_count() or 1) // workers)
    spec = ModelSpec(spec.detector, spec.recognizer, spec.device, threads, spec.detect_threshold)
    ctx = mp.get_context("spawn")  # fork would copy onnxruntime's thread pools in a broken state
    with ctx.Pool(workers, initializer=_init_worker, initargs=(spec, with_recognizer)) as pool:
        yield from pool.imap(_process, jobs, chunksize=1)
