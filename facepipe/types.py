"""The small records that travel through the pipeline, and the one writer of their JSON (a face, a candidate, an
image's record): the CLI, the Python API, the HTTP service and the video tracks all write through it."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    """One face found by a detector, in original image pixels.

    landmarks: 5x2 float32 in the standard order (image-left eye, image-right eye, nose tip,
    image-left mouth corner, image-right mouth corner), or None when the detector gives none.
    """

    box: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float
    landmarks: np.ndarray | None = None
    landmarks68: np.ndarray | None = None  # 68x2 iBUG points when the detector fits them (dlib): dlib's own chip
    detector_pass: str | None = None  # which of the detector's passes found it, when it has several (dlib)

    @property
    def area(self) -> float:
        x1, y1, x2, y2 = self.box
        return float(max(0.0, x2 - x1) * max(0.0, y2 - y1))

    def _short_fields(self) -> list[str]:
        box = ", ".join(f"{float(v):.0f}" for v in self.box)
        return [f"box=({box})", f"score={float(self.score):.3f}"] + (
            [f"detector_pass={self.detector_pass!r}"] if self.detector_pass else [])

    def __repr__(self) -> str:
        """One line: the box and score, not the landmark arrays (print() of a record is for people)."""
        return f"{type(self).__name__}({', '.join(self._short_fields())})"


@dataclass
class Candidate:
    identity: str
    similarity: float  # higher = more alike, for every model
    distance: float | None = None  # for a distance metric (dlib): the distance the similarity maps from

    def to_json(self) -> dict:
        out = {"identity": self.identity, "similarity": round(float(self.similarity), 4)}
        if self.distance is not None:
            out["distance"] = round(float(self.distance), 4)
        return out


@dataclass(repr=False)  # Detection's short repr, with the identity
class Face(Detection):
    """A detection with its embedding and, after matching, its identity (None = unknown)."""

    embedding: np.ndarray | None = None
    identity: str | None = None
    similarity: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    distance: float | None = None  # set for a distance metric; the JSON then adds "distance"

    def _short_fields(self) -> list[str]:
        out = super()._short_fields()
        if self.similarity is not None:
            out += [f"identity={self.identity!r}", f"similarity={float(self.similarity):.3f}"]
        if self.candidates:
            out.append("candidates=[" + ", ".join(f"({c.identity!r}, {float(c.similarity):.3f})"
                                                 for c in self.candidates) + "]")
        if self.embedding is not None:
            out.append(f"embedding={len(self.embedding)}-d")
        return out

    def to_json(self, with_identity: bool = True) -> dict:
        out = {
            "box": [round(float(v), 2) for v in self.box],
            "score": round(float(self.score), 4),
            "landmarks": None if self.landmarks is None
            else [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
        }
        if self.detector_pass is not None:  # optional: clients may ignore it
            out["detector_pass"] = self.detector_pass
        if with_identity:
            out["identity"] = self.identity
            out["similarity"] = None if self.similarity is None else round(float(self.similarity), 4)
            if self.distance is not None:
                out["distance"] = round(float(self.distance), 4)
            out["candidates"] = [c.to_json() for c in self.candidates]
        return out


def image_record(image: str, faces: list[Face], with_identity: bool = True) -> dict:
    """One image's JSON object: `identify --json` / `detect --json` lines and the HTTP answers."""
    return {"image": image, "faces": [face.to_json(with_identity) for face in faces]}
