"""Export a recognizer checkpoint to ONNX: dynamic batch, facepipe metadata, ONNX Runtime vs PyTorch parity.

The metadata follows facepipe/onnx_meta.py (recognizer keys), so the exported file loads unchanged in
facepipe.runtime.recognizers.onnx_recognizer.OnnxRecognizer: colour order, mean/std, input size, the alignment template
scaled to the input size, embedding size, the recommended threshold of the last verification run, the
metric, and a fingerprint of the weights (the same one TorchRecognizer reports for the .pt).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from facepipe.errors import ModelError
from facepipe.recognition.checkpoint import build_backbone_from, load_recognizer_checkpoint, weights_fingerprint
from facepipe.runtime.preprocess import l2_normalize, to_network_input
from facepipe.train.onnx_export import OPSET, ExportReport, add_metadata, export_onnx, require_parity

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DEFAULT_THRESHOLD = 0.3
MIN_COSINE = 0.999  # parity below this means the exported graph is wrong


def recognizer_metadata(state: dict[str, Any]) -> dict[str, Any]:
    pre = state["preprocess"]
    meta = {
        "facepipe.kind": "recognizer",
        "name": state["backbone"],
        "color": pre["color"], "mean": pre["mean"], "std": pre["std"],
        "input_size": pre["input_size"], "template": pre["template"],
        "embedding_size": int(state["embedding_size"]),
        "metric": "cosine",
        "fingerprint": weights_fingerprint(state["backbone"], state["model"]),
    }
    ver = state.get("verification") or {}
    meta["threshold"] = float(ver["threshold"]) if ver.get("threshold") is not None else DEFAULT_THRESHOLD
    if ver:
        meta["verification"] = {k: ver[k] for k in ("name", "accuracy", "accuracy_std", "pairs") if k in ver}
    return meta


def training_provenance(state: dict[str, Any]) -> dict[str, Any]:
    """What made the weights, for the ONNX metadata and the model card: the run's recipe keys and `data_sha256`,
    a hash over the prepared set's manifest (every source photo's own sha256 and what was kept) and the
    teacher's vectors (None where a file is not readable here)."""
    import hashlib

    config = state.get("config") or {}
    digest = hashlib.sha256()
    data = Path(str(config.get("data", ""))).expanduser()
    for part in (data / "manifest.jsonl", Path(str(config.get("teacher") or "")).expanduser()):
        if part.is_file():
            digest.update(part.read_bytes())
        elif str(part) not in ("", "."):
            digest.update(b"missing:" + str(part).encode())
    keys = ("name", "backbone", "embedding_size", "split", "val_fraction", "split_seed", "distill_weight",
            "relation_weight", "margin_weight", "margin_m2", "margin_m3", "scale", "mask_prob", "batch_size",
            "optimizer", "lr")
    return {**{k: config.get(k) for k in keys}, "epochs": round(float(state.get("epoch") or 0), 3),
            "steps": int(state.get("step") or 0), "data": data.name, "num_classes": state.get("num_classes"),
            "teacher": Path(str(config["teacher"])).name if config.get("teacher") else None,
            "data_sha256": digest.hexdigest()}


def _load_check_images(check_images, size: tuple[int, int], limit: int = 32) -> tuple[np.ndarray, str]:
    if check_images is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (8, size[1], size[0], 3),
                            dtype=np.uint8), "8 random-noise chips (no check images given)"
    if isinstance(check_images, np.ndarray):
        images, source = list(check_images[:limit]), f"{min(limit, len(check_images))} given chips"
    else:
        paths: list[Path] = []
        items = [check_images] if isinstance(check_images, (str, os.PathLike)) else list(check_images)
        for item in items:
            p = Path(item)
            paths += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXT) if p.is_dir() else [p]
        paths = paths[:limit]
        from facepipe.runtime.image import read_image

        images = [read_image(p) for p in paths]  # ImageError names the file
        if not images:
            raise ModelError(f"no check images found in {check_images}")
        source = f"{len(images)} face chips from {', '.join(str(i) for i in items)[:120]}"
    chips = np.stack([im if (im.shape[1], im.shape[0]) == size else cv2.resize(im, size, interpolation=cv2.INTER_AREA)
                      for im in images])
    return chips, source


def export_recognizer(checkpoint: str | Path, out_path: str | Path | None = None,
                      check_images: str | Path | Sequence[str | Path] | np.ndarray | None = None,
                      opset: int = OPSET, exporter: str = "auto") -> ExportReport:
    """Checkpoint -> ONNX (default: recognizer.onnx next to it); returns the report with the parity check.

    check_images: aligned face chips (a folder, image paths, or an N x H x W x 3 RGB uint8 array) for the
    ONNX Runtime vs PyTorch comparison; without them random chips are used and the report says so.
    Raises ModelError and removes the file when the two disagree (min cosine < 0.999).
    """
    from torch.export import Dim

    from facepipe.runtime.recognizers.onnx_recognizer import OnnxRecognizer

    checkpoint = Path(checkpoint)
    state = load_recognizer_checkpoint(checkpoint)
    model = build_backbone_from(state, checkpoint).float()
    pre = state["preprocess"]
    size = (int(pre["input_size"][0]), int(pre["input_size"][1]))
    out_path = Path(out_path) if out_path else checkpoint.with_name("recognizer.onnx")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if pre["color"] == "GRAY" else 3
    used = export_onnx(model, torch.zeros(2, channels, size[1], size[0]), out_path, ["embedding"],
                       {"input": {0: "batch"}, "embedding": {0: "batch"}}, ({0: Dim("batch")},), exporter, opset)
    meta = recognizer_metadata(state)
    add_metadata(out_path, {**meta, "training": training_provenance(state)})

    chips, source = _load_check_images(check_images, size)
    with torch.no_grad():
        ref_raw = model(torch.from_numpy(to_network_input(chips, pre["color"], pre["mean"], pre["std"]))).numpy()
    rec = OnnxRecognizer(out_path, device="cpu", batch_size=len(chips))
    raw = rec.session.run(None, {rec._input: to_network_input(chips, pre["color"], pre["mean"], pre["std"])})[0]
    single = rec.session.run(None, {rec._input: to_network_input(chips[:1], pre["color"], pre["mean"], pre["std"])})[0]
    ours, ref = rec.embed(chips), l2_normalize(ref_raw)
    cos = (ours * ref).sum(1)
    report = ExportReport(
        "recognizer", out_path, checkpoint, used, opset,
        {"images": int(len(chips)), "source": source, "max_abs_diff": float(np.abs(raw - ref_raw).max()),
         "max_abs_diff_batch1": float(np.abs(single - ref_raw[:1]).max()), "min_cosine": float(cos.min())},
        {"backbone": state["backbone"], "input_size": list(size), "color": pre["color"],
         "embedding_size": meta["embedding_size"], "threshold": round(float(meta["threshold"]), 4),
         "threshold_source": "verification" if state.get("verification") else "default",
         "fingerprint": meta["fingerprint"]})
    return require_parity(report, report.parity["min_cosine"] >= MIN_COSINE, f"min cosine {cos.min():.5f}")
