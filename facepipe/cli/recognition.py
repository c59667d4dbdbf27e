"""CLI verbs of the recognizer: `facepipe train-recognizer` and `facepipe eval-recognizer` (added by register(app))."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from facepipe.cli.console import console


def _fmt(v, pct: bool = True) -> str:
    if v is None:
        return "n/a"
    return f"{v * 100:.2f} %" if pct else f"{v:.4f}"


def train_recognizer(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (configs/recognizer/*.yaml)"),
    overrides: Optional[List[str]] = typer.Argument(None, help="key=value overrides of config keys"),
) -> None:
    """Train a face recognizer (ArcFace-family margins, Partial FC, or triplet loss); torchrun for several GPUs."""
    from facepipe.recognition.config import RecognizerConfig
    from facepipe.recognition.train import train
    from facepipe.train.config import load_config

    cfg = load_config(RecognizerConfig, config, overrides or [])
    summary = train(cfg)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    console.print(f"[bold green]done[/] step {summary['step']} -> {summary['checkpoint']}")
    last = summary.get("last") or {}
    if last:
        console.print(f"  loss {last.get('loss', float('nan')):.4f}, training accuracy (last batches) "
                      f"{_fmt(last.get('train_acc'))}, {last.get('samples_per_s', 0):.1f} samples/s")
    if "train_eval_acc" in summary:
        console.print(f"  training-set accuracy (no augmentation): {_fmt(summary['train_eval_acc'])}")
    ver = summary.get("verification")
    if ver:
        console.print(f"  {ver.get('name')}: accuracy {_fmt(ver['accuracy'])} ± {_fmt(ver['accuracy_std'])}, "
                      f"threshold {ver['threshold']:.3f}")
    console.print(f"  export: facepipe export {summary['checkpoint']}")


def eval_recognizer(
    model: Path = typer.Argument(..., help="a recognizer: training checkpoint (.pt) or ONNX model"),
    sets: Optional[List[str]] = typer.Option(None, "--set", "-s", help=".bin file, pairs list, or pairs.txt@root "
                                                                       "(repeatable)"),
    folder: Optional[Path] = typer.Option(None, "--folder", help="aligned chips in identity folders: pairs built with "
                                                                 "a fixed seed"),
    pairs: int = typer.Option(3000, help="with --folder: at most this many positive (and negative) pairs"),
    seed: int = typer.Option(0, help="with --folder: seed of the pair sampling"),
    flip: bool = typer.Option(True, "--flip/--no-flip", help="flip test: add the mirrored image's embedding"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for roc_<set>.png and results.json"),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
) -> None:
    """Verification accuracy (10-fold, flip test), TAR@FAR and ROC of a recognizer on LFW-style pair sets."""
    import numpy as np

    from facepipe.recognition.data import FolderSource
    from facepipe.recognition.verification import (
        PairSet,
        VerificationSetError,
        evaluate_pair_set,
        load_pair_set,
        load_recognizer_any,
        make_pairs,
        plot_roc,
        resize_chips,
    )

    if not sets and folder is None:
        raise VerificationSetError("give at least one --set (.bin / pairs list) or --folder")
    recognizer = load_recognizer_any(model, device)
    size = tuple(int(v) for v in recognizer.template.size)
    pair_sets = [load_pair_set(s, size=size) for s in sets or []]
    if folder is not None:
        src = FolderSource(folder)
        left, right, same = make_pairs(src.labels, pairs, seed)
        used = np.unique(np.concatenate([left, right]))
        pos = {int(u): k for k, u in enumerate(used)}
        images = resize_chips([src.load(int(u)) for u in used], size)
        pair_sets.append(PairSet(folder.name, images, np.array([pos[int(v)] for v in left]),
                                 np.array([pos[int(v)] for v in right]), same))
    table = Table(title=f"{model.name} ({recognizer.name}, {recognizer.provider})")
    for col in ("set", "pairs", "accuracy (10-fold)", "threshold", "AUC", "TAR@FAR=1e-3", "TAR@FAR=1e-4"):
        table.add_column(col, justify="right" if col != "set" else "left")
    results = {}
    if out:
        out.mkdir(parents=True, exist_ok=True)
    for ps in pair_sets:
        r, scores = evaluate_pair_set(recognizer.embed, ps, flip=flip, size=size)
        results[ps.name] = r
        table.add_row(ps.name, str(len(ps)), f"{_fmt(r['accuracy'])} ± {_fmt(r['accuracy_std'])}",
                      f"{r['threshold']:.3f}", f"{r['auc']:.4f}", _fmt(r["tar_at_far"]["0.001"]),
                      _fmt(r["tar_at_far"]["0.0001"]))
        if out:
            plot_roc({ps.name: (scores, ps.same)}, out / f"roc_{ps.name}.png", title=f"{model.name}: {ps.name}")
    console.print(table)
    if out:
        (out / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
        console.print(f"ROC curves and results.json in {out}")


def teacher_embed(
    prepared: Path = typer.Argument(..., help="a set made by `facepipe prepare SRC DST` (its DST)"),
    source: Path = typer.Option(..., "--source", help="the SRC photos the set was prepared from"),
    no_mirror: bool = typer.Option(False, "--no-mirror", help="the chip alone, not averaged with its mirror"),
) -> None:
    """Teacher vectors (dlib's ResNet on its own chip) for every chip of a prepared set: distillation targets."""
    from facepipe.recognition.teacher import build_teacher_embeddings

    out, count = build_teacher_embeddings(prepared, source, mirror=not no_mirror)
    console.print(f"{count} teacher vectors -> {out}")
    console.print(f"  train with: facepipe train-recognizer ... teacher={out}")


def register(app: typer.Typer) -> None:
    app.command("teacher-embed")(teacher_embed)
    app.command("train-recognizer")(train_recognizer)
    app.command("eval-recognizer")(eval_recognizer)
