"""CenterFace-style detector: MobileNetV2 backbone, FPN neck to stride 4, four heads per output pixel.

Plain nn.Modules with explicit constructor arguments (no config parsing, no device logic). A small
registry maps names to constructors; checkpoints store the name and the arguments, so
`build_detector(name, **args)` rebuilds the same network.

Outputs (N = batch, H/W = input size / 4):
  hm  N x 1 x H x W   face-centre heatmap, *logits* (DetectorInference applies the sigmoid)
  wh  N x 2 x H x W   log(box width / stride), log(box height / stride)
  off N x 2 x H x W   sub-pixel offset of the centre inside its output cell, in cells
  lm  N x 10 x H x W  landmarks: (point - cell corner * stride) / box size, x0 y0 x1 y1 ... x4 y4
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

OUTPUTS = ("hm", "wh", "off", "lm")
HEAD_CHANNELS = {"hm": 1, "wh": 2, "off": 2, "lm": 10}
STRIDE = 4
HM_PRIOR_BIAS = -2.19  # sigmoid(-2.19) = 0.1: CenterNet's initialisation of the heatmap head


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channel counts as MobileNetV2 does (never more than 10% below the float value)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1, relu6: bool = True):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True) if relu6 else nn.ReLU(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_residual = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(cin, hidden, kernel=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (Sandler et al. 2018) without the classifier; returns features at strides 4, 8, 16, 32."""

    # expand ratio t, channels c, repeats n, first stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1,
                                                                                                            1))
    TAPS = (1, 2, 4, 6)  # indices into SETTINGS whose last block ends a stride-4/8/16/32 stage

    def __init__(self, width_mult: float = 1.0):
        super().__init__()
        cin = make_divisible(32 * width_mult)
        self.stem = ConvBNReLU(3, cin, stride=2)
        self.stages = nn.ModuleList()
        for t, c, n, s in self.SETTINGS:
            cout = make_divisible(c * width_mult)
            blocks = [InvertedResidual(cin if i == 0 else cout, cout, s if i == 0 else 1, t) for i in range(n)]
            self.stages.append(nn.Sequential(*blocks))
            cin = cout
        self.out_channels = [make_divisible(self.SETTINGS[i][1] * width_mult) for i in self.TAPS]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.TAPS:
                feats.append(x)
        return feats


class SeparableConv(nn.Sequential):
    """Depthwise 3x3 + pointwise 1x1, each with BN and ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__(ConvBNReLU(cin, cin, groups=cin, relu6=False), ConvBNReLU(cin, cout, kernel=1, relu6=False))


class FPNNeck(nn.Module):
    """Top-down feature pyramid from strides 32..4, returning one stride-4 map with `channels` channels."""

    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, kernel=1, relu6=False) for c in in_channels)
        self.smooth = nn.ModuleList(SeparableConv(channels, channels) for _ in in_channels[:-1])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            # inputs are padded to a multiple of 32, so every level is exactly twice the next one
            x = F.interpolate(x, scale_factor=2.0, mode="nearest") + self.lateral[i](feats[i])
            x = self.smooth[i](x)
        return x


class Head(nn.Sequential):
    """Separable 3x3 + 1x1 to `cout` channels. Only the last bias is set (the heatmap prior): its weights
    keep PyTorch's default init, because tiny weights there (std 0.001) starve the whole network of
    heatmap gradient and a from-scratch backbone then learns no face centres for hundreds of steps."""

    def __init__(self, cin: int, hidden: int, cout: int, bias: float = 0.0):
        super().__init__(SeparableConv(cin, hidden), nn.Conv2d(hidden, cout, 1))
        nn.init.constant_(self[-1].bias, bias)


class CenterFace(nn.Module):
    """MobileNetV2 + FPN + heads; forward returns (hm logits, wh, off, lm)."""

    stride = STRIDE

    def __init__(self, width_mult: float = 0.5, neck_channels: int = 32, head_channels: int = 32):
        super().__init__()
        self.backbone = MobileNetV2(width_mult)
        self.neck = FPNNeck(self.backbone.out_channels, neck_channels)
        self.heads = nn.ModuleDict({
            name: Head(neck_channels, head_channels, n, HM_PRIOR_BIAS if name == "hm" else 0.0)
            for name, n in HEAD_CHANNELS.items()
        })

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        y = self.neck(self.backbone(x))
        return tuple(self.heads[name](y) for name in OUTPUTS)  # type: ignore[return-value]


class DetectorInference(nn.Module):
    """What is exported and what TorchDetector runs: the heatmap as probabilities, regressions as-is."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        hm, wh, off, lm = self.model(x)
        return torch.sigmoid(hm), wh, off, lm


class CenterFaceMNet(CenterFace):
    """The same neck and heads on MobileNetV1 x0.25 (RetinaFace-MobileNet-0.25's body), so a run can start from
    that MIT-licensed detector's backbone (`init_weights`): its features already know faces, which a CPU budget
    cannot teach from scratch. width_mult is fixed at 0.25 (the pretrained body's)."""

    def __init__(self, width_mult: float = 0.25, neck_channels: int = 32, head_channels: int = 32):
        if width_mult != 0.25:
            from facepipe.train.config import ConfigError

            raise ConfigError(f"centerface_mnet025 has width_mult 0.25, got {width_mult}")
        nn.Module.__init__(self)
        from facepipe.detection.retinaface import MobileNetV1x025

        self.backbone = MobileNetV1x025()
        self.neck = FPNNeck(list(self.backbone.out_channels), neck_channels)
        self.heads = nn.ModuleDict({
            name: Head(neck_channels, head_channels, n, HM_PRIOR_BIAS if name == "hm" else 0.0)
            for name, n in HEAD_CHANNELS.items()
        })

    def load_backbone(self, path: str) -> int:
        """Copy RetinaFace's `body.*` weights into the backbone; returns how many tensors were copied."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        body = {k.removeprefix("module.").removeprefix("body."): v for k, v in state.items()
                if k.removeprefix("module.").startswith("body.")}
        self.backbone.load_state_dict(body)
        return len(body)


DETECTORS: dict[str, Callable[..., nn.Module]] = {
    "centerface_mbv2": CenterFace,
    "centerface_mnet025": CenterFaceMNet,
}


def build_detector(name: str, **kwargs) -> nn.Module:
    if name not in DETECTORS:
        from facepipe.errors import ModelError

        raise ModelError(f"unknown detector architecture {name!r} (known: {', '.join(sorted(DETECTORS))})")
    return DETECTORS[name](**kwargs)
