"""Detector checkpoints: what rebuilds the network (architecture name + arguments + preprocessing spec).

Saved and loaded through facepipe.train.checkpoint (atomic writes, weights_only=True loading).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from facepipe.detection.model import DETECTORS, build_detector
from facepipe.errors import ModelError
from facepipe.runtime.detectors.centernet import DetectorSpec
from facepipe.train.checkpoint import check_format, load_checkpoint

KIND = "detector"
FORMAT = 1


def detector_state(model: nn.Module, arch: str, arch_args: dict[str, Any], spec: DetectorSpec,
                   **extra) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds the model; training adds optimizer, epoch, RNG, config."""
    return {"kind": KIND, "format": FORMAT, "arch": arch, "arch_args": dict(arch_args), "spec": spec.to_dict(),
            "model": model.state_dict(), **extra}


def load_detector_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the detector a checkpoint was trained as; return (model in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(path, map_location="cpu")
    kind = ckpt.get("kind")
    if kind != KIND:
        what = f"a {kind} checkpoint" if kind else "a checkpoint without a facepipe 'kind'"
        arch = ckpt.get("arch") or ckpt.get("backbone") or ckpt.get("network")
        raise ModelError(f"{path}: {what}{f' (architecture {arch!r})' if arch else ''}, not a detector")
    check_format(ckpt, path, KIND, FORMAT)
    arch = ckpt.get("arch")
    if arch not in DETECTORS:
        raise ModelError(f"{path}: detector architecture {arch!r} is not one this facepipe knows "
                         f"(known: {', '.join(sorted(DETECTORS))})")
    try:
        model = build_detector(arch, **ckpt.get("arch_args", {}))
        model.load_state_dict(ckpt["model"])
    except (TypeError, RuntimeError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: weights do not fit architecture {arch!r} {ckpt.get('arch_args')} "
                         f"({first})") from None
    return model.to(device).eval(), ckpt
