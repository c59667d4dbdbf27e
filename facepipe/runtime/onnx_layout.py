"""Tell what an ONNX file is from its metadata or, for third-party files, from its inputs and outputs."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from facepipe.errors import ModelError
from facepipe.runtime.detectors.scrfd import scrfd_heads
from facepipe.runtime.detectors.yunet import is_yunet
from facepipe.runtime.onnx_session import open_session
from facepipe.runtime.recognizers.arcface import is_112_recognizer, normalises_itself, sidecar

DETECTOR_LAYOUTS = ("yunet", "scrfd")
RECOGNIZER_LAYOUTS = ("arcface", "sface")
KIND = {"yunet": "detector", "scrfd": "detector", "arcface": "recognizer", "arcface-raw": "recognizer",
        "sface": "recognizer"}


@dataclass(frozen=True)
class Layout:
    kind: str  # "detector" | "recognizer"
    layout: str  # "facepipe" | "yunet" | "scrfd" | "arcface" | "arcface-raw" | "sface"


def _describe(items) -> str:
    parts = [f"{name}{list(shape)}" for name, shape in items[:6]]
    return ", ".join(parts) + (f" and {len(items) - 6} more" if len(items) > 6 else "")


def sniff(path: str | Path) -> Layout:
    """The layout of an ONNX file, or a ModelError naming what was found."""
    # As written, not optimised: looking at a file must not run its constant folding (a tiny graph can fold
    # into gigabytes), and only the inputs, outputs and metadata are read here.
    session, meta, _ = open_session(path, "cpu", 1, optimize=False)
    kind = meta.get("facepipe.kind")
    if kind in ("detector", "recognizer"):
        return Layout(str(kind), "facepipe")
    described = sidecar(path).get("layout")
    if described:
        if described not in KIND:
            raise ModelError(f"{path}: its description names layout {described!r} (known: {', '.join(KIND)})")
        return Layout(KIND[described], described)
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    outputs = [(o.name, o.shape) for o in session.get_outputs()]
    names = [n for n, _ in outputs]
    if is_yunet(names):
        return Layout("detector", "yunet")
    if scrfd_heads(outputs) is not None:
        return Layout("detector", "scrfd")
    if is_112_recognizer(inputs, outputs):
        return Layout("recognizer", "arcface-raw" if normalises_itself(path) else "arcface")
    raise ModelError(f"{path}: unknown ONNX layout (inputs {_describe(inputs)}; outputs {_describe(outputs)}); "
                     "facepipe reads its own exports, YuNet, SCRFD, ArcFace-family and SFace files (docs/models.md)")
