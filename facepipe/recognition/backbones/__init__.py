"""Backbone registry: a name maps to a constructor taking explicit arguments.

Every constructor accepts `embedding_size`, `in_channels` (3 = RGB, 1 = grayscale) and `input_size`
((width, height), multiples of 16) and returns an nn.Module mapping N x C x H x W to N x embedding_size
(not normalised; the head and the runtime normalise).
"""
from __future__ import annotations

from typing import Callable

import torch.nn as nn

from facepipe.recognition.backbones.iresnet import iresnet18, iresnet34, iresnet50, iresnet100
from facepipe.recognition.backbones.mobilefacenet import mbf, mbf_large, mobilefacenet

BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "mobilefacenet": mobilefacenet,  # the paper's network (~1.0M parameters at embedding 128)
    "mbf": mbf,  # arcface_torch's wider MobileFaceNet (scale 2)
    "mbf_large": mbf_large,
    "r18": iresnet18,
    "r34": iresnet34,
    "r50": iresnet50,
    "r100": iresnet100,
}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone; unknown names raise a ValueError listing the known ones."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
