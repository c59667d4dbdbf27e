"""Pick a backend from what the user named: nothing (embedded dlib models), a named model (`yunet`, `sface`:
fetched once into the cache), an .onnx file (facepipe's own, or a third-party layout told by its inputs and
outputs by the layout registry, runtime/layouts.py; `LAYOUT:FILE` forces one), or a checkpoint."""
from __future__ import annotations

import importlib
from pathlib import Path

from facepipe.errors import ModelError
from facepipe.runtime.base import Detector, Recognizer

TORCH_SUFFIXES = {".pt", ".pth", ".ckpt"}

# what -> (ONNX class, PyTorch checkpoint class), as "module:Class" so nothing heavy is imported up front
BACKENDS = {
    "detector": ("facepipe.runtime.detectors.onnx_detector:OnnxDetector",
                 "facepipe.detection.torch_detector:TorchDetector"),
    "recognizer": ("facepipe.runtime.recognizers.onnx_recognizer:OnnxRecognizer",
                   "facepipe.recognition.torch_recognizer:TorchRecognizer"),
}


def _class(ref: str):
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def _third_party(path: Path, what: str, layout_name: str, device: str, threads: int | None):
    """A third-party ONNX file of a registered layout (runtime/layouts.py); a copy of a named model keeps that
    model's name, layout and threshold; a description FILE.json may name it and set its threshold."""
    from facepipe.runtime import models
    from facepipe.runtime.hashing import file_sha256
    from facepipe.runtime.layouts import layout_named, model_description

    layout = layout_named(layout_name)
    if layout.kind != what:
        raise ModelError(f"{path}: a {layout.kind} ({layout.name} layout), not a {what}")
    named = models.by_sha256(file_sha256(path))
    if named is not None and named.kind == what:
        layout = layout_named(named.layout)  # e.g. SFace, which its graph alone does not reveal
    described = model_description(path)
    name = described.get("name") or (named.name if named else None)
    threshold = described.get("threshold", named.default_threshold if named else None)
    return layout.load(path, device=device, threads=threads, name=name,
                       threshold=None if threshold is None else float(threshold))


def _split_layout(spec: str) -> tuple[str | None, str]:
    """`sface:/path/file.onnx` -> ("sface", "/path/file.onnx"); anything else -> (None, spec)."""
    head, sep, rest = spec.partition(":")
    if not (sep and rest):
        return None, spec
    from facepipe.runtime.layouts import layouts

    return (head, rest) if head in layouts() else (None, spec)


def _resolve(spec: str | Path, what: str, device: str, threads: int | None):
    from facepipe.runtime import models

    layout, file = _split_layout(str(spec))
    path = Path(file)
    if layout is None and not path.exists() and str(spec) in models.REGISTRY:
        named = models.named_model(str(spec))
        if named.kind != what:
            raise ModelError(f"{named.name}: a named {named.kind}, not a {what}")
        return _third_party(models.fetch(named.name), what, named.layout, device, threads)
    if layout is not None:
        if not path.is_file():
            raise ModelError(f"{path}: {what} model file not found")
        return _third_party(path, what, layout, device, threads)
    if not path.exists() and not path.suffix and len(path.parts) == 1:
        raise ModelError(f"{spec}: no such {what} file or named model (named models: {', '.join(models.REGISTRY)})")
    return _load_file(path, what, device, threads)


def _load_onnx(path: Path, what: str, device: str, threads: int | None):
    from facepipe.runtime.layouts import recognise_onnx

    found = recognise_onnx(path)
    if found.layout is not None:
        return _third_party(path, what, found.layout.name, device, threads)
    if found.kind != what:
        raise ModelError(f"{path}: a facepipe {found.kind}, not a {what}")
    return _class(BACKENDS[what][0])(path, device=device, threads=threads)


def _load_file(path: Path, what: str, device: str, threads: int | None):
    if not path.exists():
        raise ModelError(f"{path}: {what} model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: {what} model path is not a file")
    torch_ref = BACKENDS[what][1]
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _load_onnx(path, what, device, threads)
    if suffix in TORCH_SUFFIXES:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ModelError(f"{path}: PyTorch checkpoints need torch (pip install 'facepipe[train]'), "
                             "or export it to ONNX with `facepipe export`") from None
        return _class(torch_ref)(path, device=device)
    raise ModelError(f"{path}: unknown {what} format (expected .onnx, .pt or .pth)")


# facepipe's own models, shipped in the package (models/ in the repository, facepipe.released when installed)
RELEASED = {"facepipe": ("detector", "facepipe_detector.onnx"),
            "facepipe-mbf": ("recognizer", "facepipe_recognizer.onnx")}


def released_file(name: str) -> Path:
    """The path of a released model inside the installed package."""
    from importlib.resources import files

    what, filename = RELEASED[name]
    try:
        path = Path(str(files("facepipe.released") / filename))
    except ModuleNotFoundError:  # run from a source tree that is not installed
        path = Path(__file__).resolve().parents[2] / "models" / filename
    if not path.is_file():
        raise ModelError(f"{name}: the released {what} {filename} is missing from this installation of facepipe")
    return path


def load_detector(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Detector:
    if spec is not None and str(spec) in RELEASED:
        return _load_file(released_file(str(spec)), "detector", device, threads)
    if spec is None or str(spec) == "dlib":
        from facepipe.runtime.detectors.dlib_detector import DlibDetector

        return DlibDetector()
    return _resolve(spec, "detector", device, threads)


def load_recognizer(spec: str | Path | None = None, device: str = "cpu", threads: int | None = None) -> Recognizer:
    if spec is not None and str(spec) in RELEASED:
        return _load_file(released_file(str(spec)), "recognizer", device, threads)
    if spec is None or str(spec) == "dlib":
        from facepipe.runtime.recognizers.dlib_resnet import ensure_dlib_resnet_onnx
        from facepipe.runtime.recognizers.onnx_recognizer import OnnxRecognizer

        return OnnxRecognizer(ensure_dlib_resnet_onnx(), device=device, threads=threads)
    return _resolve(spec, "recognizer", device, threads)
