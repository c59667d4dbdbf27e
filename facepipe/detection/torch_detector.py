"""A facepipe detector checkpoint (.pt) run with PyTorch; same preprocessing and decode as OnnxDetector."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from facepipe.runtime.detectors.centernet import CenterNetDetector, DetectorSpec
from facepipe.runtime.device import torch_device
from facepipe.runtime.hashing import file_fingerprint


class TorchDetector(CenterNetDetector):
    def __init__(self, path: str | Path, device: str = "cpu"):
        from facepipe.detection.checkpoint import load_detector_checkpoint

        dev = torch_device(device, Path(path).name)
        model, ckpt = load_detector_checkpoint(path, dev)
        spec = DetectorSpec(**ckpt["spec"])
        self._setup(model, spec, dev, spec.name, file_fingerprint(path, spec.name))

    @classmethod
    def from_model(cls, model: nn.Module, spec: DetectorSpec, device: str | torch.device = "cpu",
                   name: str = "in-training") -> "TorchDetector":
        """Wrap a model in memory (used to evaluate during training)."""
        self = cls.__new__(cls)
        self._setup(model, spec, torch.device(device), name, f"{name}:unsaved")
        return self

    def _setup(self, model: nn.Module, spec: DetectorSpec, device: torch.device, name: str, fingerprint: str) -> None:
        from facepipe.detection.model import DetectorInference

        self.spec = spec
        self.name = name
        self.fingerprint = fingerprint
        self.device = device
        self.provider = f"PyTorch ({device.type.upper()})"
        self._net = DetectorInference(model).to(device).eval()

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            outs = self._net(torch.from_numpy(x).to(self.device))
        return [o.float().cpu().numpy() for o in outs]
