"""Detector checkpoint -> ONNX (dynamic batch, height and width) with facepipe metadata, checked against PyTorch.

The TorchScript-based exporter (`dynamo=False`) is used first: with this network it handles dynamic
H/W and exports in seconds; the dynamo exporter (onnxscript) is the fallback and gives the same
numbers, but takes minutes on a small CPU. Success is declared only after ONNX Runtime's outputs
match PyTorch's on real images (max abs difference reported per output).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facepipe import log
from facepipe.runtime.centernet import prepare_input
from facepipe.errors import DataError, ModelError

OUTPUTS = ["hm", "wh", "off", "lm"]


@dataclass
class ExportReport:
    path: Path
    checkpoint: Path
    exporter: str
    opset: int
    max_abs_diff: dict[str, float]
    images: list[tuple[str, int, int]] = field(default_factory=list)  # (image, faces torch, faces onnx)
    tolerance: float = 1e-3

    @property
    def max_diff(self) -> float:
        return max(self.max_abs_diff.values()) if self.max_abs_diff else float("nan")

    def lines(self) -> list[str]:
        out = [f"exported {self.checkpoint} -> {self.path} ({self.exporter} exporter, opset {self.opset})",
               "ONNX Runtime vs PyTorch max abs difference: "
               + ", ".join(f"{k} {v:.2e}" for k, v in self.max_abs_diff.items())
               + f" (tolerance {self.tolerance:g}) on {len(self.images)} images"]
        out += [f"  {Path(p).name}: {a} faces (PyTorch), {b} faces (ONNX Runtime)" for p, a, b in self.images]
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _export(net: torch.nn.Module, path: Path, opset: int, exporter: str) -> None:
    dummy = torch.randn(1, 3, 256, 320)
    kwargs = dict(input_names=["input"], output_names=OUTPUTS, opset_version=opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            axes = {"input": {0: "batch", 2: "height", 3: "width"}}
            axes.update({name: {0: "batch", 2: "out_height", 3: "out_width"} for name in OUTPUTS})
            torch.onnx.export(net, (dummy,), str(path), dynamo=False, dynamic_axes=axes, **kwargs)
        else:
            from torch.export import Dim

            h, w = Dim("h32", min=1, max=256), Dim("w32", min=1, max=256)
            shapes = {"x": {0: Dim("batch", min=1, max=1024), 2: 32 * h, 3: 32 * w}}
            torch.onnx.export(net, (dummy,), str(path), dynamo=True, dynamic_shapes=shapes, **kwargs)


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


def export_detector(checkpoint: str | Path, out_path: str | Path, check_images: list[str | Path] | None = None,
                    opset: int = 18, exporter: str = "auto", tolerance: float = 1e-3,
                    max_side: int | None = None, score_threshold: float | None = None) -> ExportReport:
    """Write `out_path` (.onnx) from a detector checkpoint and verify it with ONNX Runtime on real images.

    check_images: photos to compare on (default: up to 4 from the checkpoint's validation data).
    max_side, score_threshold: override the input size rule's longest side / the default threshold
    stored in the metadata (the checkpoint's values otherwise).
    Raises ModelError (and removes the file) when the outputs differ by more than `tolerance`.
    """
    import onnx

    from facepipe.runtime.onnx_detector import OnnxDetector
    from facepipe.detection.torch_detector import TorchDetector
    from facepipe.runtime.image import read_image
    from facepipe.runtime.onnx_meta import write_metadata

    checkpoint, out_path = Path(checkpoint), Path(out_path)
    torch_det = TorchDetector(checkpoint, device="cpu")
    if max_side:
        torch_det.spec.max_side = int(max_side)
    if score_threshold is not None:
        torch_det.spec.score_threshold = float(score_threshold)
    from facepipe.train.checkpoint import load_checkpoint

    images = [Path(p) for p in check_images] if check_images else _real_images(load_checkpoint(checkpoint))
    if not images:
        raise ModelError(f"{checkpoint}: no images to check the export on (pass some real photos)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tried = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    used, last_error = None, None
    for name in tried:
        try:
            _export(torch_det._net.cpu().eval(), out_path, opset, name)
            used = name
            break
        except Exception as exc:  # an exporter failing is reported, then the next one is tried
            last_error = exc
            log.warn(f"the {name} ONNX exporter failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})")
    if used is None:
        raise ModelError(f"{checkpoint}: ONNX export failed ({last_error})")
    model = onnx.load(str(out_path))
    meta = torch_det.spec.to_metadata()
    meta["source_checkpoint"] = checkpoint.name
    write_metadata(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(out_path))

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
                    raise ModelError(f"{out_path}: output {name} has shape {b.shape} in ONNX Runtime, {a.shape} in PyTorch")
                diffs[name] = max(diffs[name], float(np.abs(a - b).max()))
            rows.append((str(path), len(torch_det.detect(image)), len(onnx_det.detect(image))))
    except Exception:
        out_path.unlink(missing_ok=True)
        raise
    report = ExportReport(out_path, checkpoint, used, opset, diffs, rows, tolerance)
    if report.max_diff > tolerance:
        out_path.unlink(missing_ok=True)
        raise ModelError(f"{out_path}: ONNX Runtime differs from PyTorch by {report.max_diff:.2e} "
                         f"(> {tolerance:g}); the file was removed")
    return report
