"""Pick a backend from what the user named: nothing (embedded dlib models), an .onnx file, or a checkpoint."""
from __future__ import annotations

import importlib
from pathlib import Path

from facepipe.runtime.base import Detector, Recognizer
from facepipe.errors import ModelError

TORCH_SUFFIXES = {".pt", ".pth", ".ckpt"}

# what -> (ONNX class, PyTorch checkpoint class), as "module:Class" so nothing heavy is imported up front
BACKENDS = {
    "detector": ("facepipe.runtime.onnx_detector:OnnxDetector", "facepipe.detection.torch_detector:TorchDetector"),
    "recognizer": ("facepipe.runtime.onnx_recognizer:OnnxRecognizer", "facepipe.recognition.torch_recognizer:TorchRecognizer"),
}


def _class(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _load_file(path: Path, what: str, device: str, threads: int | None):
    if not path.exists():
        raise ModelError(f"{path}: {what} model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: {what} model path is not a file")
    onnx_ref, torch_ref = BACKENDS[what]
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _class(onnx_ref)(path, device=device, threads=threads)
    if suffix in TORCH_SUFFIXES:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelError(f"{path}: PyTorch checkpoints need torch (pip install 'facepipe[train]'), "
                             "or export it to ONNX with `facepipe export`") from None
        return _class(torch_ref)(path, device=device)
    raise ModelError(f"{path}: unknown {what} format (expected .onnx, .pt or .pth)")


def load_detector(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Detector:
    if spec is None or str(spec) == "dlib":
        from facepipe.runtime.dlib_detector import DlibDetector

        return DlibDetector()
    return _load_file(Path(spec), "detector", device, threads)


def load_recognizer(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Recognizer:
    if spec is None or str(spec) == "dlib":
        from facepipe.runtime.dlib_resnet import ensure_dlib_resnet_onnx
        from facepipe.runtime.onnx_recognizer import OnnxRecognizer

        return OnnxRecognizer(ensure_dlib_resnet_onnx(), device=device, threads=threads)
    return _load_file(Path(spec), "recognizer", device, threads)
