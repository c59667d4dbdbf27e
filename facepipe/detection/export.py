"""Detector checkpoint -> ONNX (dynamic batch, height and width) with facepipe metadata, checked against PyTorch.

Exported through facepipe.train.onnx_export (the TorchScript exporter first; dynamo, which takes minutes on a
small CPU for this network, as the fallback). Success is declared only after ONNX Runtime's outputs match
PyTorch's on real images (max abs difference reported per output); otherwise the file is removed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facepipe.errors import DataError, ModelError
from facepipe.runtime.detectors.centernet import prepare_input
from facepipe.train.onnx_export import OPSET, ExportReport, add_metadata, export_onnx, require_parity

OUTPUTS = ["hm", "wh", "off", "lm"]


def _export(net: torch.nn.Module, path: Path, exporter: str, opset: int) -> str:
    from torch.export import Dim

    axes = {"input": {0: "batch", 2: "height", 3: "width"}}
    axes.update({name: {0: "batch", 2: "out_height", 3: "out_width"} for name in OUTPUTS})
    h, w = Dim("h32", min=1, max=256), Dim("w32", min=1, max=256)
    shapes = {"x": {0: Dim("batch", min=1, max=1024), 2: 32 * h, 3: 32 * w}}
    return export_onnx(net, torch.randn(1, 3, 256, 320), path, OUTPUTS, axes, shapes, exporter, opset)


def _real_images(ckpt: dict, limit: int = 4) -> list[Path]:
    """Images named in the checkpoint's own validation / training data, when no images are given."""
    from facepipe.detection.data import load_datasets

    config = ckpt.get("config") or {}
    for key in ("val_data", "train_data"):
        try:
            samples, _ = load_datasets(config.get(key) or [], key)
        except DataError:  # the training machine's paths: the caller then asks for --check-images
            continue
        if samples:
            return [s.image for s in samples[:limit]]
    return []


def training_provenance(ckpt: dict) -> dict:
    """What made the weights, for the ONNX metadata and the model card: the run's config (name, network,
    epochs trained, data entries) and `data_sha256`, a hash over the label files it trained on, in order
    (None for a file not readable here)."""
    import hashlib

    config = ckpt.get("config") or {}
    digest = hashlib.sha256()
    for entry in config.get("train_data") or []:
        labels = Path(str(entry["labels"] if isinstance(entry, dict) else entry)).expanduser()
        digest.update(labels.read_bytes() if labels.is_file() else b"missing:" + str(labels).encode())
    return {"run": config.get("name"), "arch": ckpt.get("arch"), "arch_args": ckpt.get("arch_args"),
            "epochs": ckpt.get("epoch"), "input_size": config.get("input_size"),
            "init_weights": Path(config["init_weights"]).name if config.get("init_weights") else None,
            "train_data": config.get("train_data"), "data_sha256": digest.hexdigest()}


def export_detector(checkpoint: str | Path, out_path: str | Path, check_images: list[str | Path] | None = None,
                    opset: int = OPSET, exporter: str = "auto", tolerance: float = 1e-3,
                    max_side: int | None = None, score_threshold: float | None = None,
                    enlarge: bool | None = None) -> ExportReport:
    """Write `out_path` (.onnx) from a detector checkpoint and verify it with ONNX Runtime on real images.

    check_images: photos to compare on (default: up to 4 from the checkpoint's validation data).
    max_side, score_threshold, enlarge: override the input size rule's longest side / the default threshold /
    whether small photos are enlarged to max_side
    stored in the metadata (the checkpoint's values otherwise).
    Raises ModelError (and removes the file) when the outputs differ by more than `tolerance`.
    """
    from facepipe.detection.torch_detector import TorchDetector
    from facepipe.runtime.detectors.onnx_detector import OnnxDetector
    from facepipe.runtime.image import read_image

    checkpoint, out_path = Path(checkpoint), Path(out_path)
    torch_det = TorchDetector(checkpoint, device="cpu")
    if max_side:
        torch_det.spec.max_side = int(max_side)
    if score_threshold is not None:
        torch_det.spec.score_threshold = float(score_threshold)
    if enlarge is not None:
        torch_det.spec.enlarge = bool(enlarge)
    from facepipe.train.checkpoint import load_checkpoint

    images = [Path(p) for p in check_images] if check_images else _real_images(load_checkpoint(checkpoint))
    if not images:
        raise ModelError(f"{checkpoint}: no images to check the export on (pass some real photos)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    used = _export(torch_det._net.cpu().eval(), out_path, exporter, opset)
    add_metadata(out_path, {**torch_det.spec.to_metadata(), "source_checkpoint": checkpoint.name,
                            "training": training_provenance(load_checkpoint(checkpoint))})

    onnx_det = OnnxDetector(out_path, device="cpu")
    diffs = {name: 0.0 for name in OUTPUTS}
    rows = []
    try:
        for path in images:
            image = read_image(path)
            x, _ = prepare_input(image, torch_det.spec)
            batch = np.concatenate([x, x[:, :, ::-1].copy()])  # two different images: dynamic batch
            ref = torch_det._forward(batch)
            got = onnx_det._forward(batch)
            for name, a, b in zip(OUTPUTS, ref, got):
                if a.shape != b.shape:
                    raise ModelError(f"{out_path}: output {name} has shape {b.shape} in ONNX Runtime, {a.shape} in "
                                     f"PyTorch")
                diffs[name] = max(diffs[name], float(np.abs(a - b).max()))
            rows.append((str(path), len(torch_det.detect(image)), len(onnx_det.detect(image))))
    except Exception:
        out_path.unlink(missing_ok=True)
        raise
    worst = max(diffs.values())
    report = ExportReport("detector", out_path, checkpoint, used, opset,
                          {"images": len(rows), "max_abs_diff": worst, **{f"max_abs_diff_{k}": v for k,
                                                                          v in diffs.items()},
                           "tolerance": tolerance},
                          {"max_side": torch_det.spec.max_side, "enlarge": torch_det.spec.enlarge,
                           "score_threshold": torch_det.spec.score_threshold},
                          [f"  {Path(p).name}: {a} faces (PyTorch), {b} faces (ONNX Runtime)" for p, a, b in rows])
    return require_parity(report, worst <= tolerance, f"max abs difference {worst:.2e} > {tolerance:g}")
