"""AP, matching with ignored faces, NME, the official .mat reader and the eval-detector command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facepipe.detection.data import FaceSample
from facepipe.detection.evaluate import evaluate, load_wider_mat, match_image, plot_pr, pr_curve
from facepipe.types import Detection


def _det(box, score, lms=None):
    return Detection(np.asarray(box, np.float32), float(score), None if lms is None else np.asarray(lms, np.float32))


def test_perfect_and_imperfect_ap():
    gt = FaceSample.make(Path("a.jpg"), [[0, 0, 20, 20], [50, 50, 80, 80]])
    perfect = [[_det([0, 0, 20, 20], 0.9), _det([50, 50, 80, 80], 0.8)]]
    assert evaluate([gt], perfect, 0.5).curves["all"].ap == pytest.approx(1.0)
    # a false positive ranked first: precision 1/2 at recall 0.5, 2/3 at recall 1; the interpolated
    # (VOC / WIDER) curve takes the best precision at any higher recall, so AP = 2/3 over both halves
    with_fp = [[_det([100, 100, 120, 120], 0.95), _det([0, 0, 20, 20], 0.9), _det([50, 50, 80, 80], 0.8)]]
    curve = evaluate([gt], with_fp, 0.5).curves["all"]
    assert curve.ap == pytest.approx(2 / 3) and curve.precision.tolist() == pytest.approx([0, 1 / 2, 2 / 3])
    # one face missed: AP 0.5; a duplicate detection of the same face is a false positive
    dup = [[_det([0, 0, 20, 20], 0.9), _det([1, 0, 20, 20], 0.85)]]
    curve = evaluate([gt], dup, 0.5).curves["all"]
    assert curve.ap == pytest.approx(0.5) and curve.precision[-1] == pytest.approx(0.5)


def test_small_faces_are_ignored_in_the_min16_subset():
    gt = FaceSample.make(Path("a.jpg"), [[0, 0, 10, 10], [50, 50, 80, 80]])
    dets = [[_det([0, 0, 10, 10], 0.9), _det([200, 200, 208, 208], 0.7), _det([50, 50, 80, 80], 0.6)]]
    report = evaluate([gt], dets, 0.5)
    assert report.curves["all"].n_faces == 2 and report.curves["min16"].n_faces == 1
    assert report.curves["min16"].ap == pytest.approx(1.0)  # the small hit and the small false alarm do not count
    assert report.curves["all"].ap < 1.0


def test_match_image_ignored_faces_neither_hit_nor_miss():
    tp, ignored, which = match_image(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0.9, 0.8]),
                                     np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([True, False]))
    assert tp.tolist() == [False, True] and ignored.tolist() == [True, False] and which.tolist() == [-1, 1]


def test_nme_over_true_positives_with_landmarks():
    lms = np.array([[4, 5], [14, 5], [9, 10], [5, 15], [13, 15]], np.float32)
    gt = FaceSample.make(Path("a.jpg"), [[0, 0, 20, 20]], lms[None], np.ones((1, 5), bool))
    report = evaluate([gt], [[_det([0, 0, 20, 20], 0.9, lms + [2, 0])]], 0.5)
    assert report.nme == pytest.approx(2 / 20) and report.nme_faces == 1


def test_pr_curve_png(tmp_path):
    curve = pr_curve(np.array([0.9, 0.8, 0.3]), np.array([True, False, True]), 3)
    plot_pr({"x": curve}, tmp_path / "pr.png")
    assert (tmp_path / "pr.png").stat().st_size > 5000


def test_official_wider_mat_files(tmp_path):
    sio = pytest.importorskip("scipy.io")

    def cell(items):
        out = np.empty((len(items), 1), dtype=object)
        for i, item in enumerate(items):
            out[i, 0] = item
        return out

    # one event with two images: 2 faces and 1 face; easy keeps face 1 of image 1 only
    boxes = cell([cell([np.array([[0, 0, 20, 20], [40, 40, 10, 10]], float), np.array([[5, 5, 30, 30]], float)])])
    sio.savemat(tmp_path / "wider_face_val.mat", {
        "event_list": cell([np.array(["0--Parade"])]),
        "file_list": cell([cell([np.array(["img_a"]), np.array(["img_b"])])]),
        "face_bbx_list": boxes})
    for name, lists in {"easy": [[1], []], "medium": [[1], [1]], "hard": [[1, 2], [1]]}.items():
        sio.savemat(tmp_path / f"wider_{name}_val.mat", {
            "gt_list": cell([cell([np.array(k, float).reshape(-1, 1) for k in lists])])})
    samples, settings = load_wider_mat(tmp_path, tmp_path / "images")
    assert [s.image.name for s in samples] == ["img_a.jpg", "img_b.jpg"]
    np.testing.assert_allclose(samples[0].boxes[1], [40, 40, 50, 50])
    assert settings["easy"][0].tolist() == [False, True] and settings["easy"][1].tolist() == [True]
    assert settings["hard"][0].tolist() == [False, False]
    dets = [[_det([0, 0, 20, 20], 0.9)], [_det([5, 5, 35, 35], 0.8)]]
    report = evaluate(samples, dets, 0.5, settings=settings)
    assert report.curves["easy"].ap == pytest.approx(1.0) and report.curves["hard"].ap == pytest.approx(2 / 3)


def test_eval_detector_command_with_a_checkpoint(tmp_path, data_dir):
    from typer.testing import CliRunner

    from facepipe.cli import app
    from facepipe.detection.checkpoint import detector_state
    from facepipe.detection.model import CenterFace
    from facepipe.runtime.detectors.centernet import DetectorSpec
    from facepipe.train.checkpoint import save_checkpoint

    ckpt = tmp_path / "untrained.pt"
    save_checkpoint(detector_state(CenterFace(0.25, 8, 8), "centerface_mbv2",
                                   {"width_mult": 0.25, "neck_channels": 8, "head_channels": 8}, DetectorSpec()), ckpt)
    result = CliRunner().invoke(app, ["eval-detector", "--detector", str(ckpt), "--labels",
                                      str(data_dir / "dlib-faces" / "testing.xml"), "--out", str(tmp_path / "ev"),
                                      "--max-side", "320"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ev" / "pr_curve.png").is_file() and (tmp_path / "ev" / "metrics.json").is_file()
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())[str(ckpt)]
    assert metrics["images"] == 5 and metrics["faces_all"] == 25 and 0 <= metrics["ap_min16"] <= 1


def test_train_detector_command_rejects_unknown_keys(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("train_data: [x.txt]\n")
    proc = subprocess.run([sys.executable, "-m", "facepipe.cli", "train-detector", "--config", str(cfg), "epohcs=3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "unknown config key 'epohcs'" in proc.stderr and "Traceback" not in proc.stderr
