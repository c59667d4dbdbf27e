"""MTCNN (Zhang et al., 2016) with the MIT-licensed weights inside the `facenet-pytorch` wheel (`data/pnet.pt`,
`rnet.pt`, `onet.pt`), written from their state-dict keys. The wheel's own code is not imported: it needs
torchvision, which is not always importable where torch is.

A cascade of three small networks. P-Net scans 12 x 12 windows (stride 2) over an image pyramid (factor 0.709, the
smallest face `min_size`) and proposes boxes; R-Net (24 x 24 crops) and O-Net (48 x 48 crops) re-score and
regress them, and O-Net adds 5 landmarks (image-left eye first, facepipe's standard order). Input: RGB,
(x - 127.5) / 128. The dense layers were converted from a column-major framework, so their features are flattened
as (W, H, C).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facepipe.runtime.boxes import nms
from facepipe.runtime.preprocess import shrink_to
from facepipe.types import Detection

FACTOR = 0.709  # the paper's pyramid step


def weights_dir() -> Path:
    """The `data/` folder of the installed facenet-pytorch wheel (found without importing it)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("MTCNN's weights come in the facenet-pytorch wheel, which is not installed "
                                "(pip install --no-deps facenet-pytorch)")
    return Path(spec.origin).parent / "data"


def _conv(cin: int, cout: int, kernel: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, kernel), nn.PReLU(cout)


def _pool(x: torch.Tensor, kernel: int) -> torch.Tensor:
    return F.max_pool2d(x, kernel, 2, ceil_mode=True)


def _flatten(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 2, 1).reshape(len(x), -1)


class PNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 10, 3)
        self.conv2, self.prelu2 = _conv(10, 16, 3)
        self.conv3, self.prelu3 = _conv(16, 32, 3)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 2)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return F.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 28, 3)
        self.conv2, self.prelu2 = _conv(28, 48, 3)
        self.conv3, self.prelu3 = _conv(48, 64, 2)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 3)
        x = _pool(self.prelu2(self.conv2(x)), 3)
        x = self.prelu4(self.dense4(_flatten(self.prelu3(self.conv3(x)))))
        return F.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = _conv(3, 32, 3)
        self.conv2, self.prelu2 = _conv(32, 64, 3)
        self.conv3, self.prelu3 = _conv(64, 64, 3)
        self.conv4, self.prelu4 = _conv(64, 128, 2)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x):
        x = _pool(self.prelu1(self.conv1(x)), 3)
        x = _pool(self.prelu2(self.conv2(x)), 3)
        x = _pool(self.prelu3(self.conv3(x)), 2)
        x = self.prelu5(self.dense5(_flatten(self.prelu4(self.conv4(x)))))
        return F.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def _load(net: nn.Module, path: Path) -> nn.Module:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval()


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets (fractions of the box's width and height)."""
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    return boxes + offsets * np.stack([w, h, w, h], 1)


def square(boxes: np.ndarray) -> np.ndarray:
    """The square on each box's longer side, about its centre: what the next stage is trained on."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    x1, y1 = boxes[:, 0] + (w - side) / 2, boxes[:, 1] + (h - side) / 2
    return np.stack([x1, y1, x1 + side, y1 + side], 1)


def crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Each box cut from the image (zero outside it) and resized to size x size."""
    h, w = image.shape[:2]
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(np.floor(boxes).astype(np.int64)):
        sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        if sx2 <= sx1 or sy2 <= sy1:
            continue
        patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
        patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


def _tensor(images: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() - 127.5) / 128.0


class MtcnnDetector:
    """detect(image RGB uint8, threshold on O-Net's score) -> Detections with 5 landmarks."""

    name = "mtcnn"
    default_threshold = 0.7
    stage_thresholds = (0.6, 0.7)  # P-Net's and R-Net's: the paper's gates

    def __init__(self, weights: str | Path | None = None, min_size: int = 20, max_side: int = 1280,
                 threads: int | None = None):
        folder = Path(weights) if weights else weights_dir()
        self.pnet, self.rnet, self.onet = (_load(net, folder / f"{name}.pt")
                                           for net, name in ((PNet(), "pnet"), (RNet(), "rnet"), (ONet(), "onet")))
        self.min_size, self.max_side = min_size, max_side
        if threads:
            torch.set_num_threads(threads)

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid: square boxes."""
        h, w = image.shape[:2]
        scale = 12.0 / self.min_size
        found = []
        while min(h, w) * scale >= 12:
            small = cv2.resize(image, (int(np.ceil(w * scale)), int(np.ceil(h * scale))), interpolation=cv2.INTER_AREA)
            prob, offsets = (t[0].numpy() for t in self.pnet(_tensor(small[None])))
            ys, xs = np.nonzero(prob >= self.stage_thresholds[0])
            if len(ys):
                cells = np.stack([xs, ys], 1).astype(np.float32)
                boxes = np.concatenate([np.floor((2 * cells + 1) / scale), np.floor((2 * cells + 12) / scale)], 1)
                keep = nms(boxes, prob[ys, xs], 0.5)
                ys, xs, boxes = ys[keep], xs[keep], boxes[keep]
                found.append(np.concatenate([regress(boxes, offsets[:, ys, xs].T), prob[ys, xs, None]], 1))
            scale *= FACTOR
        if not found:
            return np.zeros((0, 4), np.float32)
        boxes = np.concatenate(found)
        return square(boxes[nms(boxes[:, :4], boxes[:, 4], 0.7), :4])

    def _score(self, net: nn.Module, image: np.ndarray, boxes: np.ndarray, size: int) -> list[np.ndarray]:
        outs = [net(_tensor(crops(image, boxes[i:i + 256], size))) for i in range(0, len(boxes), 256)]
        return [torch.cat(parts).numpy() for parts in zip(*outs)]

    @torch.no_grad()
    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        threshold = self.default_threshold if threshold is None else float(threshold)
        h, w = image.shape[:2]
        small, s = shrink_to(image, self.max_side)
        boxes = self._propose(small)
        if len(boxes):
            prob, offsets = self._score(self.rnet, small, boxes, 24)
            keep = prob >= self.stage_thresholds[1]
            boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
            keep = nms(boxes, prob, 0.7)
            boxes = square(regress(boxes[keep], offsets[keep]))
        if not len(boxes):
            return []
        prob, offsets, points = self._score(self.onet, small, boxes, 48)
        keep = prob >= threshold
        boxes, prob, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        size = (boxes[:, 2:] - boxes[:, :2] + 1)[:, None, :]
        landmarks = np.stack([points[:, :5], points[:, 5:]], 2) * size + boxes[:, None, :2] - 1
        boxes = regress(boxes, offsets)
        order = nms(boxes, prob, 0.7)
        boxes = np.clip(boxes / s, 0, [w, h, w, h]).astype(np.float32)
        landmarks = (landmarks / s).astype(np.float32)
        return [Detection(boxes[i], float(prob[i]), landmarks[i]) for i in order
                if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
