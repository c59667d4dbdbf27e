"""What third-party anchor-free face detectors (YuNet, SCRFD) share: sizing the input, the session, the last step.

Sizing: a network with a dynamic input gets the photo itself, shrunk so its long side is at most
`max_side` and padded bottom/right with black to a multiple of 32 (as OpenCV's FaceDetectorYN does); a
network with a fixed input gets the photo letterboxed into it (shrunk or enlarged to fit, top-left, black
padding, as insightface does). Either way one (sx, sy) maps original pixels to network pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepipe.runtime.boxes import nms
from facepipe.runtime.onnx_session import open_session
from facepipe.runtime.preprocess import as_rgb_uint8, network_input, resize_and_pad
from facepipe.types import Detection

BLACK = [0.0, 0.0, 0.0]


@dataclass(frozen=True)
class InputRule:
    color: str  # channel order the network wants: "RGB" | "BGR"
    mean: list[float]
    std: list[float]
    fixed_size: tuple[int, int] | None  # (width, height) of a fixed input; None: dynamic
    max_side: int = 640
    multiple_of: int = 32


def letterbox(image: np.ndarray, width: int, height: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Fit the image inside width x height keeping its aspect, top-left, black padding."""
    h, w = image.shape[:2]
    s = min(width / w, height / h)
    nw, nh = max(1, min(width, int(round(w * s)))), max(1, min(height, int(round(h * s))))
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    canvas = np.zeros((height, width, 3), np.uint8)
    canvas[:nh, :nw] = resized
    return canvas, (nw / w, nh / h)


def prepare(image: np.ndarray, rule: InputRule) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB uint8 image -> 1 x 3 x H x W float32 network input and the (sx, sy) scale."""
    if rule.fixed_size:
        padded, scale = letterbox(image, *rule.fixed_size)
    else:
        padded, scale = resize_and_pad(image, rule.max_side, rule.multiple_of, BLACK)
    return network_input(padded, rule.color, rule.mean, rule.std), scale


def fixed_input_size(session) -> tuple[int, int] | None:
    """(width, height) when the session's image input has fixed spatial dimensions, else None."""
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int) and shape[2] > 0 and shape[3] > 0:
        return int(shape[3]), int(shape[2])
    return None


def with_dynamic_input(path: str | Path) -> bytes | None:
    """The model's bytes with its input's height and width (and every output's length) made symbolic, or None
    when they already are. For graphs whose reshapes use -1 (YuNet), this lets any size run, as OpenCV does."""
    import onnx

    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not (dims[2].HasField("dim_value") and dims[3].HasField("dim_value")):
        return None
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        for d in out_dims[:-1]:
            if d.HasField("dim_value") and d.dim_value > 1:
                d.dim_param = "anchors"
    del model.graph.value_info[:]  # stale shapes of the fixed size
    return model.SerializeToString()


def open_flexible(path: str | Path, device: str, threads: int | None, fits=None):
    """Open the model with a dynamic input when that works, else as it is: (session, meta, provider).

    fits(outputs by name, width, height) -> bool tells whether outputs at a probe size are what that size needs."""
    dynamic = with_dynamic_input(path)
    if dynamic is not None:
        try:
            opened = open_session(path, device, threads, model_bytes=dynamic)
            session = opened[0]
            width, height = 96, 64  # a size the file was not made for
            names = [o.name for o in session.get_outputs()]
            outputs = session.run(names, {session.get_inputs()[0].name: np.zeros((1, 3, height, width), np.float32)})
            if fits is None or fits(dict(zip(names, outputs)), width, height):
                return opened
        except Exception:  # noqa: BLE001 - a graph with hard-coded shapes: keep its fixed input
            pass
    return open_session(path, device, threads)


def finish(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, scale: tuple[float, float],
           image_size: tuple[int, int], nms_iou: float, top_k: int) -> list[Detection]:
    """Candidates in network pixels -> Detections in original pixels: NMS, rescale, clip boxes, best first."""
    keep = nms(boxes, scores, nms_iou)[:top_k]
    s = np.asarray(scale, np.float32)
    boxes = boxes[keep] / np.tile(s, 2)
    landmarks = landmarks[keep] / s
    width, height = image_size
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    return [Detection(box=b, score=float(sc), landmarks=lm.astype(np.float32))
            for b, sc, lm in zip(boxes, scores[keep], landmarks) if b[2] > b[0] and b[3] > b[1]]


class AnchorFreeDetector:
    """detect() for a third-party ONNX detector; subclasses set rule, names and implement decode()."""

    name: str
    fingerprint: str
    provider: str
    default_threshold: float
    rule: InputRule
    nms_iou: float = 0.4
    top_k: int = 750
    thread_safe = True  # ONNX Runtime sessions may run from several threads at once

    def decode(self, outputs: dict[str, np.ndarray], input_size: tuple[int, int], threshold: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Network outputs by name -> boxes K x 4, scores K, landmarks K x 5 x 2 in network pixels."""
        raise NotImplementedError

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        image = as_rgb_uint8(image)
        threshold = self.default_threshold if threshold is None else float(threshold)
        x, scale = prepare(image, self.rule)
        names = [o.name for o in self.session.get_outputs()]
        outputs = dict(zip(names, self.session.run(names, {self._input: x})))
        boxes, scores, landmarks = self.decode(outputs, (x.shape[3], x.shape[2]), threshold)
        h, w = image.shape[:2]
        return finish(boxes, scores, landmarks, scale, (w, h), self.nms_iou, self.top_k)
