"""One rule for `--device cpu|cuda|auto`, shared by ONNX Runtime sessions, PyTorch backends and trainers."""
from __future__ import annotations

from facepipe import log

DEVICES = ("cpu", "cuda", "auto")


def wants_cuda(device: str) -> bool:
    if device not in DEVICES:
        from facepipe.errors import ModelError

        raise ModelError(f"unknown device {device!r} (expected one of {', '.join(DEVICES)})")
    return device in ("cuda", "auto")


def torch_device(device: str, what: str = "the model"):
    """A torch.device for `device`; asking for cuda without a GPU warns loudly and runs on the CPU."""
    import torch

    if wants_cuda(device) and torch.cuda.is_available():
        return torch.device("cuda")
    if device == "cuda":
        log.warn(f"CUDA was requested for {what} but torch sees no GPU: running on the CPU")
    return torch.device("cpu")
