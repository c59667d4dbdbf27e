"""Targets, decoding and NMS on hand-made cases: encode then decode must give the faces back."""
from __future__ import annotations

import numpy as np
import pytest

from facepipe.detection.targets import draw_gaussian, encode_targets, gaussian_radius
from facepipe.runtime.boxes import box_iou, nms
from facepipe.runtime.detectors.centernet_decode import decode_detections, decode_maps, find_peaks, max_pool3x3


def _match(found: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index in `found` of the box closest to each wanted box."""
    return np.array([int(np.argmin(np.abs(found - w).sum(axis=1))) for w in wanted])


def test_encode_then_decode_gives_back_boxes_and_landmarks():
    boxes = np.array([
        [10.0, 20.0, 60.0, 90.0],      # ordinary face
        [100.5, 40.2, 102.3, 43.1],    # smaller than one cell: negative log-sizes
        [200.0, 200.0, 300.0, 330.0],  # no landmarks: box heads only
        [3.0, 250.0, 40.0, 300.0],     # landmarks left of / above its centre cell: negative offsets
    ], np.float32)
    lms = np.array([
        [[25, 45], [45, 45], [35, 60], [27, 75], [43, 75]],
        [[101, 41], [102, 41], [101.4, 42], [101, 42.8], [102, 42.8]],
        [[0, 0]] * 5,
        [[5, 251], [12, 252], [8, 260], [4, 280], [15, 281]],
    ], np.float32)
    valid = np.ones((4, 5), bool)
    valid[2] = False
    t = encode_targets(boxes, lms, valid, (80, 80), stride=4)

    # the negative targets really are there, and masked in by the centre indicator
    assert (t["wh"][:, t["reg_mask"][0] > 0] < 0).any()
    assert (t["lm"][:, t["lm_mask"][0] > 0] < 0).any()
    assert t["reg_mask"].sum() == 4 and t["lm_mask"].sum() == 30

    found, scores, found_lms = decode_maps(t["hm"], t["wh"], t["off"], t["lm"], stride=4, threshold=0.99, top_k=10)
    assert len(found) == 4 and np.allclose(scores, 1.0)
    idx = _match(found, boxes)
    np.testing.assert_allclose(found[idx], boxes, atol=1e-3)
    np.testing.assert_allclose(found_lms[idx][valid.all(1)], lms[valid.all(1)], atol=1e-3)


def test_faces_without_landmarks_have_no_landmark_mask_but_a_box_target():
    t = encode_targets(np.array([[0, 0, 40, 40]], np.float32), None, None, (20, 20), stride=4)
    assert t["reg_mask"].sum() == 1 and t["lm_mask"].sum() == 0
    assert t["hm"].max() == 1.0


def test_partially_labelled_landmarks_mask_only_the_missing_points():
    lms = np.zeros((1, 5, 2), np.float32)
    valid = np.array([[True, True, False, True, True]])
    t = encode_targets(np.array([[0, 0, 40, 40]], np.float32), lms, valid, (20, 20), stride=4)
    iy, ix = np.argwhere(t["reg_mask"][0] > 0)[0]
    assert t["lm_mask"][:, iy, ix].tolist() == [1, 1, 1, 1, 0, 0, 1, 1, 1, 1]


def test_radius_grows_with_face_size_and_peak_is_exactly_one():
    assert gaussian_radius(2, 2) < gaussian_radius(10, 10) < gaussian_radius(40, 40)
    hm = np.zeros((15, 15), np.float32)
    draw_gaussian(hm, 0, 14, 3)  # clipped at the corner
    assert hm[14, 0] == 1.0 and hm[14, 1] < 1.0 and hm[10, 0] == 0.0


def test_decode_maps_to_original_pixels_with_scale():
    boxes = np.array([[40.0, 40.0, 120.0, 140.0]], np.float32)
    t = encode_targets(boxes, None, None, (64, 64), stride=4)
    # network input was the original image shrunk by 0.5
    out, scores, _ = decode_detections([t["hm"], t["wh"], t["off"], t["lm"]], (0.5, 0.5), (1000, 1000), 4, 0.5)
    np.testing.assert_allclose(out, boxes * 2, atol=1e-3)


def test_boxes_are_clipped_to_the_image():
    t = encode_targets(np.array([[0.0, 0.0, 40.0, 40.0]], np.float32), None, None, (16, 16), stride=4)
    t["wh"] += 1.0  # predicted box larger than the face, reaching outside the image
    out, _, _ = decode_detections([t["hm"], t["wh"], t["off"], t["lm"]], (1.0, 1.0), (50, 45), 4, 0.5)
    assert out[0, 0] == 0 and out[0, 1] == 0 and out[0, 2] <= 50 and out[0, 3] <= 45


def test_peaks_are_local_maxima_best_first():
    hm = np.zeros((6, 6), np.float32)
    hm[1, 1], hm[1, 2], hm[4, 4] = 0.9, 0.8, 0.95  # (1, 2) is not a peak: its neighbour is higher
    ys, xs, scores = find_peaks(hm, 0.5, 10)
    assert list(zip(ys.tolist(), xs.tolist())) == [(4, 4), (1, 1)]
    assert np.allclose(scores, [0.95, 0.9])
    assert max_pool3x3(hm)[0, 0] == pytest.approx(0.9)


def test_nms_and_iou():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert box_iou(boxes[:1], boxes[:1])[0, 0] == pytest.approx(1.0)
    assert box_iou(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(81 / 119)
    keep = nms(boxes, np.array([0.5, 0.9, 0.8]), 0.4)
    assert keep.tolist() == [1, 2]


@pytest.mark.parametrize("color", ["RGB", "BGR", "GRAY"])
def test_fast_network_input_equals_the_shared_preprocessing(color):
    from facepipe.runtime.preprocess import network_input, to_network_input

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    mean, std = ([100.0], [50.0]) if color == "GRAY" else ([10.0, 120.0, 200.0], [50.0, 60.0, 70.0])
    np.testing.assert_allclose(network_input(image, color, mean, std), to_network_input(image[None], color, mean, std),
                               atol=1e-5)


def test_resize_and_pad_never_enlarges_and_pads_to_the_multiple():
    from facepipe.runtime.preprocess import resize_and_pad

    small, scale = resize_and_pad(np.zeros((50, 70, 3), np.uint8), 640, 32, [127.5] * 3)
    assert small.shape == (64, 96, 3) and scale == (1.0, 1.0) and small[60, 90, 0] == 128
    big, scale = resize_and_pad(np.zeros((1000, 2000, 3), np.uint8), 640, 32, [0, 0, 0])
    assert big.shape == (320, 640, 3) and scale == (0.32, 0.32)


def test_input_rule_enlarges_small_photos_only_when_asked():
    from facepipe.runtime.preprocess import resize_and_pad

    small = np.zeros((208, 312, 3), np.uint8)
    kept, scale = resize_and_pad(small, 640, 32, [0, 0, 0])
    assert kept.shape[:2] == (224, 320) and scale == (1.0, 1.0)  # padded to a multiple of 32, not enlarged
    big, scale = resize_and_pad(small, 640, 32, [0, 0, 0], enlarge=True)
    assert big.shape[:2] == (448, 640) and abs(scale[0] - 640 / 312) < 1e-6
    large = np.zeros((960, 1280, 3), np.uint8)
    assert resize_and_pad(large, 640, 32, [0, 0, 0], enlarge=True)[0].shape[:2] == (480, 640)
