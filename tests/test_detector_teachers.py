"""Teachers, their fusion into pseudo-labels, and the augmentation that turns portraits into crowds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models_testing import models_root

from facepipe.detection.augment import AugmentConfig, mosaic
from facepipe.detection.data import DataSpec, load_dataset, parse_imglab
from facepipe.detection.fusion import FusionSettings, fuse, label_image, views
from facepipe.detection.teachers import Teacher
from facepipe.runtime.boxes import box_iou
from facepipe.types import Detection

RETINAFACE = "retinaface_mnet025.pth"


def _teacher_files(*names: str) -> Path:
    root = models_root()
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        pytest.skip(f"teacher files {missing} not found in {root} (set FACEPIPE_MODELS)")
    return root


def _square_finder(name: str, score: float = 0.9) -> Teacher:
    """A 'teacher' that finds the bright square of a test image in any view of it (mirrored, upscaled)."""
    def detect(image: np.ndarray) -> list[Detection]:
        ys, xs = np.nonzero(image[..., 0] > 128)
        if not len(xs):
            return []
        box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
        x1, y1, x2, y2 = box
        # image-left eye, image-right eye, nose, image-left and image-right mouth corner
        points = np.array([[x1 + 0.3 * (x2 - x1), y1 + 0.3 * (y2 - y1)], [x1 + 0.7 * (x2 - x1), y1 + 0.3 * (y2 - y1)],
                           [x1 + 0.5 * (x2 - x1), y1 + 0.5 * (y2 - y1)], [x1 + 0.35 * (x2 - x1), y1 + 0.8 * (y2 - y1)],
                           [x1 + 0.65 * (x2 - x1), y1 + 0.8 * (y2 - y1)]], np.float32)
        return [Detection(box, score, points)]
    return Teacher(name, detect, vote=0.5, floor=0.1, has_landmarks=True)


def test_every_view_maps_back_to_the_photo_and_agreement_counts_views():
    image = np.zeros((120, 160, 3), np.uint8)
    image[30:70, 100:130] = 255  # the "face", off-centre so a wrong un-mirroring shows
    teacher = _square_finder("a")
    runs = views(image, teacher, FusionSettings())
    assert [name for name, _ in runs] == ["image", "mirror", "x1.5", "x2"]
    truth = np.array([100, 30, 130, 70], np.float32)
    for name, dets in runs:
        assert np.abs(dets[0].box - truth).max() < 1.0, name
        assert dets[0].landmarks[0, 0] < dets[0].landmarks[1, 0], f"{name}: image-left eye first after mapping back"

    weak = Teacher("b", lambda im: [Detection(truth + 2, 0.3, None)], vote=0.5, floor=0.1, has_landmarks=False)
    fused = fuse([(teacher, name, dets) for name, dets in runs] + [(weak, "image", weak.detect(image))])
    assert len(fused) == 1
    assert fused[0].score == pytest.approx(0.5)  # teacher a: 4 of 4 views; b: below its vote in its only view
    assert fused[0].votes == {"a": 1.0}
    assert np.abs(fused[0].box - truth).max() < 1.0
    assert fused[0].landmarks is not None


def test_fused_faces_below_keep_are_ignore_regions_in_the_label_file(tmp_path):
    labels = tmp_path / "label.txt"
    lms = " ".join(["-1.0 -1.0 -1.0"] * 5)
    labels.write_text(f"# a.png\n10 10 20 20 {lms} 0.900\n50 10 20 20 {lms} 0.300\n", encoding="utf-8")
    from PIL import Image

    Image.new("RGB", (100, 60)).save(tmp_path / "a.png")
    samples, _ = load_dataset(DataSpec(labels=str(labels), ignore_below=0.45))
    assert samples[0].ignore.tolist() == [False, True]
    plain, _ = load_dataset(DataSpec(labels=str(labels)))
    assert plain[0].ignore.tolist() == [False, False]


def _check_on_dlibs_labelled_faces(name: str, detect, data_dir: Path) -> None:
    """At least 80 % of dlib-faces' hand-labelled faces found, 5 landmarks within 10 % of the face's size."""
    from facepipe.runtime.image import read_image

    samples = parse_imglab(data_dir / "dlib-faces" / "testing_with_face_landmarks.xml", data_dir / "dlib-faces")
    found = total = 0
    errors = []
    for sample in samples:
        faces = detect(read_image(sample.image))
        if not faces:
            total += len(sample.boxes)
            continue
        ious = box_iou(sample.boxes, np.stack([f.box for f in faces]))
        for i, row in enumerate(ious):
            total += 1
            if row.max() >= 0.4:
                found += 1
                f = faces[int(row.argmax())]
                size = np.sqrt(np.prod(sample.boxes[i, 2:] - sample.boxes[i, :2]))
                errors.append(np.linalg.norm(f.landmarks - sample.landmarks[i], axis=1).mean() / size)
    assert found / total >= 0.8, f"{name} found {found} of {total} labelled faces"
    assert np.mean(errors) < 0.1, f"{name}: landmark error {np.mean(errors):.3f} of the face size"


def test_retinaface_written_from_its_keys_finds_dlibs_labelled_faces(data_dir):
    from facepipe.detection.retinaface import RetinaFaceDetector

    det = RetinaFaceDetector(_teacher_files(RETINAFACE) / RETINAFACE)
    _check_on_dlibs_labelled_faces("RetinaFace", lambda image: det.detect(image, 0.5), data_dir)


def test_mtcnn_written_from_its_keys_finds_dlibs_labelled_faces(data_dir):
    from facepipe.detection.mtcnn import MtcnnDetector, weights_dir

    try:
        weights = weights_dir()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    det = MtcnnDetector(weights)
    _check_on_dlibs_labelled_faces("MTCNN", lambda image: det.detect(image), data_dir)
    assert det.detect(np.zeros((240, 320, 3), np.uint8)) == []  # nothing in a black frame


def test_fused_teachers_label_a_photo_whose_faces_are_known(data_dir):
    from facepipe.detection.teachers import load_teachers
    from facepipe.runtime.image import read_image

    root = _teacher_files(RETINAFACE, "face_detection_yunet_2023mar.onnx", "ultraface_rfb_640.onnx")
    teachers = load_teachers(["retinaface", "yunet", "ultraface", "dlib"], root)
    settings = FusionSettings()
    sample = max(parse_imglab(data_dir / "dlib-faces" / "training.xml", data_dir / "dlib-faces"),
                 key=lambda s: len(s.boxes))  # the group photo: 7 faces labelled by hand
    fused = label_image(read_image(sample.image), teachers, settings)
    faces = [f for f in fused if f.score >= settings.keep]
    ious = box_iou(sample.boxes, np.stack([f.box for f in faces]))
    assert (ious.max(axis=1) >= 0.4).all(), f"known faces without a fused face: {ious.max(axis=1).round(2)}"
    assert (ious.max(axis=0) >= 0.4).sum() >= len(faces) - 1, "more than one fused face where no face is"
    assert all(f.landmarks is not None for f in faces)


def test_mosaic_moves_boxes_and_landmarks_with_the_pixels():
    rng = np.random.default_rng(0)
    tiles = []
    for k in range(4):
        image = np.zeros((90, 120, 3), np.uint8)
        image[20:50, 30 + k * 10:60 + k * 10] = (255, 60 * k, 0)
        box = np.array([[30 + k * 10, 20, 60 + k * 10, 50]], np.float32)
        points = np.array([[[40 + k * 10, 30]] * 5], np.float32)
        tiles.append((image, box, points, np.ones((1, 5), bool), np.zeros((0, 4), np.float32)))
    cfg = AugmentConfig(color_jitter=0.0, flip=True, mosaic_min_fill=0.6)
    out, boxes, points, valid, ignore = mosaic(tiles, 256, 2, cfg, rng, [127.5] * 3)
    assert out.shape == (256, 256, 3) and len(boxes) == 4 and valid.all()
    for box, pts in zip(boxes, points):
        x1, y1, x2, y2 = np.round(box).astype(int)
        inside = out[y1 + 2:y2 - 2, x1 + 2:x2 - 2]
        assert inside.size and (inside[..., 0] > 200).all(), "a box that does not sit on its face's pixels"
        assert (x1 <= pts[:, 0]).all() and (pts[:, 0] <= x2).all() and (y1 <= pts[:, 1]).all()


def test_pseudo_label_cli_with_teachers_writes_labels_that_say_how_they_were_made(data_dir, tmp_path):
    import subprocess
    import sys

    root = _teacher_files("face_detection_yunet_2023mar.onnx")
    out = tmp_path / "labels.txt"
    cmd = [sys.executable, "-m", "facepipe.cli", "pseudo-label", str(data_dir / "dlib-faces"), "--out", str(out),
           "--teachers", "yunet", "--models", str(root)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    samples, _ = load_dataset(DataSpec(labels=str(out), images=str(data_dir / "dlib-faces"), ignore_below=0.45))
    assert all(s.has_landmarks[~s.ignore].all() for s in samples)
    labelled = {s.image.name: s for s in samples}
    for known in parse_imglab(data_dir / "dlib-faces" / "training.xml", data_dir / "dlib-faces"):
        faces = labelled[known.image.name]
        ious = box_iou(known.boxes, faces.boxes[~faces.ignore])
        assert (ious.max(axis=1) >= 0.4).mean() >= 0.8, f"{known.image.name}: hand-labelled faces left unlabelled"
    # (teachers do label dogs' faces: dogs.jpg gets two "faces" even from all four; docs/detector.md)
    note = (tmp_path / "labels.PSEUDO_LABELS.txt").read_text()
    assert "PSEUDO-LABELS" in note and "yunet" in note and "ignore_below: 0.45" in note

    bad = subprocess.run(cmd[:7] + ["--ground-truth", str(data_dir / "dlib-faces" / "training.xml")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "--ground-truth needs --teachers" in bad.stderr + bad.stdout
