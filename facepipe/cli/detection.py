"""The detector's verbs: `facepipe train-detector` and `facepipe eval-detector` (export: facepipe export)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from facepipe.cli.console import console


def _load_eval_detector(spec: str, device: str, dlib_upsample: int):
    if spec == "dlib":
        from facepipe.runtime.detectors.dlib_detector import DlibDetector

        return DlibDetector(upsample=dlib_upsample)
    from facepipe.runtime.loader import load_detector

    return load_detector(spec, device=device)


def train_detector(
    config: Path = typer.Option(..., "--config", "-c", help="YAML config, e.g. configs/detector/mbv2_widerface.yaml"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides, e.g. epochs=10 run=try2"),
) -> None:
    """Train the CenterNet-MobileNetV2 face detector (5 landmarks); writes models/<run>/."""
    from facepipe.detection.train import DetectorConfig, train
    from facepipe.train.config import load_config

    cfg = load_config(DetectorConfig, config, overrides or [])
    run = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 speaks for all
    console.print(f"run folder: [bold]{run}[/] (best.pt, last.pt, metrics.jsonl, training.png)")
    console.print(f"next: facepipe export {run / 'best.pt'}")


def pseudo_label(
    photos: Path = typer.Argument(..., help="folder of photos (searched recursively)", readable=False),
    out: Path = typer.Option(..., "--out", "-o", help="label.txt to write (RetinaFace format, with 5 landmarks)"),
    limit: int = typer.Option(0, help="label a random sample of this many photos (0: all)"),
    seed: int = typer.Option(0, help="seed of that sample"),
    upsample: int = typer.Option(1, help="dlib HOG upsampling passes (dlib alone)"),
    teachers: Optional[str] = typer.Option(None, help="comma-separated teachers to fuse (retinaface, yunet, "
                                                      "ultraface, dlib, mtcnn); default: dlib alone"),
    models: Optional[Path] = typer.Option(None, help="folder with the teachers' files (default $FACEPIPE_MODELS)"),
    ground_truth: Optional[Path] = typer.Option(None, help="human boxes for PHOTOS (a label file): keep them, add "
                                                           "the teachers' 5 landmarks (needs --teachers)"),
    split: str = typer.Option("all", help="with --ground-truth: all | train | holdout of its images"),
    holdout: float = typer.Option(0.0, help="with --ground-truth: fraction held out (as in training configs)"),
) -> None:
    """Label your own photos for detector training: PSEUDO-labels, marked as such. dlib alone (HOG + 68 points),
    or several teachers on flipped and upscaled views, fused by weighted box fusion (docs/detector.md)."""
    import numpy as np

    from facepipe.detection.pseudo_labels import dlib_pseudo_labels
    from facepipe.errors import FacepipeError
    from facepipe.runtime.folders import one_line
    from facepipe.runtime.image import list_images

    if not photos.is_dir():
        raise FacepipeError(f"{photos}: not a folder")
    files, problems = list_images([photos])
    if problems:  # a folder that may not be listed (or none holding a photo): labels of part of it would mislead
        raise FacepipeError(one_line(problems))
    if limit and limit < len(files):
        files = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), limit, replace=False))]
    if ground_truth is not None and not teachers:
        raise FacepipeError("--ground-truth needs --teachers (whose landmarks to add)")
    if teachers:
        from facepipe.detection.pseudo_labels import ground_truth_with_teacher_landmarks, teacher_pseudo_labels
        from facepipe.detection.teachers import load_teachers

        folder = models or Path(os.environ.get("FACEPIPE_MODELS", "../shared/models"))
        chosen = load_teachers([t.strip() for t in teachers.split(",") if t.strip()], folder)
        if ground_truth is not None:
            from facepipe.detection.data import DataSpec, load_dataset

            spec = DataSpec.parse({"labels": str(ground_truth), "images": str(photos), "split": split,
                                   "holdout": holdout, "seed": seed}, "--ground-truth")
            samples, summary = load_dataset(spec)
            summary.report()
            counts = ground_truth_with_teacher_landmarks(samples, photos, out, chosen)
            console.print(f"{counts['faces']} human boxes in {counts['photos']} photos, {counts['with_landmarks']} "
                          f"with the teachers' landmarks -> {out}")
            console.print(f"use it as: train_data: [{{labels: {out}, images: {photos}, ignore_below: 0.5}}]")
            return
        counts = teacher_pseudo_labels(files, photos, out, chosen)
        console.print(f"{counts['photos'] - counts['no_face'] - counts['unreadable']} of {counts['photos']} photos "
                      f"labelled ({counts['faces']} faces, {counts['ignore_regions']} ignore regions; "
                      f"{counts['no_face']} without a face the teachers agree on, {counts['unreadable']} unreadable) "
                      f"-> {out}")
        console.print(f"use it as: train_data: [{{labels: {out}, images: {photos}, ignore_below: 0.45}}]")
        return
    counts = dlib_pseudo_labels(files, photos, out, upsample)
    console.print(f"{counts['labelled']} of {counts['photos']} photos labelled ({counts['faces']} faces; "
                  f"{counts['no_face']} without a dlib face, {counts['unreadable']} unreadable) -> {out}")
    console.print(f"use it as: train_data: [{{labels: {out}, images: {photos}}}]")


def eval_detector(
    detector: list[str] = typer.Option(..., "--detector", "-d", help=".pt / .onnx detector, or 'dlib'; repeat to "
                                                                     "compare"),
    labels: Optional[Path] = typer.Option(None, help="annotation file (WIDER bbx_gt, RetinaFace label.txt or "
                                                     "imglab XML)"),
    images: Optional[Path] = typer.Option(None, help="image folder (default: the label file's folder)"),
    split: str = typer.Option("all", help="all | train | holdout (with --holdout and --seed, as in training configs)"),
    holdout: float = typer.Option(0.0, help="fraction of images held out"),
    seed: int = typer.Option(0, help="seed of the holdout split"),
    wider_mat: Optional[Path] = typer.Option(None, help="folder with the official wider_*_val.mat files "
                                                        "(easy/medium/hard)"),
    out: Optional[Path] = typer.Option(None, help="folder for metrics.json and pr_curve.png (default "
                                                  "models/eval/<labels>)"),
    min_score: Optional[float] = typer.Option(None, help="lowest score kept for the PR curve (default 0.05; dlib: "
                                                         "-0.5)"),
    max_side: Optional[int] = typer.Option(None, help="override the detector's input size rule (longest side)"),
    dlib_upsample: int = typer.Option(1, help="for --detector dlib: HOG upsampling passes (1 finds faces >= ~40 px)"),
    device: str = typer.Option("cpu", help="cpu | cuda | auto"),
) -> None:
    """AP at IoU 0.5 (all faces, faces >= 16 px, or WIDER easy/medium/hard), PR curve PNG, landmark NME."""
    from facepipe.detection.data import DataError, DataSpec, load_dataset
    from facepipe.detection.evaluate import evaluate, load_wider_mat, plot_pr, run_detector
    from facepipe.runtime.detectors.centernet import CenterNetDetector

    settings = None
    if wider_mat is not None:
        if images is None:
            raise DataError("--wider-mat needs --images (the WIDER_val/images folder)")
        samples, settings = load_wider_mat(wider_mat, images)
        name = "wider_val"
    elif labels is not None:
        spec = DataSpec.parse({"labels": str(labels), "images": str(images) if images else None, "split": split,
                               "holdout": holdout, "seed": seed}, "eval-detector")
        samples, summary = load_dataset(spec)
        summary.report()
        console.print(f"data: {summary.line()}")
        name = labels.stem if split == "all" else f"{labels.parent.name}_{split}"
    else:
        raise DataError("give --labels FILE (or --wider-mat DIR with --images DIR)")
    out = out or Path("models") / "eval" / name
    out.mkdir(parents=True, exist_ok=True)

    table = Table(title=f"{len(samples)} images")
    for col in ("detector", "AP", "faces", "NME", "recall@thr", "ms/image"):
        table.add_column(col)
    curves, results = {}, {}
    for spec_str in detector:
        det = _load_eval_detector(spec_str, device, dlib_upsample)
        if max_side and isinstance(det, CenterNetDetector):
            det.spec.max_side = max_side
        lowest = min_score if min_score is not None else (0.05 if isinstance(det, CenterNetDetector) else -0.5)
        started = time.perf_counter()
        dets = run_detector(det.detect, samples, threshold=lowest, progress=True)
        ms = (time.perf_counter() - started) / max(1, len(samples)) * 1000
        report = evaluate(samples, dets, det.default_threshold, settings=settings)
        label = spec_str if spec_str == "dlib" else Path(spec_str).name
        results[spec_str] = {**report.summary(), "ms_per_image": round(ms, 1), "provider": det.provider}
        for subset, curve in report.curves.items():
            curves[f"{label} {subset}"] = curve
            table.add_row(escape(f"{label} [{subset}]"), f"{curve.ap:.4f}", str(curve.n_faces),
                          "-" if report.nme is None else f"{report.nme:.4f}",
                          f"{curve.recall_at(report.threshold):.3f}", f"{ms:.0f}")
    plot_pr(curves, out / "pr_curve.png", title=f"{name}: precision-recall at IoU 0.5")
    (out / "metrics.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    console.print(table)
    console.print("NME: mean landmark error / sqrt(box area), over true positives at each detector's threshold")
    console.print(f"wrote {out / 'metrics.json'} and {out / 'pr_curve.png'}")


def register(app: typer.Typer) -> None:
    app.command("train-detector")(train_detector)
    app.command("pseudo-label")(pseudo_label)
    app.command("eval-detector")(eval_detector)
