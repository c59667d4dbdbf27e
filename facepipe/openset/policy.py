"""The open-set policy, in one place: which threshold names a face or a video track, which one calls two faces
one person, and why (`Threshold.source`, in words for people).

- identify (photos, HTTP, video tracks): a threshold the caller gives; else the gallery's calibration, the score
  at which about TARGET_FPIR of strangers would be named (facepipe.openset.calibration, cached in the gallery; below
  MIN_PERSONS persons, the highest of each known person's own bound: the enrolled persons and the clusters nobody
  has named), never below the recognizer's own default (what the model itself calls one person); else, with too
  few faces to say, the recognizer's default;
- verify, and the video's "is this still the track's person": the caller's threshold, else the recognizer's
  default (a pair of faces has no gallery to calibrate against);
- a video track's identity: each person's mean similarity over the track's embeddings; the best is named when
  it clears the identify threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepipe.openset.matching import candidate
from facepipe.types import Candidate

TARGET_FPIR = 0.01  # the aim: 1 stranger in 100 named (the promise is at most 2 %)
MIN_PERSONS = 10  # fewer persons than this and the calibration says little: the model's default applies


@dataclass
class Threshold:
    value: float
    source: str  # a few words for people


def given_by_caller(value: float) -> Threshold:
    return Threshold(float(value), "set by the caller")


def identify_threshold(recognizer, gallery, override: float | None = None) -> Threshold:
    """The caller's threshold when given, else the gallery's calibration (never below the recognizer's default),
    else the recognizer's default."""
    if override is not None:
        return given_by_caller(override)
    calibrated = gallery.open_set_threshold(TARGET_FPIR)
    default = model_default(recognizer)
    if calibrated is None:
        return default
    if calibrated < default.value:
        return Threshold(default.value, f"{default.source} (the gallery's calibration, {calibrated:.3f}, is laxer)")
    return Threshold(calibrated, f"gallery calibration ({TARGET_FPIR:.0%} strangers named)")


def verify_threshold(recognizer, override: float | None = None) -> Threshold:
    """Two faces are one person at or above this: the caller's threshold, else the recognizer's default."""
    return given_by_caller(override) if override is not None else model_default(recognizer)


def model_default(recognizer) -> Threshold:
    return Threshold(float(recognizer.threshold), f"{recognizer.name} default")


def track_identity(votes: list[dict[str, float]], threshold: float, top_k: int,
                   metric: str = "cosine") -> tuple[str | None, float | None, list[Candidate]]:
    """A video track's identity from its embeddings' votes (per embedding: person -> similarity).

    A person's score is their mean similarity over the votes (a vote that does not list them counts its lowest
    listed similarity, an upper bound); the best is named when it clears the threshold."""
    if not votes:
        return None, None, []
    names = {name for vote in votes for name in vote}
    scores = {name: float(np.mean([v.get(name, min(v.values())) for v in votes])) for name in names}
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    best, similarity = ranked[0]
    return (best if similarity >= threshold else None), similarity, [candidate(n, s, metric) for n, s in ranked[:top_k]]
