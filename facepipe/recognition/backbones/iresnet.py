"""IResNet (ArcFace's improved ResNet, Deng et al. 2019 / arcface_torch): BN-conv-BN-PReLU-conv-BN blocks.

Stem conv 3x3/1 -> 4 stages (64, 128, 256, 512 channels), each starting with stride 2 -> BN -> dropout ->
flatten -> linear -> BatchNorm1d (scale fixed at 1) = the embedding.
"""
from __future__ import annotations

import torch
import torch.nn as nn

LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}


class IBasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            nn.Conv2d(cin, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
            nn.PReLU(cout),
            nn.Conv2d(cout, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout, eps=1e-5),
        )
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.body(x) + identity


class IResNet(nn.Module):
    def __init__(self, layers=(3, 4, 14, 3), embedding_size: int = 512, in_channels: int = 3,
                 input_size=(112, 112), dropout: float = 0.0, widths=(64, 128, 256, 512)):
        super().__init__()
        w, h = int(input_size[0]), int(input_size[1])
        if w % 16 or h % 16:
            raise ValueError(f"IResNet needs an input size that is a multiple of 16, got {w}x{h}")
        stages = [nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                nn.BatchNorm2d(widths[0], eps=1e-5), nn.PReLU(widths[0]))]
        cin = widths[0]
        for n, cout in zip(layers, widths):
            stages.append(nn.Sequential(IBasicBlock(cin, cout, 2), *[IBasicBlock(cout, cout) for _ in range(n - 1)]))
            cin = cout
        self.body = nn.Sequential(*stages)
        features = nn.BatchNorm1d(embedding_size, eps=1e-5)
        nn.init.constant_(features.weight, 1.0)
        features.weight.requires_grad = False
        self.neck = nn.Sequential(
            nn.BatchNorm2d(cin, eps=1e-5),
            nn.Dropout(dropout),
            nn.Flatten(),
            nn.Linear(cin * (w // 16) * (h // 16), embedding_size),
            features,
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # unit-variance activations: BN running statistics are right from step 1
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():  # zero-init the last BN of each residual branch: blocks start as identities
            if isinstance(m, IBasicBlock):
                nn.init.zeros_(m.body[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.body(x))


def _make(depth: int):
    def build(embedding_size: int = 512, in_channels: int = 3, input_size=(112, 112), dropout: float = 0.0) -> IResNet:
        return IResNet(LAYERS[depth], embedding_size, in_channels, input_size, dropout)

    build.__name__ = f"iresnet{depth}"
    build.__doc__ = f"IResNet-{depth}: blocks per stage {LAYERS[depth]}."
    return build


iresnet18, iresnet34, iresnet50, iresnet100 = (_make(d) for d in (18, 34, 50, 100))
