"""dlib's 68-point landmarks for a face box any detector found (the Detector protocol gives only 5 points).

The predictor was trained on boxes from dlib's HOG detector, so with the default detector its points are
the very ones the detector reduced to 5; with another detector's boxes they are rougher (prepare then
uses the 5-point mask estimate unless told otherwise).
"""
from __future__ import annotations

import numpy as np

from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path


class Landmarks68:
    def __init__(self):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        """RGB uint8 image, box x1, y1, x2, y2 (original pixels) -> 68 x 2 float32 points."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
