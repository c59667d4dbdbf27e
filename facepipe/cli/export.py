"""`facepipe export CHECKPOINT`: ONNX for a detector or recognizer checkpoint, checked against PyTorch."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from facepipe.cli.console import console
from facepipe.errors import ModelError


def checkpoint_kind(path: Path) -> str:
    """"detector" or "recognizer", read from the checkpoint itself (weights_only: no code runs)."""
    from facepipe.train.checkpoint import load_checkpoint

    kind = load_checkpoint(path).get("kind")
    if kind not in ("detector", "recognizer"):
        raise ModelError(f"{path}: not a facepipe detector or recognizer checkpoint (kind={kind!r})")
    return kind


def export_command(
    checkpoint: Path = typer.Argument(..., help="models/<run>/last.pt (or any facepipe checkpoint)."),
    out: Optional[Path] = typer.Option(None, "--out", help="ONNX file to write (default: next to the checkpoint)."),
    check_images: Optional[List[Path]] = typer.Option(None, "--check-images",
                                                      help="Real images (detector) or face chips (recognizer) for the "
                                                           "parity check."),
    score_threshold: Optional[float] = typer.Option(None, help="detector: the default score threshold to store "
                                                               "(default: the checkpoint's)"),
    enlarge: Optional[bool] = typer.Option(None, "--enlarge/--no-enlarge",
                                           help="detector: enlarge photos smaller than the input rule's max_side "
                                                "(default: the checkpoint's rule)"),
):
    """Export a trained detector or recognizer to ONNX with its metadata, and check ONNX Runtime against PyTorch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ModelError("export needs torch: pip install 'facepipe[train]'") from None
    kind = checkpoint_kind(checkpoint)
    out = out or checkpoint.with_name(f"{kind}.onnx")
    if kind == "detector":
        from facepipe.detection.export import export_detector

        report = export_detector(checkpoint, out, check_images or None, score_threshold=score_threshold,
                                 enlarge=enlarge)
    else:
        from facepipe.recognition.export import export_recognizer

        one_folder = check_images and len(check_images) == 1 and check_images[0].is_dir()
        images = check_images[0] if one_folder else check_images
        report = export_recognizer(checkpoint, out, images or None)
    console.print(str(report), markup=False, highlight=False)
    console.print(f"[green]wrote[/] {out}")


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
