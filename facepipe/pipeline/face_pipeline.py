"""FacePipeline: image -> faces (box, score, 5 landmarks) -> aligned chips -> embeddings."""
from __future__ import annotations

import numpy as np

from facepipe.runtime.align import align_face, dlib_face_chip, dlib_face_chip_5, is_dlib_template
from facepipe.runtime.base import Detector, Recognizer
from facepipe.types import Detection, Face

# Where the 5 standard landmarks sit, on average, inside a face box (fractions of width/height);
# used only for detectors that give no landmarks, so their faces can still be aligned roughly.
_MEAN_LANDMARKS_IN_BOX = np.array([[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.78], [0.65, 0.78]],
                                  dtype=np.float32)


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    return _MEAN_LANDMARKS_IN_BOX * np.array([x2 - x1, y2 - y1], dtype=np.float32) + np.array([x1, y1],
                                                                                              dtype=np.float32)


# dlib's ResNet behind a 5-point detector: its chip from dlib's 5-point predictor in the box (True) or from the
# detector's own 5 points (False); measured with benchmarks/open_set.py --detector (docs/detector.md).
DLIB_CHIP_FROM_BOX = True


class FacePipeline:
    """mirror: embed each chip and its mirror image and average them (measured on CelebA-dev: +1.5 points
    of enrolled people named at 1% strangers for dlib's ResNet, docs/open_set.md; twice the network time)."""

    def __init__(self, detector: Detector, recognizer: Recognizer | None = None, mirror: bool = True):
        self.detector = detector
        self.recognizer = recognizer
        self.mirror = mirror

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Face]:
        return [Face(box=d.box, score=d.score, landmarks=d.landmarks, landmarks68=d.landmarks68,
                     detector_pass=d.detector_pass) for d in self.detector.detect(image, threshold)]

    def chips(self, image: np.ndarray, faces: list[Detection]) -> np.ndarray:
        """Aligned chips for the recognizer. A recognizer that takes dlib chips gets dlib's own chip: from the
        detector's 68 points when it fitted them (dlib's HOG), else from dlib's 5-point predictor fitted in the
        box (DLIB_CHIP_FROM_BOX). Any other recognizer: the 5-point similarity onto its template."""
        template = self.recognizer.template
        dlib_chips = is_dlib_template(template)
        out = np.empty((len(faces), template.size[1], template.size[0], 3), dtype=np.uint8)
        for i, face in enumerate(faces):
            if dlib_chips and face.landmarks68 is not None:
                out[i] = dlib_face_chip(image, face.landmarks68, template.size[0])
                continue
            if dlib_chips and DLIB_CHIP_FROM_BOX:
                out[i] = dlib_face_chip_5(image, face.box, template.size[0])
                continue
            points = face.landmarks if face.landmarks is not None else landmarks_from_box(face.box)
            out[i] = align_face(image, points, template)
        return out

    def embed(self, image: np.ndarray, faces: list[Face]) -> list[Face]:
        """Fill each face's embedding (in place) and return the faces."""
        if faces:
            embeddings = self.embed_chips(self.chips(image, faces))
            for face, emb in zip(faces, embeddings):
                face.embedding = emb
        return faces

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Embeddings of aligned chips, averaged with their mirror images when `mirror` (then re-normalised
        for a cosine model; a distance model's raw vectors are averaged as they are)."""
        if not self.mirror or len(chips) == 0:
            return self.recognizer.embed(chips)
        both = self.recognizer.embed(np.concatenate([chips, chips[:, :, ::-1]]))
        mean = (both[:len(chips)] + both[len(chips):]) / 2
        if self.recognizer.metric == "cosine":
            mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return mean.astype(np.float32)

    def analyze(self, image: np.ndarray, threshold: float | None = None) -> list[Face]:
        """Detect every face and embed it."""
        return self.embed(image, self.detect(image, threshold))
