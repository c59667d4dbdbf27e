"""Third-party recognizers: stand-in graphs with insightface's ArcFace and OpenCV's SFace I/O layouts."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import pytest
from models_testing import yunet_file  # noqa: F401 - a fixture
from onnx import TensorProto, helper, numpy_helper

from facepipe.errors import ModelError
from facepipe.runtime import models
from facepipe.runtime.align import ARCFACE_TEMPLATE
from facepipe.runtime.loader import load_detector, load_recognizer
from facepipe.runtime.recognizers.arcface import ArcFaceRecognizer


def first_values(path, size: int, batch, normalise_in_graph: bool = False):
    """input N x 3 x 112 x 112 -> the first `size` values of the flattened input (i.e. of channel 0): the output
    shows exactly what the runtime fed in. With normalise_in_graph, the graph starts with Sub/Mul as some
    insightface exports do."""
    nodes, inits = [], [numpy_helper.from_array(np.array([0], np.int64), "start"),
                        numpy_helper.from_array(np.array([size], np.int64), "end"),
                        numpy_helper.from_array(np.array([1], np.int64), "axis")]
    x = "input.1"
    if normalise_in_graph:
        inits += [numpy_helper.from_array(np.float32(127.5), "mean"), numpy_helper.from_array(np.float32(1 / 127.5),
                                                                                              "scale")]
        nodes += [helper.make_node("Sub", [x, "mean"], ["centred"], name="_minusscalar0"),
                  helper.make_node("Mul", ["centred", "scale"], ["scaled"], name="_mulscalar0")]
        x = "scaled"
    nodes += [helper.make_node("Flatten", [x], ["flat"]),
              helper.make_node("Slice", ["flat", "start", "end", "axis"], ["683"])]
    graph = helper.make_graph(nodes, "stand_in", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch,
                                                                                                               3, 112,
                                                                                                               112])],
                              [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _chips(n=3):
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)
    chips[..., 1] = 255 - chips[..., 0]  # channels differ, so a swap would show
    chips[..., 2] = 7
    return chips


def _red_values(chips, size):
    return chips[..., 0].reshape(len(chips), -1)[:, :size].astype(np.float32)


@pytest.mark.parametrize("batch", ["N", 1])
def test_arcface_family_scaled_as_insightface(tmp_path, batch):
    path = first_values(tmp_path / "w600k_standin.onnx", 512, batch)
    rec = load_recognizer(path)
    assert isinstance(rec, ArcFaceRecognizer) and rec.layout == "arcface"
    assert rec.metric == "cosine" and rec.template is ARCFACE_TEMPLATE and rec.embedding_size == 512
    assert rec.fingerprint == "w600k_standin:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert 0 < rec.threshold < 1
    chips = _chips()
    np.testing.assert_allclose(rec.embed_raw(chips), (_red_values(chips, 512) - 127.5) / 127.5, atol=1e-6)
    emb = rec.embed(chips)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert rec.embed(chips[:0]).shape == (0, 512)


def test_graph_that_normalises_itself_gets_raw_pixels(tmp_path):
    rec = load_recognizer(first_values(tmp_path / "self_norm.onnx", 512, "N", normalise_in_graph=True))
    assert rec.layout == "arcface-raw"
    chips = _chips(2)
    np.testing.assert_allclose(rec.embed_raw(chips), (_red_values(chips, 512) - 127.5) / 127.5, atol=1e-5)


def test_sface_by_prefix_sidecar_or_sha256(tmp_path, monkeypatch):
    path = first_values(tmp_path / "sface_standin.onnx", 128, 1)
    chips = _chips(2)
    by_prefix = load_recognizer(f"sface:{path}")
    assert by_prefix.layout == "sface" and by_prefix.embedding_size == 128
    assert by_prefix.threshold == pytest.approx(0.363)
    np.testing.assert_allclose(by_prefix.embed_raw(chips), _red_values(chips, 128))  # 0..255, no mean or scale
    assert load_recognizer(path).layout == "arcface"  # the layout alone cannot tell
    (tmp_path / "sface_standin.onnx.json").write_text(json.dumps({"layout": "sface", "threshold": 0.4}))
    described = load_recognizer(path)
    assert described.layout == "sface" and described.threshold == pytest.approx(0.4)
    (tmp_path / "sface_standin.onnx.json").unlink()
    fake = models.NamedModel("sface", "recognizer", "sface", "x/sface_standin.onnx", path.stat().st_size,
                             hashlib.sha256(path.read_bytes()).hexdigest(), "Apache-2.0", 0.363, "test")
    monkeypatch.setitem(models.REGISTRY, "sface", fake)
    known = load_recognizer(path)  # a copy of the named file, anywhere on disk
    assert known.layout == "sface" and known.name == "sface"


def test_named_recognizer_offline_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.setenv("FACEPIPE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(models.URL_BASE_ENV, "http://127.0.0.1:9")
    with pytest.raises(ModelError, match=r"sface: cannot download .*facepipe models add sface FILE"):
        load_recognizer("sface")
    with pytest.raises(ModelError, match="sface: a named recognizer, not a detector"):
        load_detector("sface")


def test_bad_sidecar_and_wrong_kind(tmp_path):
    path = first_values(tmp_path / "r.onnx", 512, "N")
    (tmp_path / "r.json").write_text(json.dumps({"layout": "mystery"}))
    with pytest.raises(ModelError, match="layout 'mystery'"):
        load_recognizer(path)
    (tmp_path / "r.json").unlink()
    with pytest.raises(ModelError, match=r"a recognizer \(arcface layout\), not a detector"):
        load_detector(path)


def test_yunet_and_arcface_standin_through_the_pipeline(yunet_file, data_dir, tmp_path):
    """The whole journey on a real photo: YuNet faces -> ArcFace-template chips -> 512-d unit vectors."""
    from facepipe.pipeline.face_pipeline import FacePipeline
    from facepipe.runtime.image import read_image

    pipeline = FacePipeline(load_detector(f"yunet:{yunet_file}"), load_recognizer(first_values(tmp_path / "a.onnx",
                                                                                               512, "N")))
    faces = pipeline.analyze(read_image(data_dir / "scenes" / "couple.jpg"))
    assert len(faces) == 2
    chips = pipeline.chips(read_image(data_dir / "scenes" / "couple.jpg"), faces)
    assert chips.shape == (2, 112, 112, 3)
    assert all(f.embedding.shape == (512,) and abs(np.linalg.norm(f.embedding) - 1) < 1e-5 for f in faces)


def test_a_mistyped_name_lists_the_named_models():
    with pytest.raises(ModelError, match=r"yunett: no such detector file or named model \(named models: yunet, "
                                         r"sface\)"):
        load_detector("yunett")
