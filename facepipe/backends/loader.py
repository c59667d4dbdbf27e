"""Pick a backend from what the user named: nothing (embedded dlib models), an .onnx file, or a checkpoint."""
from __future__ import annotations

from pathlib import Path

from facepipe.backends.base import Detector, Recognizer
from facepipe.errors import ModelError

TORCH_SUFFIXES = {".pt", ".pth", ".ckpt"}


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelError(f"{path}: {what} model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: {what} model path is not a file")


def _need_torch(path: Path) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelError(f"{path}: PyTorch checkpoints need torch (pip install 'facepipe[train]'), "
                         "or export it to ONNX with `facepipe export`") from None


def load_detector(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Detector:
    if spec is None or str(spec) == "dlib":
        from facepipe.backends.dlib_detector import DlibDetector

        return DlibDetector()
    path = Path(spec)
    _check_file(path, "detector")
    if path.suffix.lower() == ".onnx":
        from facepipe.backends.onnx_detector import OnnxDetector

        return OnnxDetector(path, device=device, threads=threads)
    if path.suffix.lower() in TORCH_SUFFIXES:
        _need_torch(path)
        from facepipe.backends.torch_detector import TorchDetector

        return TorchDetector(path, device=device)
    raise ModelError(f"{path}: unknown detector format (expected .onnx, .pt or .pth)")


def load_recognizer(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Recognizer:
    if spec is None or str(spec) == "dlib":
        from facepipe.backends.dlib_resnet import ensure_dlib_resnet_onnx
        from facepipe.backends.onnx_recognizer import OnnxRecognizer

        return OnnxRecognizer(ensure_dlib_resnet_onnx(), device=device, threads=threads)
    path = Path(spec)
    _check_file(path, "recognizer")
    if path.suffix.lower() == ".onnx":
        from facepipe.backends.onnx_recognizer import OnnxRecognizer

        return OnnxRecognizer(path, device=device, threads=threads)
    if path.suffix.lower() in TORCH_SUFFIXES:
        _need_torch(path)
        from facepipe.backends.torch_recognizer import TorchRecognizer

        return TorchRecognizer(path, device=device)
    raise ModelError(f"{path}: unknown recognizer format (expected .onnx, .pt or .pth)")
