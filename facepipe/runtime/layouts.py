"""The registry of third-party ONNX model layouts: one router that tells any ONNX file by its inputs and outputs.

Each model family declares itself next to its class (runtime/detectors/*.py, runtime/recognizers/*.py) with
`register_layout(ModelLayout(...))`: its name, kind, how its graph is recognised, how it is loaded, its default
threshold and (recognizers) metric and template. Adding a layout is one file in one of those two folders: the
registry imports every module there on first use, and the loader (runtime/loader.py) and `facepipe models list`
read it. facepipe's own exports need no entry: their metadata says what they are (runtime/onnx_meta.py).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Callable

from facepipe.errors import ModelError

FAMILY_PACKAGES = ("facepipe.runtime.detectors", "facepipe.runtime.recognizers")


@dataclass(frozen=True)
class OnnxGraph:
    """What a recogniser looks at: an ONNX file's inputs and outputs as (name, shape)."""

    path: Path
    inputs: list[tuple[str, list]]
    outputs: list[tuple[str, list]]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self.outputs]


@dataclass(frozen=True)
class ModelLayout:
    name: str  # what `LAYOUT:FILE` and a description's "layout" say, e.g. "yunet"
    kind: str  # "detector" | "recognizer"
    # (path, device=, threads=, name=, threshold=) -> the model; threshold None: the layout's default
    load: Callable[..., object]
    default_threshold: float  # detector: score; recognizer: similarity for "same person"
    recognised_by: str  # in words, for `facepipe models list` and docs
    recognises: Callable[[OnnxGraph], bool] | None = None  # None: told only by name, sha256 or description
    metric: str | None = None  # recognizers: how embeddings compare
    template: str | None = None  # recognizers: where the 5 landmarks go in the chip


_REGISTERED: dict[str, ModelLayout] = {}


def register_layout(layout: ModelLayout) -> ModelLayout:
    if layout.kind not in ("detector", "recognizer"):
        raise ValueError(f"layout {layout.name!r}: kind must be detector or recognizer, not {layout.kind!r}")
    _REGISTERED[layout.name] = layout
    return layout


class _Registry:
    @cached_property
    def layouts(self) -> dict[str, ModelLayout]:
        for package in FAMILY_PACKAGES:
            for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
                try:
                    importlib.import_module(f"{package}.{module.name}")
                except ModuleNotFoundError as exc:  # a family whose library is not installed registers nothing
                    if (exc.name or "").startswith("facepipe"):
                        raise
        return _REGISTERED


_registry = _Registry()


def layouts() -> dict[str, ModelLayout]:
    """Every registered layout by name, in the order the families registered them."""
    return _registry.layouts


def layout_named(name: str) -> ModelLayout:
    try:
        return layouts()[name]
    except KeyError:
        raise ModelError(f"unknown model layout {name!r} (known: {', '.join(layouts())})") from None


def model_description(path: str | Path) -> dict:
    """FILE.onnx.json or FILE.json next to the model, if present: {"layout", "threshold", "name"}."""
    path = Path(path)
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ModelError(f"{candidate}: unreadable model description ({exc})") from None
            if not isinstance(data, dict):
                raise ModelError(f"{candidate}: a model description must be a JSON object")
            return data
    return {}


@dataclass(frozen=True)
class OnnxKind:
    """What an ONNX file is: a facepipe export (layout None: its metadata describes it) or a registered layout."""

    kind: str
    layout: ModelLayout | None


def _describe(items) -> str:
    parts = [f"{name}{list(shape)}" for name, shape in items[:6]]
    return ", ".join(parts) + (f" and {len(items) - 6} more" if len(items) > 6 else "")


def recognise_onnx(path: str | Path) -> OnnxKind:
    """Tell an ONNX file by its metadata, its description, or its inputs and outputs; a ModelError names what
    was found when no layout fits."""
    from facepipe.runtime.onnx_session import open_session

    # As written, not optimised: looking at a file must not run its constant folding (a tiny graph can fold
    # into gigabytes), and only the inputs, outputs and metadata are read here.
    session, meta, _ = open_session(path, "cpu", 1, optimize=False)
    kind = meta.get("facepipe.kind")
    if kind in ("detector", "recognizer"):
        return OnnxKind(str(kind), None)
    described = model_description(path).get("layout")
    if described:
        if described not in layouts():
            raise ModelError(f"{path}: its description names layout {described!r} (known: {', '.join(layouts())})")
        return OnnxKind(layouts()[described].kind, layouts()[described])
    graph = OnnxGraph(Path(path), [(i.name, i.shape) for i in session.get_inputs()],
                      [(o.name, o.shape) for o in session.get_outputs()])
    for layout in layouts().values():
        if layout.recognises is not None and layout.recognises(graph):
            return OnnxKind(layout.kind, layout)
    raise ModelError(f"{path}: unknown ONNX layout (inputs {_describe(graph.inputs)}; outputs "
                     f"{_describe(graph.outputs)}); facepipe reads its own exports and the layouts "
                     f"{', '.join(layouts())} (docs/models.md)")
