"""YuNet: facepipe's decode against OpenCV's own FaceDetectorYN on real photos, and on hand-made outputs."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from models_testing import yunet_file  # noqa: F401 - a fixture

from facepipe.runtime.boxes import box_iou
from facepipe.runtime.detectors.yunet import OUTPUT_NAMES, YunetDetector, decode_yunet

THRESHOLD = 0.6


def _photos(data_dir):
    """Real photos with one or many faces, shrunk so the long side is <= 640 (both detectors see the same pixels)."""
    from facepipe.runtime.image import read_image

    paths = sorted((data_dir / "scenes").glob("*.jpg")) + sorted((data_dir / "people").glob("person0[1-4]/*.jpg"))[:8]
    for path in paths:
        image = read_image(path)
        s = min(1.0, 640 / max(image.shape[:2]))
        if s < 1:
            image = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        yield path.name, image


def _opencv_faces(model, image, threshold):
    h, w = image.shape[:2]
    det = cv2.FaceDetectorYN.create(str(model), "", (w, h), threshold, 0.3, 5000)
    _, faces = det.detect(np.ascontiguousarray(image[..., ::-1]))  # OpenCV takes BGR
    faces = np.zeros((0, 15), np.float32) if faces is None else faces
    boxes = faces[:, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    return np.clip(boxes, 0, [w, h, w, h]), faces[:, 4:14].reshape(-1, 5, 2), faces[:, 14]


def test_agrees_with_opencv_face_detector_yn_on_real_photos(yunet_file, data_dir):
    detector = YunetDetector(yunet_file, threads=1)
    total = 0
    for name, image in _photos(data_dir):
        ours = detector.detect(image, THRESHOLD)
        boxes, landmarks, scores = _opencv_faces(yunet_file, image, THRESHOLD)
        assert len(ours) == len(boxes), f"{name}: {len(ours)} faces, OpenCV {len(boxes)}"
        if not ours:
            continue
        iou = box_iou(np.array([f.box for f in ours]), boxes)
        match = iou.argmax(1)
        assert len(set(match.tolist())) == len(ours), f"{name}: two faces matched one of OpenCV's"
        assert iou.max(1).min() >= 0.98, name
        err = np.abs(np.array([f.landmarks for f in ours]) - landmarks[match]).max()
        assert err <= 1.5, f"{name}: landmarks {err:.2f} px from OpenCV's"
        np.testing.assert_allclose([f.score for f in ours], scores[match], atol=1e-3)
        total += len(ours)
    assert total >= 12  # the photos hold at least this many faces: the comparison is not vacuous


def test_landmarks_in_standard_order_and_detections_in_original_pixels(yunet_file, data_dir):
    from facepipe.runtime.image import read_image

    image = read_image(data_dir / "scenes" / "couple.jpg")  # large: the detector shrinks it itself
    faces = YunetDetector(yunet_file, threads=1).detect(image)
    assert len(faces) == 2
    h, w = image.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = face.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and (x2 - x1) > 300  # big faces, in full-size pixels
        eye_l, eye_r, nose, mouth_l, mouth_r = face.landmarks
        assert eye_l[0] < eye_r[0] and mouth_l[0] < mouth_r[0]  # image-left first
        assert max(eye_l[1], eye_r[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
        assert (x1 <= face.landmarks[:, 0]).all() and (face.landmarks[:, 0] <= x2).all()


def test_fixed_input_file_runs_at_the_image_size(yunet_file):
    """The zoo file declares 1x3x640x640; facepipe runs it at the padded image size, as OpenCV does."""
    detector = YunetDetector(yunet_file, threads=1)
    assert detector.rule.fixed_size is None
    faces = detector.detect(np.full((200, 333, 3), 90, np.uint8))
    assert faces == []


def _outputs(width, height):
    out = {}
    for name in OUTPUT_NAMES:
        head, s = name.split("_")
        channels = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}[head]
        out[name] = np.zeros((1, (height // int(s)) * (width // int(s)), channels), np.float32)
    return out


def test_decode_by_hand():
    out = _outputs(64, 32)  # stride 16: a 4 x 2 grid
    cell = 1 * 4 + 2  # row 1, column 2
    out["cls_16"][0, cell] = 0.81
    out["obj_16"][0, cell] = 1.7  # clipped to 1 as OpenCV does -> score sqrt(0.81 * 1) = 0.9
    out["bbox_16"][0, cell] = [0.5, 0.25, np.log(2.0), 0.0]  # centre (2.5, 1.25) cells, size 2 x 1 cells
    out["kps_16"][0, cell] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    out["cls_8"][0, 0] = 0.5  # below the threshold once multiplied by obj 0
    boxes, scores, landmarks = decode_yunet(out, (64, 32), 0.5)
    assert scores == pytest.approx([0.9])
    np.testing.assert_allclose(boxes[0], [40 - 16, 20 - 8, 40 + 16, 20 + 8], atol=1e-4)
    np.testing.assert_allclose(landmarks[0, 0], [(2 + 0.1) * 16, (1 + 0.2) * 16], atol=1e-4)
    np.testing.assert_allclose(landmarks[0, 4], [(2 + 0.9) * 16, (1 + 1.0) * 16], atol=1e-4)


def test_decode_rejects_outputs_of_another_size():
    with pytest.raises(ValueError, match="cls_8"):
        decode_yunet(_outputs(64, 64), (64, 32), 0.5)


def test_fixed_graph_that_cannot_be_made_dynamic_is_letterboxed(tmp_path):
    """A YuNet-layout file whose outputs do not follow the input size keeps its fixed input (letterboxed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["input"], ["m"], keepdims=0), helper.make_node("Mul", ["m", "zero"],
                                                                                            ["z"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for name, value in _outputs(64, 64).items():
        if name == "cls_32":
            value[0, 0] = 1.0  # cell (0, 0) of stride 32
        if name == "obj_32":
            value[0, 0] = 0.81  # score 0.9
        inits.append(numpy_helper.from_array(value, f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "fixed", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 64,
                                                                                                          64])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "fixed_yunet.onnx"))
    detector = YunetDetector(tmp_path / "fixed_yunet.onnx")
    assert detector.rule.fixed_size == (64, 64)
    faces = detector.detect(np.zeros((128, 64, 3), np.uint8), threshold=0.5)  # letterboxed at x0.5
    assert len(faces) == 1 and faces[0].score == pytest.approx(0.9)
    np.testing.assert_allclose(faces[0].box, [0, 0, 16 * 2, 16 * 2], atol=1e-4)  # centre (0, 0), 32 x 32 -> clipped, x2
