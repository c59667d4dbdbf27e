"""torch -> ONNX for both model kinds: one exporter helper, one opset, one report, one rule for failures.

The TorchScript-based exporter (`dynamo=False`) is tried first: with these networks it handles the dynamic
axes and exports in seconds; the dynamo exporter (onnxscript) is the fallback. An export is declared good
only after ONNX Runtime's outputs agree with PyTorch's; when they do not, the file is removed.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from facepipe import log
from facepipe.errors import ModelError

OPSET = 18


@dataclass
class ExportReport:
    """What `facepipe export` says about a detector or a recognizer export."""

    kind: str  # "detector" | "recognizer"
    path: Path
    checkpoint: Path
    exporter: str  # "torchscript" | "dynamo"
    opset: int
    parity: dict[str, Any]  # ONNX Runtime against PyTorch: the measured differences and what they were measured on
    facts: dict[str, Any] = field(default_factory=dict)  # kind-specific: threshold, fingerprint, input size, ...
    notes: list[str] = field(default_factory=list)  # extra lines for people (e.g. faces found per check image)

    def lines(self) -> list[str]:
        head = f"exported {self.kind} {self.checkpoint} -> {self.path} ({self.exporter} exporter, opset {self.opset})"
        facts = ", ".join(f"{k} {v}" for k, v in self.facts.items())
        parity = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.parity.items())
        return [head, *([facts] if facts else []), f"ONNX Runtime vs PyTorch: {parity}", *self.notes]

    def __str__(self) -> str:
        return "\n".join(self.lines())


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path, output_names: list[str],
                dynamic_axes: dict[str, dict[int, str]], dynamic_shapes: Any, exporter: str = "auto",
                opset: int = OPSET) -> str:
    """Write `model` (eval mode, on the CPU) to `path`; returns the exporter that worked.

    dynamic_axes are the TorchScript exporter's ({"input": {0: "batch"}, ...}), dynamic_shapes the dynamo one's.
    """
    tried = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    last_error: Exception | None = None
    for name in tried:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = dict(input_names=["input"], output_names=output_names, opset_version=opset)
                if name == "torchscript":
                    torch.onnx.export(model, (example,), str(path), dynamo=False, dynamic_axes=dynamic_axes, **kwargs)
                else:
                    program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=dynamic_shapes, **kwargs)
                    program.save(str(path), external_data=False)
            return name
        except Exception as exc:  # an exporter failing is reported, then the next one is tried
            last_error = exc
            first = str(exc).splitlines()[0][:160] if str(exc) else ""
            log.warn(f"the {name} ONNX exporter failed ({type(exc).__name__}: {first})")
    path.unlink(missing_ok=True)
    raise ModelError(f"{path}: ONNX export failed ({last_error})")


def add_metadata(path: Path, meta: dict[str, Any]) -> None:
    """facepipe's metadata (runtime/onnx_meta.py) into the exported file, checked by onnx."""
    import onnx

    from facepipe.runtime.onnx_meta import write_metadata

    model = onnx.load(str(path))
    write_metadata(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def require_parity(report: ExportReport, passed: bool, why: str) -> ExportReport:
    """Return the report when ONNX Runtime agreed with PyTorch; otherwise remove the file and raise."""
    if not passed:
        report.path.unlink(missing_ok=True)
        raise ModelError(f"{report.path}: ONNX Runtime and PyTorch disagree ({why}); the file was removed")
    return report
