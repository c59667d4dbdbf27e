"""The two interfaces every backend implements. The pipeline and the CLI see nothing else."""
from __future__ import annotations

from typing import Protocol

import numpy as np

from facepipe.runtime.align import Template
from facepipe.types import Detection


class Detector(Protocol):
    name: str
    fingerprint: str
    provider: str  # where it actually runs, e.g. "dlib (CPU)", "CUDAExecutionProvider"
    default_threshold: float
    thread_safe: bool  # may detect() run in several threads at once? (dlib's may not: the engine locks it)

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        """RGB uint8 image -> faces in original pixels, best first, with 5 standard landmarks."""


class Recognizer(Protocol):
    name: str
    fingerprint: str  # identifies the embedding space: galleries refuse other fingerprints
    provider: str
    template: Template  # where the 5 landmarks go in the chips it takes
    embedding_size: int
    threshold: float  # a verification threshold on the similarity (facepipe.openset.matching), from a calibration run
    metric: str  # how embeddings compare: "cosine" (ArcFace family) or "euclidean" (dlib's ResNet)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """N x H x W x 3 RGB uint8 aligned chips -> N x D float32 embeddings: L2-normalised for
        "cosine", the raw vectors the distance was trained on for "euclidean"."""
