"""Annotation parsers, problem reporting, and augmentation keeping boxes and landmarks consistent."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.detection.augment import AugmentConfig, hflip, letterbox, random_square_crop, train_transform
from facepipe.detection.data import DataError, DataSpec, DetectionDataset, FaceSample, load_dataset, load_datasets


def _write_image(path: Path, w: int = 64, h: int = 48) -> Path:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (200, 30, 30)
    cv2.imwrite(str(path), img)
    return path


def test_retinaface_labels_with_and_without_landmarks(tmp_path):
    (tmp_path / "images").mkdir()
    _write_image(tmp_path / "images" / "a.jpg")
    _write_image(tmp_path / "images" / "b.jpg")
    (tmp_path / "label.txt").write_text(
        "# images/a.jpg\n"
        "10 5 20 30 12 12 0.0 22 12 0.0 17 20 0.0 13 27 0.0 21 27 0.0 0.9\n"
        "30 10 8 9 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1 -1\n"
        "# images/b.jpg\n"
        "1 1 5 5\n")
    samples, summary = load_dataset(DataSpec(str(tmp_path / "label.txt")))
    assert summary.images == 2 and summary.faces == 3 and summary.faces_with_landmarks == 1
    a = samples[0]
    np.testing.assert_allclose(a.boxes[0], [10, 5, 30, 35])
    np.testing.assert_allclose(a.landmarks[0, 2], [17, 20])
    assert a.landmark_valid[0].all() and not a.landmark_valid[1].any()


def test_wider_official_format_with_zero_faces_and_invalid(tmp_path):
    _write_image(tmp_path / "x.jpg")
    _write_image(tmp_path / "y.jpg")
    (tmp_path / "gt.txt").write_text(
        "x.jpg\n2\n1 2 10 12 0 0 0 0 0 0 \n20 20 5 5 0 0 0 1 0 0 \ny.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \n")
    samples, summary = load_dataset(DataSpec(str(tmp_path / "gt.txt")))
    assert [len(s.boxes) for s in samples] == [2, 0]
    assert samples[0].ignore.tolist() == [False, True]
    np.testing.assert_allclose(samples[0].boxes[0], [1, 2, 11, 14])


def test_imglab_xml_68_points_are_reduced_to_the_standard_five(data_dir):
    samples, summary = load_dataset(DataSpec(str(data_dir / "dlib-faces" / "training_with_face_landmarks.xml")))
    assert summary.images == 4 and summary.faces == 18 and summary.faces_with_landmarks == 18
    for s in samples:
        for box, lm in zip(s.boxes, s.landmarks):
            # image-left eye left of image-right eye, eyes above nose above mouth, all inside the box (roughly)
            assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
            assert lm[:2, 1].max() < lm[2, 1] < lm[3:, 1].min()
            assert box[0] - 5 < lm[:, 0].min() and lm[:, 0].max() < box[2] + 5


def test_unreadable_images_and_boxes_outside_are_skipped_and_counted(tmp_path):
    _write_image(tmp_path / "ok.jpg", 64, 48)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "label.txt").write_text(
        "# ok.jpg\n10 10 10 10\n100 100 10 10\n60 40 20 20\n"
        "# broken.jpg\n1 1 5 5\n"
        "# missing.jpg\n1 1 5 5\n")
    samples, summary = load_dataset(DataSpec(str(tmp_path / "label.txt")))
    assert len(samples) == 1 and summary.skipped_images == 2
    assert summary.skipped_faces == 1 and summary.clipped_faces == 1 and summary.faces == 2
    text = "\n".join(summary.problems)
    assert "broken.jpg" in text and "missing.jpg" in text and "outside" in text
    np.testing.assert_allclose(samples[0].boxes[1], [60, 40, 64, 48])


def test_bad_annotation_lines_and_unknown_dataset_keys_are_errors(tmp_path):
    (tmp_path / "label.txt").write_text("# a.jpg\n1 2 3\n")
    with pytest.raises(DataError, match="label.txt:2"):
        load_dataset(DataSpec(str(tmp_path / "label.txt")))
    with pytest.raises(DataError, match="'lables'"):
        load_datasets([{"lables": "x.txt"}], "train_data")


def test_holdout_split_is_disjoint_complete_and_stable(data_dir):
    label = str(data_dir / "widerface-dev" / "label.txt")
    train, _ = load_datasets([{"labels": label, "split": "train", "holdout": 0.3, "seed": 0}], "t")
    hold, _ = load_datasets([{"labels": label, "split": "holdout", "holdout": 0.3, "seed": 0}], "t")
    again, _ = load_datasets([{"labels": label, "split": "holdout", "holdout": 0.3, "seed": 0}], "t")
    a, b = {s.image for s in train}, {s.image for s in hold}
    assert len(a) == 70 and len(b) == 30 and not a & b
    assert [s.image for s in again] == [s.image for s in hold]


def _face():
    boxes = np.array([[10, 20, 50, 70]], np.float32)
    lms = np.array([[[20, 35], [40, 35], [30, 48], [22, 60], [38, 60]]], np.float32)
    valid = np.array([[True, True, True, False, True]])
    return boxes, lms, valid


def test_flip_mirrors_and_swaps_left_right_landmarks():
    img = np.zeros((80, 100, 3), np.uint8)
    img[:, :10] = 255
    boxes, lms, valid = _face()
    fimg, fb, fl, fv = hflip(img, boxes, lms, valid)
    assert fimg[0, 99, 0] == 255 and fimg[0, 0, 0] == 0
    np.testing.assert_allclose(fb[0], [50, 20, 90, 70])
    # the image-left eye after the flip is the old image-right eye, mirrored
    np.testing.assert_allclose(fl[0, 0], [100 - 40, 35])
    np.testing.assert_allclose(fl[0, 1], [100 - 20, 35])
    np.testing.assert_allclose(fl[0, 2], [100 - 30, 48])
    np.testing.assert_allclose(fl[0, 3], [100 - 38, 60])
    assert fv[0].tolist() == [True, True, True, True, False]  # the missing mouth corner moved too
    assert fl[0, 0, 0] < fl[0, 1, 0] and fl[0, 3, 0] < fl[0, 4, 0]


def test_crop_and_letterbox_move_boxes_with_the_pixels():
    """Paint the face box; after every transform the painted pixels must still be inside the box."""
    rng = np.random.default_rng(3)
    img = np.zeros((120, 160, 3), np.uint8)
    boxes, lms, valid = _face()
    x1, y1, x2, y2 = boxes[0].astype(int)
    img[y1:y2, x1:x2] = 255
    for _ in range(20):
        out, b, l, v, _ = train_transform(img, boxes, lms, valid, 64,
                                       AugmentConfig(crop_scales=[0.5, 1.0], color_jitter=0.0), rng, [0, 0, 0])
        assert out.shape == (64, 64, 3)
        if len(b):
            bx1, by1, bx2, by2 = b[0]
            painted = np.argwhere(out[..., 0] > 128)
            assert painted[:, 1].min() >= bx1 - 1.5 and painted[:, 1].max() <= bx2 + 1.5
            assert painted[:, 0].min() >= by1 - 1.5 and painted[:, 0].max() <= by2 + 1.5
    lb, b, l, _, _ = letterbox(img, boxes, lms, valid, 80, [0, 0, 0])
    np.testing.assert_allclose(b[0], boxes[0] * 0.5)
    np.testing.assert_allclose(l[0], lms[0] * 0.5)


def test_square_crop_keeps_only_faces_whose_centre_is_inside():
    rng = np.random.default_rng(0)
    img = np.zeros((100, 200, 3), np.uint8)
    boxes = np.array([[5, 5, 25, 25], [170, 60, 195, 90]], np.float32)
    lms, valid = np.zeros((2, 5, 2), np.float32), np.zeros((2, 5), bool)
    for _ in range(10):
        out, b, _, _, _ = random_square_crop(img, boxes, lms, valid, rng, [0.5])
        assert out.shape[:2] == (50, 50) and len(b) == 1  # never both: they are 150 px apart


def test_dataset_item_shapes_and_determinism(tmp_path):
    path = _write_image(tmp_path / "a.jpg", 96, 64)
    boxes, lms, valid = _face()
    sample = FaceSample.make(path, boxes, lms, valid)
    ds = DetectionDataset([sample], 64, AugmentConfig(), seed=1)
    a, b = ds[0], ds[0]
    assert a["image"].shape == (3, 64, 64) and a["hm"].shape == (1, 16, 16) and a["lm"].shape == (10, 16, 16)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # same (seed, epoch, index) -> same sample
    others = []
    for epoch in range(1, 6):
        ds.set_epoch(epoch)
        others.append(ds[0]["image"])
    assert any(not np.array_equal(a["image"], o) for o in others)  # other epochs, other augmentations


def test_pseudo_label_boxes_from_68_points_follow_the_wider_convention(data_dir):
    """dlib's 68 points -> a box spanning the jaw, from above the brows to the chin, holding the 5 points."""
    import xml.etree.ElementTree as ET

    from facepipe.detection.pseudo_labels import box_from_68
    from facepipe.runtime.align import reduce_68_to_5

    root = ET.parse(data_dir / "dlib-faces" / "training_with_face_landmarks.xml").getroot()
    box = next(root.iter("box"))
    pts = np.zeros((68, 2), np.float32)
    for p in box.findall("part"):
        pts[int(p.get("name"))] = (float(p.get("x")), float(p.get("y")))
    b = box_from_68(pts)
    five = reduce_68_to_5(pts)
    assert b[0] < five[:, 0].min() and five[:, 0].max() < b[2]
    assert b[1] < pts[17:27, 1].min() - 5 and b[3] == pytest.approx(pts[0:17, 1].max())
    assert (b[1] + b[3]) / 2 < five[2, 1]  # the nose sits below the box centre: the forehead is in the box


def test_invalid_wider_faces_are_ignore_regions_without_loss(tmp_path):
    """A WIDER "invalid" face is neither a face nor background: no heatmap peak, no loss on its cells."""
    import torch

    from facepipe.detection.losses import focal_loss

    _write_image(tmp_path / "x.jpg", 128, 128)
    (tmp_path / "gt.txt").write_text("x.jpg\n2\n8 8 32 32 0 0 0 0 0 0 \n64 64 40 40 0 0 0 1 0 0 \n")
    samples, _ = load_dataset(DataSpec(str(tmp_path / "gt.txt")))
    for augment in (None, AugmentConfig(crop_scales=[1.0], color_jitter=0.0)):
        t = DetectionDataset(samples, 128, augment, seed=0)[0]
        assert t["reg_mask"].sum() == 1  # only the valid face is a centre
        w = t["hm_weight"][0]
        if augment is None:  # no flip: the invalid face covers cells 16..26 of the 32 x 32 grid
            assert (w[16:26, 16:26] == 0).all() and t["hm"][0, 16:26, 16:26].max() == 0
        assert (w == 0).sum() >= 100 and w[t["reg_mask"][0] > 0].min() == 1
        hm, centres, weight = (torch.from_numpy(t[k])[None] for k in ("hm", "reg_mask", "hm_weight"))
        logits = torch.full_like(hm, -4.0)
        loud = logits.clone()
        loud[weight == 0] = 8.0  # confident "face" on the ignored region
        assert focal_loss(loud, hm, centres, weight=weight) == focal_loss(logits, hm, centres, weight=weight)
        assert focal_loss(loud, hm, centres) > focal_loss(logits, hm, centres)  # without the weight it would count
