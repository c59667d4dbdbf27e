"""Is this detection still the track's person? A cheap look every round; the recognizer decides when in doubt.

Position cannot tell one face from the next at the same place: an edited video's cut, one person leaving a
doorway as another steps in, two people crossing. So every detection round each face gets a *signature*
(the face warped by its landmarks onto a small grey chip, normalised: two signatures' dot product is their
normalised cross-correlation, which camera motion, roll and zoom barely move), and a pair (track, detection)
is *in doubt* when:

* the track missed a round or more (a face that comes back may be someone else),
* the pair is ambiguous (the detection could continue two tracks, or the track could take two detections:
  faces crossing),
* the signature changed at once (another face where this one was), or
* the track's last embedding disagreed with its own (`suspect`).

Pairs in doubt are settled by the recognizer: the detection is embedded and compared with the mean of the
track's embeddings under the model's metric and its same-person threshold (the one `verify` uses). A pair
that is two people is forbidden to the tracker, so a track never spans two people.
"""
from __future__ import annotations

import cv2
import numpy as np

from facepipe.openset.matching import pairwise_similarity
from facepipe.runtime.align import similarity_transform
from facepipe.types import Detection

SIGNATURE_SIZE = 24  # pixels per side of the grey chip
# Below this correlation with the track's last signature, a face "changed at once" and is checked. Measured on
# the synthetic clips (tests/test_video_appearance.py): the same face a detection round later correlates at
# 0.85 or more (pan, zoom, 6 degrees of roll, a defocus blur); another person's face at 0.3 to 0.75.
SIGNATURE_SAME = 0.8

# Where the 5 landmarks go on the signature chip (fractions of its side): ArcFace's template, shrunk to 24 px.
_CHIP_POINTS = np.array([[0.34, 0.46], [0.66, 0.46], [0.50, 0.64], [0.37, 0.82], [0.63, 0.82]], dtype=np.float32)


def face_signature(frame: np.ndarray, face: Detection) -> np.ndarray:
    """The face as a normalised SIGNATURE_SIZE^2 vector of grey levels (zero mean, unit norm)."""
    size = SIGNATURE_SIZE
    matrix = None
    if face.landmarks is not None:
        matrix = similarity_transform(np.asarray(face.landmarks, np.float64), _CHIP_POINTS * size)
    if matrix is None or not np.all(np.isfinite(matrix)):  # no landmarks: the box, stretched onto the chip
        x1, y1, x2, y2 = (float(v) for v in face.box)
        sx, sy = size / max(1.0, x2 - x1), size / max(1.0, y2 - y1)
        matrix = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], dtype=np.float64)
    chip = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY).astype(np.float32).ravel()
    grey -= grey.mean()
    return grey / max(float(np.linalg.norm(grey)), 1e-6)


def signature_similarity(a: np.ndarray | None, b: np.ndarray) -> float:
    """Normalised cross-correlation of two signatures (1: identical); 1 when there is no earlier one."""
    return 1.0 if a is None else float(np.dot(a, b))


def pairs_in_doubt(candidates: np.ndarray, misses: np.ndarray, suspect: np.ndarray,
                   signature_change: np.ndarray, has_reference: np.ndarray) -> np.ndarray:
    """Tracks x detections: True where the pair must be checked by the recognizer.

    candidates: pairs motion could associate; misses / suspect / has_reference: per track;
    signature_change: per pair, True where the detection's signature differs from the track's last one."""
    candidates = np.asarray(candidates, dtype=bool)
    ambiguous = (candidates.sum(axis=1, keepdims=True) > 1) | (candidates.sum(axis=0, keepdims=True) > 1)
    per_track = (np.asarray(misses) > 0) | np.asarray(suspect, dtype=bool)
    doubt = ambiguous | per_track[:, None] | np.asarray(signature_change, dtype=bool)
    return candidates & doubt & np.asarray(has_reference, dtype=bool)[:, None]


def track_reference(embeddings: list[np.ndarray], metric: str) -> np.ndarray:
    """The track's own face: the mean of its embeddings (of unit vectors for cosine)."""
    stack = np.asarray(embeddings, dtype=np.float64)
    if metric == "cosine":
        stack = stack / np.maximum(np.linalg.norm(stack, axis=1, keepdims=True), 1e-12)
    return stack.mean(axis=0).astype(np.float32)


def same_person(embedding: np.ndarray, reference: np.ndarray, metric: str, threshold: float) -> bool:
    """The recognizer's verdict: similarity under its metric at or over its same-person threshold."""
    return bool(pairwise_similarity(embedding, reference, metric)[0, 0] >= threshold)
