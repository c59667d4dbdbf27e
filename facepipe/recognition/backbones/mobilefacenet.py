"""MobileFaceNet (Chen et al. 2018, arXiv:1804.07573) and arcface_torch's wider "mbf" variants.

Layout (paper, 112x112 input): conv 3x3/2 -> depthwise 3x3 -> bottleneck stages (expansion, n) =
(2, 5) /2, (4, 1) /2, (2, 6), (4, 1) /2, (2, 2) -> conv 1x1 to 512 -> global depthwise conv (GDC, the
whole 7x7 map) -> linear -> BatchNorm = the embedding. `scale` widens every stage (mbf: 2).
"""
from __future__ import annotations

import torch
import torch.nn as nn


class ConvBlock(nn.Sequential):
    """conv -> BN -> PReLU (or no activation when linear=True)."""

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, padding=0, groups=1, linear=False):
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if not linear:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class Bottleneck(nn.Module):
    """Inverted residual: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 linear project; skip when shapes match."""

    def __init__(self, cin: int, cout: int, expanded: int, stride: int = 1):
        super().__init__()
        self.residual = stride == 1 and cin == cout
        self.body = nn.Sequential(
            ConvBlock(cin, expanded, 1),
            ConvBlock(expanded, expanded, 3, stride, 1, groups=expanded),
            ConvBlock(expanded, cout, 1, linear=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


class MobileFaceNet(nn.Module):
    """`blocks` = residual blocks after each of the 4 resolution levels, as arcface_torch counts them."""

    def __init__(self, embedding_size: int = 512, in_channels: int = 3, input_size=(112, 112),
                 blocks=(1, 4, 6, 2), scale: int = 1, neck_channels: int = 512):
        super().__init__()
        w, h = int(input_size[0]), int(input_size[1])
        if w % 16 or h % 16:
            raise ValueError(f"MobileFaceNet needs an input size that is a multiple of 16, got {w}x{h}")
        c64, c128 = 64 * scale, 128 * scale
        stem = [ConvBlock(in_channels, c64, 3, 2, 1)]
        if blocks[0] == 1:
            stem.append(ConvBlock(c64, c64, 3, 1, 1, groups=64))  # as arcface_torch: depthwise only at scale 1
        else:
            stem.extend(Bottleneck(c64, c64, 128) for _ in range(blocks[0]))
        # expansion widths follow the paper (t = 2 / 4 of the unscaled width), as arcface_torch does
        self.body = nn.Sequential(
            nn.Sequential(*stem),
            nn.Sequential(Bottleneck(c64, c64, 128, 2), *[Bottleneck(c64, c64, 128) for _ in range(blocks[1])]),
            nn.Sequential(Bottleneck(c64, c128, 256, 2), *[Bottleneck(c128, c128, 256) for _ in range(blocks[2])]),
            nn.Sequential(Bottleneck(c128, c128, 512, 2), *[Bottleneck(c128, c128, 256) for _ in range(blocks[3])]),
        )
        self.neck = nn.Sequential(
            ConvBlock(c128, neck_channels, 1),
            ConvBlock(neck_channels, neck_channels, (h // 16, w // 16), groups=neck_channels, linear=True),  # GDC
            nn.Flatten(),
            nn.Linear(neck_channels, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size),
        )
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))


def _init_weights(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            # activations ~ unit variance: BN running stats (init 1) are right from the start
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, m.in_features ** -0.5)


def mobilefacenet(embedding_size: int = 512, in_channels: int = 3, input_size=(112, 112)) -> MobileFaceNet:
    """The paper's network: 0.99M parameters with embedding 128, 1.19M with 512."""
    return MobileFaceNet(embedding_size, in_channels, input_size, blocks=(1, 4, 6, 2), scale=1)


def mbf(embedding_size: int = 512, in_channels: int = 3, input_size=(112, 112)) -> MobileFaceNet:
    """arcface_torch's "mbf": the paper layout at twice the width."""
    return MobileFaceNet(embedding_size, in_channels, input_size, blocks=(1, 4, 6, 2), scale=2)


def mbf_large(embedding_size: int = 512, in_channels: int = 3, input_size=(112, 112)) -> MobileFaceNet:
    """arcface_torch's "mbf_large": deeper (2, 8, 12, 4) and four times wider."""
    return MobileFaceNet(embedding_size, in_channels, input_size, blocks=(2, 8, 12, 4), scale=4)
