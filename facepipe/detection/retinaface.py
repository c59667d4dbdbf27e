"""RetinaFace with a MobileNet-0.25 body (the MIT-licensed `mobilenet0.25_Final.pth`), written from its state-dict keys.

A teacher for pseudo-labels, and the body a student may start from. The keys describe the network:
`body.stage1..3` (MobileNetV1 x0.25, plain ReLU, strides 8 / 16 / 32, 64 / 128 / 256 channels), `fpn.output1..3` +
`merge1..2` (64 channels), `ssh1..3` (SSH context modules) and per level `ClassHead` / `BboxHead` / `LandmarkHead`
with 2 anchors per cell (min sizes 10, 20 / 32, 64 / 128, 256: the training repository's cfg_mnet; variances 0.1,
0.2). Input: BGR pixels minus (104, 117, 123), any size. Landmarks come in facepipe's standard order (image-left
eye first).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facepipe.runtime.boxes import nms
from facepipe.runtime.preprocess import shrink_to
from facepipe.types import Detection

MIN_SIZES = ((10, 20), (32, 64), (128, 256))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
BGR_MEAN = (104.0, 117.0, 123.0)


def conv_bn(cin: int, cout: int, stride: int = 1, kernel: int = 3, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv_dw(cin: int, cout: int, stride: int) -> nn.Sequential:
    """Depthwise 3x3 then pointwise 1x1 (indices 0, 1 / 3, 4 as in the state dict)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class MobileNetV1x025(nn.Module):
    """MobileNetV1 at width 0.25; forward returns the stride-4, 8, 16 and 32 maps (32, 64, 128, 256 channels)."""

    out_channels = (32, 64, 128, 256)

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 8, 2), conv_dw(8, 16, 1), conv_dw(16, 32, 2), conv_dw(32, 32, 1),
                                    conv_dw(32, 64, 2), conv_dw(64, 64, 1))
        self.stage2 = nn.Sequential(conv_dw(64, 128, 2), *[conv_dw(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(conv_dw(128, 256, 2), conv_dw(256, 256, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s4 = self.stage1[:4](x)
        s8 = self.stage1[4:](s4)
        s16 = self.stage2(s8)
        return [s4, s8, s16, self.stage3(s16)]


class SSH(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv3X3 = conv_bn(cin, cout // 2, relu=False)
        self.conv5X5_1 = conv_bn(cin, cout // 4)
        self.conv5X5_2 = conv_bn(cout // 4, cout // 4, relu=False)
        self.conv7X7_2 = conv_bn(cout // 4, cout // 4)
        self.conv7x7_3 = conv_bn(cout // 4, cout // 4, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c5_1 = self.conv5X5_1(x)
        c7 = self.conv7x7_3(self.conv7X7_2(c5_1))
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(c5_1), c7], 1))


class FPN(nn.Module):
    def __init__(self, in_channels=(64, 128, 256), channels: int = 64):
        super().__init__()
        self.output1, self.output2, self.output3 = (conv_bn(c, channels, kernel=1) for c in in_channels)
        self.merge1 = conv_bn(channels, channels)
        self.merge2 = conv_bn(channels, channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        o1, o2, o3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        o2 = self.merge2(o2 + F.interpolate(o3, size=o2.shape[2:], mode="nearest"))
        o1 = self.merge1(o1 + F.interpolate(o2, size=o1.shape[2:], mode="nearest"))
        return [o1, o2, o3]


class _Head(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x)


class RetinaFace(nn.Module):
    """forward(x) -> (loc N x A x 4, conf N x A x 2 softmaxed, landmarks N x A x 10), anchors level by level."""

    def __init__(self, anchors: int = 2, channels: int = 64):
        super().__init__()
        self.body = MobileNetV1x025()
        self.fpn = FPN(self.body.out_channels[1:], channels)
        self.ssh1, self.ssh2, self.ssh3 = (SSH(channels, channels) for _ in range(3))
        self.ClassHead = nn.ModuleList(_Head(channels, anchors * 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(channels, anchors * 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(channels, anchors * 10) for _ in range(3))

    def forward(self, x: torch.Tensor):
        levels = self.fpn(self.body(x)[1:])
        levels = [self.ssh1(levels[0]), self.ssh2(levels[1]), self.ssh3(levels[2])]

        def flat(heads, width):
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(x.shape[0], -1, width) for h, f in zip(heads, levels)],
                             1)
        return flat(self.BboxHead, 4), F.softmax(flat(self.ClassHead, 2), -1), flat(self.LandmarkHead, 10)


def load_retinaface(path: str | Path) -> RetinaFace:
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace()
    model.load_state_dict(state)
    return model.eval()


def priors(height: int, width: int) -> np.ndarray:
    """Anchors (cx, cy, w, h), normalised to the input, in the heads' order."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        rows, cols = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
        centre = np.stack([(xs + 0.5) * step / width, (ys + 0.5) * step / height], -1).reshape(-1, 1, 2)
        size = np.array([[s / width, s / height] for s in sizes])[None]
        out.append(np.concatenate([np.broadcast_to(centre, (len(centre), len(sizes), 2)),
                                   np.broadcast_to(size, (len(centre), len(sizes), 2))], -1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


class RetinaFaceDetector:
    """detect(image RGB uint8, threshold) -> Detections, on the whole image (shrunk to max_side)."""

    name = "retinaface-mnet025"
    default_threshold = 0.5
    nms_iou = 0.4

    def __init__(self, path: str | Path, max_side: int = 1280, threads: int | None = None):
        self.model = load_retinaface(path)
        self.max_side = max_side
        if threads:
            torch.set_num_threads(threads)

    @torch.no_grad()
    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        threshold = self.default_threshold if threshold is None else float(threshold)
        h, w = image.shape[:2]
        small, s = shrink_to(image, self.max_side)
        x = small[..., ::-1].astype(np.float32) - np.array(BGR_MEAN, np.float32)
        loc, conf, lms = self.model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])
        sh, sw = small.shape[:2]
        anchors = priors(sh, sw)
        scores = conf[0, :, 1].numpy()
        keep = np.nonzero(scores >= threshold)[0]
        a, loc, lms = anchors[keep], loc[0].numpy()[keep], lms[0].numpy()[keep].reshape(-1, 5, 2)
        centre = a[:, :2] + loc[:, :2] * VARIANCES[0] * a[:, 2:]
        size = a[:, 2:] * np.exp(loc[:, 2:] * VARIANCES[1])
        scale = np.array([sw, sh], np.float32) / s
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) * np.tile(scale, 2)
        points = (a[:, None, :2] + lms * VARIANCES[0] * a[:, None, 2:]) * scale
        order = nms(boxes.astype(np.float32), scores[keep], self.nms_iou)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return [Detection(boxes[i].astype(np.float32), float(scores[keep][i]), points[i].astype(np.float32))
                for i in order if boxes[i, 2] > boxes[i, 0] and boxes[i, 3] > boxes[i, 1]]
