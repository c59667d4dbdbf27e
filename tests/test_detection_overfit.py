"""The proof that targets, losses and decoding agree: a short CPU run must learn a few real photos.

Trains configs/detector/overfit_tiny.yaml on dlib's 4 training photos (18 faces with landmarks), exports
the result to ONNX (parity with PyTorch checked on the same photos), and runs the ONNX detector on them:
AP at IoU 0.5 must be >= 0.9 and the landmarks must be close.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from facepipe.detection.data import DataSpec, load_dataset
from facepipe.detection.evaluate import evaluate, run_detector
from facepipe.detection.export import export_detector
from facepipe.detection.train import DetectorConfig, train
from facepipe.train.config import load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_overfit_a_few_real_images(data_dir, tmp_path):
    from facepipe.runtime.detectors.onnx_detector import OnnxDetector

    labels = str(data_dir / "dlib-faces" / "training_with_face_landmarks.xml")
    cfg = load_config(DetectorConfig, REPO / "configs" / "detector" / "overfit_tiny.yaml",
                      [f"out_dir={tmp_path}", f"train_data=[{labels}]", "val_data=[]"])
    started = time.perf_counter()
    run = train(cfg)
    took = time.perf_counter() - started

    samples, _ = load_dataset(DataSpec(labels))
    report = export_detector(run / "best.pt", run / "detector.onnx", [s.image for s in samples])
    assert report.parity["max_abs_diff"] < 1e-3 and report.opset == 18, str(report)

    det = OnnxDetector(run / "detector.onnx", threads=1)
    assert det.spec.max_side == 256
    result = evaluate(samples, run_detector(det.detect, samples, threshold=0.05), det.default_threshold)
    ap = result.curves["all"].ap
    assert ap >= 0.9, f"AP {ap:.3f} after {took:.0f} s of training"
    assert result.nme is not None and result.nme < 0.1, result.nme
    # at the default threshold it finds nearly every face
    assert result.curves["all"].recall_at(det.default_threshold) >= 0.85
