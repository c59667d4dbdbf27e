"""The layout registry: a model family declared once is recognised by the loader and listed by `models list`;
a detector of another layout is never taken for SCRFD."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from facepipe.errors import ModelError
from facepipe.runtime.layouts import ModelLayout, layouts, recognise_onnx, register_layout
from facepipe.runtime.loader import load_detector


def _graph_with_output(path, output: str) -> None:
    """A 1 x 3 x H x W -> (1,) graph whose only output is named `output`."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("ReduceMean", ["input"], [output], keepdims=0)
    graph = helper.make_graph([node], "toy", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


class _ToyDetector:
    def __init__(self, path, device="cpu", threads=None, name=None, threshold=None):
        self.path, self.name, self.default_threshold = path, name or "toy", 0.25 if threshold is None else threshold

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list:
        return []


@pytest.fixture
def toy_layout():
    layout = register_layout(ModelLayout(
        name="toy", kind="detector", load=_ToyDetector, default_threshold=0.25, recognised_by="an output named toy",
        recognises=lambda graph: graph.output_names == ["toy_scores"]))
    yield layout
    layouts().pop("toy")


def test_a_declared_layout_is_recognised_loaded_and_listed(toy_layout, tmp_path):
    path = tmp_path / "mine.onnx"
    _graph_with_output(path, "toy_scores")
    assert recognise_onnx(path).layout is toy_layout
    detector = load_detector(path)  # by its outputs
    assert isinstance(detector, _ToyDetector) and detector.default_threshold == 0.25
    forced = load_detector(f"toy:{path}")  # LAYOUT:FILE
    assert isinstance(forced, _ToyDetector)

    from facepipe.cli import app

    listed = CliRunner().invoke(app, ["models", "list"])
    assert listed.exit_code == 0
    for name in ("yunet", "scrfd", "arcface", "arcface-raw", "sface", "toy"):
        assert name in listed.output


def test_an_unknown_detector_is_refused_not_taken_for_scrfd(tmp_path):
    path = tmp_path / "other.onnx"
    _graph_with_output(path, "heat")
    with pytest.raises(ModelError, match="unknown ONNX layout"):
        load_detector(path)
    with pytest.raises(ModelError, match="a recognizer \\(sface layout\\), not a detector"):
        load_detector(f"sface:{path}")
