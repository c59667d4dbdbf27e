"""A facepipe recognizer straight from a training checkpoint (.pt), run by PyTorch.

Same contract as OnnxRecognizer: preprocessing, template and threshold come from the checkpoint, and the
fingerprint is that of the weights, so a gallery filled with the .pt also accepts its ONNX export.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.recognition.export import DEFAULT_THRESHOLD  # noqa: E402  (one default for .pt and ONNX)
from facepipe.runtime.align import Template
from facepipe.runtime.device import torch_device
from facepipe.runtime.preprocess import chips_to_input, l2_normalize


class TorchRecognizer:
    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 32):
        from facepipe.recognition.checkpoint import build_backbone_from, load_recognizer_checkpoint, weights_fingerprint

        self.device = torch_device(device, Path(path).name)
        state = load_recognizer_checkpoint(path, map_location="cpu")
        self.model = build_backbone_from(state, path).to(self.device)
        pre = state["preprocess"]
        self.color, self.mean, self.std = pre["color"], pre["mean"], pre["std"]
        width, height = (int(v) for v in pre["input_size"])
        self.template = Template(np.asarray(pre["template"], dtype=np.float32), (width, height))
        self.embedding_size = int(state["embedding_size"])
        self.name = str(state["backbone"])
        self.fingerprint = weights_fingerprint(self.name, state["model"])
        ver = state.get("verification") or {}
        self.threshold = float(ver["threshold"]) if ver.get("threshold") is not None else DEFAULT_THRESHOLD
        self.metric = "cosine"  # facepipe's trainers make L2-normalised embeddings compared by cosine
        self.provider = f"torch ({self.device.type.upper()})"
        self.batch_size = batch_size

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """N x H x W x 3 RGB uint8 chips aligned to self.template -> N x D L2-normalised float32."""
        import torch

        if len(chips) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        out = []
        with torch.no_grad():
            for i in range(0, len(chips), self.batch_size):
                x = chips_to_input(chips[i:i + self.batch_size], self.template.size, self.color, self.mean, self.std)
                out.append(self.model(torch.from_numpy(x).to(self.device)).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))
