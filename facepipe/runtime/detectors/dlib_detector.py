"""dlib's HOG face detector + 68-point landmarks, reduced to the standard 5 points.

Speed: the HOG detector's cost grows with pixels, so it runs on a copy whose long side is at most
`detect_size` (faces in such photos are large), without dlib's 2x upsampling (4x the cost) unless
nothing was found (the second chance) or the image is small and not a portrait (crowds: small faces);
see `_may_hide_small_faces`; benchmarks/widerface_ap.py measures it against HOG upsampled once.
Landmarks are fitted on the original image, so alignment and embedding lose no resolution.
"""
from __future__ import annotations

import copy

import cv2
import numpy as np

from facepipe.runtime.align import reduce_68_to_5
from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path
from facepipe.types import Detection

SMALL_IMAGE = 800  # long side (after the detect_size copy) up to which a photo may hold faces HOG needs upsampling for
PORTRAIT_FACE = 0.25  # a confident face this tall (fraction of the short side): a portrait, no small faces to look for


def _may_hide_small_faces(shape: tuple[int, ...], rects, scores) -> bool:
    """After a pass without upsampling: is a second pass with one upsampling worth its 4x cost?
    Yes when nothing was found (the second chance), and on small images (a crowd in 416 px) unless a
    confident large face says it is a portrait (CelebA-like photos stay fast). Large photos: no, their
    faces are big enough at detect_size."""
    if len(rects) == 0:
        return True
    if max(shape[:2]) > SMALL_IMAGE:
        return False
    confident = [r.bottom() - r.top() for r, s in zip(rects, scores) if s >= 0.0]
    return not confident or max(confident) < PORTRAIT_FACE * min(shape[:2])


class Landmarks68:
    """dlib's 68-point shape predictor for a face box (any detector's; it was trained on HOG's boxes)."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        """RGB uint8 image, box x1, y1, x2, y2 (original pixels) -> 68 x 2 float32 points."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


class DlibDetector:
    name = "dlib_hog"
    fingerprint = "dlib_hog+shape_predictor_68"
    provider = "dlib (CPU)"
    default_threshold = 0.0  # HOG SVM score; dlib's own detector threshold

    def __init__(self, detect_size: int = 1024, upsample: int | None = None):
        import dlib

        self._hog = dlib.get_frontal_face_detector()
        self._landmarks = Landmarks68()
        self.detect_size = detect_size
        self.upsample = upsample  # None: the policy above; 0 or 1: always that

    def large_faces_only(self) -> "DlibDetector":
        """The same models without the upsampled passes (video frames: a face under ~80 px is too small to name,
        and an empty frame would cost 4x). Shares the loaded models with this one."""
        if self.upsample == 0:
            return self
        view = copy.copy(self)
        view.upsample = 0
        return view

    def _run_hog(self, image: np.ndarray, threshold: float) -> tuple[list, np.ndarray, float]:
        scale = min(1.0, self.detect_size / max(image.shape[:2]))
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        up = 0 if self.upsample is None else self.upsample
        rects, scores, _ = self._hog.run(small, up, threshold)
        if self.upsample is None and _may_hide_small_faces(small.shape, rects, scores):
            # One upsampling: HOG then also finds 40-80 px faces (it finds a superset of the first pass).
            rects, scores, _ = self._hog.run(small, 1, threshold)
        return list(rects), np.asarray(scores, dtype=np.float32), scale

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        threshold = self.default_threshold if threshold is None else threshold
        rects, scores, scale = self._run_hog(image, threshold)
        faces = []
        h, w = image.shape[:2]
        for rect, score in zip(rects, scores):
            x1, y1, x2, y2 = (rect.left() / scale, rect.top() / scale, (rect.right() + 1) / scale,
                              (rect.bottom() + 1) / scale)
            box = np.array([max(0, x1), max(0, y1), min(w, x2), min(h, y2)], dtype=np.float32)
            points = self._landmarks(image, (x1, y1, x2, y2))
            faces.append(Detection(box=box, score=float(score), landmarks=reduce_68_to_5(points), landmarks68=points))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces
