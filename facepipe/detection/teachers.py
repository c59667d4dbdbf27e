"""The permissive detectors facepipe's detector learns from, each behind one call: image (RGB uint8) -> Detections.

| name        | model (file in --models)                          | licence | landmarks | its own threshold |
|-------------|---------------------------------------------------|---------|-----------|-------------------|
| retinaface  | RetinaFace-MobileNet-0.25 (retinaface_mnet025.pth) | MIT     | 5         | 0.5               |
| yunet       | YuNet 2023mar (face_detection_yunet_2023mar.onnx)  | MIT     | 5         | 0.417 (measured)  |
| ultraface   | Ultra-Light RFB-640 (ultraface_rfb_640.onnx)       | MIT     | none      | 0.7               |
| dlib        | dlib HOG + 68 points (face_recognition_models)     | CC0     | 5 from 68 | 0.0 (SVM margin)  |
| mtcnn       | MTCNN (pnet/rnet/onet.pt in the facenet-pytorch wheel) | MIT | 5         | 0.3 (measured)    |

MTCNN's vote is its best-F1 score on widerface-dev's training split (faces >= 16 px): its O-Net scores are
precise down to the floor, so the vote sits low.

A teacher's `vote` threshold is where its detections count as a face in the fusion (facepipe.detection.fusion);
lower ones still pull the fused box but do not make a face on their own. Teachers run at the image's own size,
up to `max_side`; the fusion adds flips and upscaled copies (test-time augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.boxes import nms
from facepipe.types import Detection

Detect = Callable[[np.ndarray], list[Detection]]


@dataclass
class Teacher:
    name: str
    detect: Detect  # image -> every detection at or above `floor`
    vote: float  # a detection at or above this counts as a face
    floor: float  # the lowest score it reports (they still refine fused boxes)
    has_landmarks: bool
    fixed_input: bool = False  # its network input has one size: upscaled views would be shrunk back (no gain)


def _retinaface(models: Path, max_side: int) -> Teacher:
    from facepipe.detection.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector(models / "retinaface_mnet025.pth", max_side=max_side)
    return Teacher("retinaface", lambda image: det.detect(image, 0.2), vote=0.5, floor=0.2, has_landmarks=True)


def _yunet(models: Path, max_side: int) -> Teacher:
    from facepipe.runtime.detectors.yunet import YunetDetector

    det = YunetDetector(models / "face_detection_yunet_2023mar.onnx", threads=1, max_side=max_side)
    return Teacher("yunet", lambda image: det.detect(image, 0.2), vote=0.417, floor=0.2, has_landmarks=True)


class UltraFace:
    """Ultra-Light RFB-640: a fixed 640 x 480 RGB input, (x - 127) / 128; outputs softmaxed `scores` and corner
    boxes normalised to the input, over its priors. Larger images are cut into 640 x 480 tiles."""

    size = (640, 480)

    def __init__(self, path: Path, threads: int = 1):
        from facepipe.runtime.onnx_session import open_session

        self.session = open_session(path, "cpu", threads)[0]

    def detect(self, image: np.ndarray, threshold: float) -> list[Detection]:
        h, w = image.shape[:2]
        s = min(self.size[0] / w, self.size[1] / h)
        resized = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))),
                             interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        canvas = np.zeros((self.size[1], self.size[0], 3), np.uint8)
        canvas[:resized.shape[0], :resized.shape[1]] = resized
        x = ((canvas.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None]
        scores, boxes = self.session.run(["scores", "boxes"], {"input": x})
        scores, boxes = scores[0, :, 1], boxes[0]
        keep = np.nonzero(scores >= threshold)[0]
        boxes = boxes[keep] * np.array([*self.size, *self.size], np.float32) / s
        boxes = np.clip(boxes, 0, [w, h, w, h]).astype(np.float32)
        order = nms(boxes, scores[keep], 0.3)
        return [Detection(boxes[i], float(scores[keep][i])) for i in order if boxes[i, 2] > boxes[i, 0] + 1]


def _ultraface(models: Path, max_side: int) -> Teacher:
    det = UltraFace(models / "ultraface_rfb_640.onnx")
    return Teacher("ultraface", lambda image: det.detect(image, 0.3), vote=0.7, floor=0.3, has_landmarks=False,
                   fixed_input=True)


def _dlib(models: Path, max_side: int) -> Teacher:
    from facepipe.detection.pseudo_labels import box_from_68
    from facepipe.runtime.detectors.dlib_detector import DlibDetector

    det = DlibDetector(detect_size=max_side, upsample=1, second_chance=False)

    def detect(image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        out = []
        for face in det.detect(image, -0.3):
            box = np.clip(box_from_68(face.landmarks68), 0, [w, h, w, h]).astype(np.float32)
            out.append(Detection(box, float(face.score), face.landmarks))
        return out
    return Teacher("dlib", detect, vote=0.0, floor=-0.3, has_landmarks=True)


def _mtcnn(models: Path, max_side: int) -> Teacher:
    from facepipe.detection.mtcnn import MtcnnDetector

    det = MtcnnDetector(max_side=max_side)  # its weights come with the facenet-pytorch wheel, not from `models`
    return Teacher("mtcnn", lambda image: det.detect(image, 0.1), vote=0.3, floor=0.1, has_landmarks=True)


TEACHERS: dict[str, Callable[[Path, int], Teacher]] = {
    "retinaface": _retinaface, "yunet": _yunet, "ultraface": _ultraface, "dlib": _dlib, "mtcnn": _mtcnn,
}
DEFAULT_TEACHERS = ("retinaface", "yunet", "ultraface", "dlib")  # the released detector's (MODEL_CARD.md)


def load_teachers(names, models: str | Path, max_side: int = 1280) -> list[Teacher]:
    """The named teachers, their files from `models` (a folder); one line naming what is missing."""
    models = Path(models)
    out = []
    for name in names:
        if name not in TEACHERS:
            raise ModelError(f"unknown teacher {name!r} (known: {', '.join(TEACHERS)})")
        try:
            out.append(TEACHERS[name](models, max_side))
        except (FileNotFoundError, OSError) as exc:
            raise ModelError(f"teacher {name}: {exc}") from None
    return out
