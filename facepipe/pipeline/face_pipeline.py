"""FacePipeline: image -> faces (box, score, 5 landmarks) -> aligned chips -> embeddings."""
from __future__ import annotations

import numpy as np

from facepipe.runtime.align import align_face, dlib_face_chip, is_dlib_template
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
        """Aligned chips for the recognizer: dlib's own chip when the recognizer takes dlib chips and the
        detector fitted 68 points, else the 5-point similarity onto the recognizer's template."""
        template = self.recognizer.template
        dlib_chips = is_dlib_template(template)
        out = np.empty((len(faces), template.size[1], template.size[0], 3), dtype=np.uint8)
        for i, face in enumerate(faces):
            if dlib_chips and face.landmarks68 is not None:
                out[i] = dlib_face_chip(image, face.landmarks68, template.size[0])
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
