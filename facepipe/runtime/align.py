"""Face alignment: a 5-point similarity transform onto a recognizer's template.

Every detector reports 5 landmarks in the standard order (image-left eye, image-right eye, nose tip,
image-left mouth corner, image-right mouth corner); every recognizer declares the template its chips
were made with. Alignment is the least-squares similarity transform (Umeyama 1991) between the two.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

# insightface's ArcFace template for 112x112 chips (the de-facto standard for ArcFace-family models).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

# dlib's mean face (points 17..67 of the 68-point model, unit square), from dlib's get_face_chip_details.
_DLIB_MEAN_X = [
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
    0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
    0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
    0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
    0.42689,
]
_DLIB_MEAN_Y = [
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
    0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
    0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
    0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
    0.831803, 0.824182,
]


def reduce_68_to_5(points68: np.ndarray) -> np.ndarray:
    """68-point (iBUG) landmarks -> the standard 5: eye centres, nose tip, mouth corners."""
    p = np.asarray(points68, dtype=np.float32).reshape(68, 2)
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def dlib_template(size: int = 150, padding: float = 0.25) -> np.ndarray:
    """Where dlib's chips (get_face_chip, size 150, padding 0.25) put the standard 5 points."""
    mean = np.zeros((68, 2), dtype=np.float64)
    mean[17:, 0] = _DLIB_MEAN_X
    mean[17:, 1] = _DLIB_MEAN_Y
    five = reduce_68_to_5(mean).astype(np.float64)
    return ((five + padding) / (1 + 2 * padding) * size).astype(np.float32)


@dataclass(frozen=True)
class Template:
    """The landmark positions a recognizer's chips are made with."""

    points: np.ndarray  # 5x2, chip pixels
    size: tuple[int, int]  # (width, height)

    def scaled_to(self, width: int, height: int) -> "Template":
        sx, sy = width / self.size[0], height / self.size[1]
        return Template(self.points * np.array([sx, sy], dtype=np.float32), (width, height))


ARCFACE_TEMPLATE = Template(ARCFACE_112, (112, 112))
DLIB_TEMPLATE = Template(dlib_template(), (150, 150))


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst: 2x3."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / n
    cov = d0.T @ s0 / n
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # keep a rotation, never a reflection
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


def is_dlib_template(template: Template) -> bool:
    """Does this recognizer take dlib's chips (dlib's ResNet, or a model trained on them)?"""
    return template.size == DLIB_TEMPLATE.size and bool(np.allclose(template.points, DLIB_TEMPLATE.points, atol=0.5))


def dlib_face_chip(image: np.ndarray, points68: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's own chip from 68 points: get_face_chip_details (a similarity fit of the 51 inner points
    onto dlib's mean face) + extract_image_chip (bilinear, through an image pyramid when it shrinks),
    i.e. exactly what dlib's compute_face_descriptor(image, shape) feeds its ResNet. A 5-point fit
    gives a slightly different chip, and the ResNet notices (issue 8)."""
    import dlib

    pts = np.asarray(points68).reshape(68, 2)
    parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in pts])
    x1, y1 = pts.min(0)
    x2, y2 = pts.max(0)
    shape = dlib.full_object_detection(dlib.rectangle(int(x1), int(y1), int(x2), int(y2)), parts)
    return dlib.get_face_chip(np.ascontiguousarray(image), shape, size=size, padding=padding)


@functools.lru_cache(maxsize=1)
def _dlib_five_point_predictor():
    import dlib

    from facepipe.runtime.dlib_files import LANDMARKS_5, dlib_model_path

    return dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))


def dlib_face_chip_5(image: np.ndarray, box: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """dlib's chip from its CC0 5-point predictor (shape_predictor_5_face_landmarks.dat, 9 MB, ~1 ms) fitted in a
    detector's box: dlib's own get_face_chip on those points, without the 100 MB 68-point model."""
    import dlib

    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    image = np.ascontiguousarray(image)
    shape = _dlib_five_point_predictor()(image, dlib.rectangle(x1, y1, x2, y2))
    return dlib.get_face_chip(image, shape, size=size, padding=padding)


def align_face(image: np.ndarray, landmarks: np.ndarray, template: Template) -> np.ndarray:
    """Warp the face with these 5 landmarks onto the template: an HxWx3 uint8 chip."""
    matrix = similarity_transform(landmarks, template.points)
    return cv2.warpAffine(image, matrix, template.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
