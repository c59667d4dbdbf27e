"""Which threshold decides "unknown", and why: --threshold, the model's default, or the gallery's calibration."""
from __future__ import annotations

from dataclasses import dataclass

from facepipe.runtime.base import Recognizer
from facepipe.gallery import Gallery

TARGET_FPIR = 0.01  # aim: 1 stranger in 100 named (the promise is at most 2%)


@dataclass
class Threshold:
    value: float
    source: str  # a few words for people


def choose_threshold(recognizer: Recognizer, gallery: Gallery, override: float | None) -> Threshold:
    if override is not None:
        return Threshold(override, "--threshold")
    calibrated = gallery.open_set_threshold(TARGET_FPIR)
    if calibrated is not None and calibrated > recognizer.threshold:
        return Threshold(calibrated, f"gallery calibration ({TARGET_FPIR:.0%} strangers named)")
    return Threshold(recognizer.threshold, f"{recognizer.name} default")
