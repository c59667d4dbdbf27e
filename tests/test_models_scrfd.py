"""SCRFD: stand-in ONNX graphs with insightface's exact output layouts, decoded by hand; recognised by the registry."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facepipe.errors import ModelError
from facepipe.runtime.detectors.scrfd import ScrfdDetector
from facepipe.runtime.layouts import recognise_onnx
from facepipe.runtime.loader import load_detector, load_recognizer

STRIDES = (8, 16, 32)


def _save(nodes, inputs, outputs, initializers, path):
    graph = helper.make_graph(nodes, "stand_in", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def constant_scrfd(path, values: dict[str, np.ndarray]):
    """Fixed 1x3x640x640 input; each output a constant (kept connected to the input by + 0 * mean(input))."""
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for name, value in values.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])]
    return _save(nodes, inputs, outputs, inits, path)


def _zeros():
    out = {}
    for s in STRIDES:
        n = (640 // s) ** 2 * 2
        out.update({f"score_{s}": np.zeros((n, 1)), f"bbox_{s}": np.zeros((n, 4)), f"kps_{s}": np.zeros((n, 10))})
    return out


def test_fixed_640_decode_by_hand(tmp_path):
    v = _zeros()
    # stride 8, row 10, column 20, second anchor: anchor point (160, 80) in network pixels
    i = (10 * 80 + 20) * 2 + 1
    v["score_8"][i] = 0.9
    v["bbox_8"][i] = [2, 3, 4, 5]  # distances in strides: box (144, 56, 192, 120)
    v["kps_8"][i] = [1, 1, 2, 1, 1.5, 2, 1, 3, 2, 3]
    # stride 32, row 2, column 5, first anchor (160, 64): the same box, lower score -> suppressed by NMS
    j = (2 * 20 + 5) * 2
    v["score_32"][j] = 0.7
    v["bbox_32"][j] = [0.5, 0.25, 1.0, 1.75]
    # stride 16, row 5, column 30, first anchor (480, 80): a second face
    k = (5 * 40 + 30) * 2
    v["score_16"][k] = 0.6
    v["bbox_16"][k] = [1, 1, 1, 1]
    v["score_16"][k + 2] = 0.4  # below the threshold
    detector = load_detector(constant_scrfd(tmp_path / "scrfd_fixed.onnx", v))
    assert isinstance(detector, ScrfdDetector) and detector.rule.fixed_size == (640, 640)
    faces = detector.detect(np.zeros((320, 320, 3), np.uint8), threshold=0.5)  # letterboxed x2
    assert [round(f.score, 3) for f in faces] == [0.9, 0.6]
    np.testing.assert_allclose(faces[0].box, [72, 28, 96, 60], atol=1e-4)
    np.testing.assert_allclose(faces[0].landmarks, [[84, 44], [88, 44], [86, 48], [84, 52], [88, 52]], atol=1e-4)
    np.testing.assert_allclose(faces[1].box, [232, 32, 248, 48], atol=1e-4)
    assert detector.fingerprint.startswith("scrfd_fixed:")


def conv_scrfd(path, batch: bool, named: bool = True, red_weight=(1.0, 0.0, 0.0)):
    """Dynamic input; per stride, a cell's score is high only where the (normalised) red channel is bright.
    bbox distances are 1 stride each way, landmarks at the anchor point. 2 anchors per cell."""
    nodes, inits, outs = [], [], {}
    w_score = np.tile(np.asarray(red_weight, np.float32).reshape(1, 3, 1, 1), (2, 1, 1, 1))
    inits += [numpy_helper.from_array(w_score * 40, "w_score"), numpy_helper.from_array(np.full(2, -20, np.float32),
                                                                                        "b_score"),
              numpy_helper.from_array(np.zeros((8, 3, 1, 1), np.float32), "w_bbox"),
              numpy_helper.from_array(np.ones(8, np.float32), "b_bbox"),
              numpy_helper.from_array(np.zeros((20, 3, 1, 1), np.float32), "w_kps"),
              numpy_helper.from_array(np.zeros(20, np.float32), "b_kps")]
    for c in (1, 4, 10):
        shape = [1, -1, c] if batch else [-1, c]
        inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"shape{c}"))
    for s in STRIDES:
        nodes.append(helper.make_node("AveragePool", ["input.1"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]))
        for head, c in (("score", 1), ("bbox", 4), ("kps", 10)):
            nodes.append(helper.make_node("Conv", [f"p{s}", f"w_{head}", f"b_{head}"], [f"{head}{s}c"]))
            last = f"{head}{s}c"
            if head == "score":
                nodes.append(helper.make_node("Sigmoid", [last], [f"{head}{s}s"]))
                last = f"{head}{s}s"
            nodes.append(helper.make_node("Transpose", [last], [f"{head}{s}t"], perm=[0, 2, 3, 1]))
            outs[(head, s)] = (f"{head}{s}t", c)
    outputs = []
    for n, head in enumerate(("score", "bbox", "kps")):  # insightface's order: scores, boxes, landmarks
        for m, s in enumerate(STRIDES):
            src, c = outs[(head, s)]
            name = f"{head}_{s}" if named else str(400 + 3 * n + m)
            nodes.append(helper.make_node("Reshape", [src, f"shape{c}"], [name]))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, c] if batch else [None, c]))
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "height", "width"])]
    return _save(nodes, inputs, outputs, inits, path)


def _red_patch():
    image = np.full((200, 300, 3), 127, np.uint8)  # grey: ~0 after (x - 127.5) / 128
    image[64:128, 96:160] = (255, 0, 0)
    return image


@pytest.mark.parametrize("batch", [True, False])
@pytest.mark.parametrize("named", [True, False])
def test_dynamic_input_with_or_without_batch_axis(tmp_path, batch, named):
    path = conv_scrfd(tmp_path / "scrfd_dyn.onnx", batch, named)
    assert recognise_onnx(path).layout.name == "scrfd"
    detector = load_detector(path)
    assert detector.rule.fixed_size is None and detector.rule.color == "RGB"
    faces = detector.detect(_red_patch(), threshold=0.5)
    assert faces, "the red patch should be found"
    for face in faces:
        x1, y1, x2, y2 = face.box
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        assert 96 <= cx <= 160 and 64 <= cy <= 128  # anchor points of cells inside the patch only
        np.testing.assert_allclose(face.landmarks, [[cx, cy]] * 5, atol=1e-3)
    assert any(f.box[2] - f.box[0] == pytest.approx(64) for f in faces)  # a stride-32 cell: box 2 x 32 wide


def test_input_is_rgb_scaled_as_insightface_does(tmp_path):
    """Weights on the blue channel: a red patch must then give nothing (so the channels are not swapped), and a
    mid-grey photo nothing either (so 127.5 is subtracted: raw pixels would light every cell)."""
    blue = load_detector(conv_scrfd(tmp_path / "blue.onnx", True, red_weight=(0.0, 0.0, 1.0)))
    assert blue.detect(_red_patch(), threshold=0.5) == []
    red = load_detector(conv_scrfd(tmp_path / "red.onnx", True))
    assert red.detect(np.full((200, 300, 3), 127, np.uint8), threshold=0.5) == []


def test_unknown_layout_names_what_was_found(tmp_path):
    nodes = [helper.make_node("GlobalAveragePool", ["img"], ["g"]), helper.make_node("Flatten", ["g"], ["foo"])]
    inputs = [helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 3, 50, 50])]
    outputs = [helper.make_tensor_value_info("foo", TensorProto.FLOAT, [1, 3])]
    path = _save(nodes, inputs, outputs, [], tmp_path / "mystery.onnx")
    with pytest.raises(ModelError, match=r"mystery.onnx: unknown ONNX layout \(inputs img\[1, 3, 50, 50\]; outputs "
                                         r"foo\[1, 3\]\)"):
        load_detector(path)


def test_a_detector_is_not_a_recognizer(tmp_path):
    path = conv_scrfd(tmp_path / "scrfd_dyn.onnx", True)
    with pytest.raises(ModelError, match=r"a detector \(scrfd layout\), not a recognizer"):
        load_recognizer(path)
