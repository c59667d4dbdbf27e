"""Per-face quality measures: size, sharpness, and head pose estimated from the 5 landmarks."""
from __future__ import annotations

import math

import cv2
import numpy as np

# Depth of the nose tip in front of the eyes, in units of half the eye distance; turns the nose's
# sideways shift into a yaw angle: shift / half_eye_distance = K * tan(yaw) for a simple head model.
_NOSE_DEPTH = 0.9


def face_size(box) -> float:
    """Shorter side of the face box, in original pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return max(0.0, min(x2 - x1, y2 - y1))


def sharpness(chip: np.ndarray) -> float:
    """Variance of the Laplacian of the gray chip: low for blurred faces (compare chips of one size)."""
    gray = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY) if chip.ndim == 3 else chip
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def pose_from_5(landmarks: np.ndarray) -> tuple[float, float]:
    """(yaw in degrees, pitch ratio) from eyes, nose tip and mouth corners.

    Yaw: the nose tip's sideways offset from the eyes' midpoint, measured along the eye line and
    divided by half the eye distance (0 frontal, about +-1 at 45 degrees, sign = towards image right).
    Pitch ratio: where the nose tip sits between the eye line (0) and the mouth line (1); about 0.5 for a
    level head, lower when the face looks up, higher when it looks down.
    """
    p = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    left_eye, right_eye, nose, mouth_l, mouth_r = p
    eye_mid = (left_eye + right_eye) / 2
    axis = right_eye - left_eye
    half = np.linalg.norm(axis) / 2
    if half < 1e-6:
        return 90.0, 0.5
    ux = axis / (2 * half)
    uy = np.array([-ux[1], ux[0]])  # down the face
    shift = float((nose - eye_mid) @ ux) / half
    yaw = math.degrees(math.atan2(shift, _NOSE_DEPTH))
    mouth_depth = float(((mouth_l + mouth_r) / 2 - eye_mid) @ uy)
    pitch = float((nose - eye_mid) @ uy) / mouth_depth if abs(mouth_depth) > 1e-6 else 0.5
    return yaw, pitch
