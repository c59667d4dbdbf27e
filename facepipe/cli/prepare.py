"""`facepipe prepare` and `facepipe prepare-pairs`: parse options, call facepipe.prepare.run, render with rich."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from facepipe.cli.console import console, err
from facepipe.cli.options import RayOpt


def _render_summary(result) -> None:
    s = result.summary
    t = Table(title=f"prepared {result.dst}", show_header=False)
    t.add_column("what")
    t.add_column("count", justify="right")
    t.add_row("source images (in the manifest)", str(s.images))
    t.add_row("[green]kept images[/]", f"[green]{s.kept_images}[/]")
    t.add_row("chips written", str(s.chips))
    t.add_row("masked copies", str(s.masked_copies) + (f"  ({', '.join(f'{k} {v}' for k, v in s.mask_styles.items())})"
                                                      if s.mask_styles else ""))
    t.add_row("identities in the set", str(s.identities))
    if s.identities_excluded:
        t.add_row("[red]identities excluded (overlap)[/]", f"[red]{s.identities_excluded}[/]")
    if s.chips_per_identity:
        c = s.chips_per_identity
        t.add_row("chips per identity (min / median / max)", f"{c['min']} / {c['median']:g} / {c['max']}")
    from facepipe.prepare.manifest import REASONS

    for reason, n in s.dropped.items():
        t.add_row(f"[yellow]dropped: {reason}[/] [dim]({REASONS.get(reason, '')})[/]", f"[yellow]{n}[/]")
    for reason, n in s.faces_dropped.items():
        t.add_row(f"[yellow]faces dropped in kept images: {reason}[/]", f"[yellow]{n}[/]")
    scan = result.scan
    if scan.non_images:
        t.add_row("[dim]files skipped (not an image suffix)[/]", str(len(scan.non_images)))
    if scan.loose_files:
        t.add_row("[dim]images skipped (directly in SRC, no identity folder)[/]", str(len(scan.loose_files)))
    t.add_row("already done (resumed)", str(result.done_before))
    t.add_row("processed in this run", f"{result.processed}  ({result.rate:.1f} images/s)" if result.processed else "0")
    if result.orphans_removed:
        t.add_row("leftover chips of an interrupted run, removed", str(result.orphans_removed))
    if result.recordio:
        t.add_row("train.rec", f"{result.recordio[0]} images, {result.recordio[1]} identities")
    console.print(t)


def _render_identities(result, limit: int = 20) -> None:
    rows = [c for c in result.summary.per_identity]
    title = "per identity"
    if len(rows) > limit:
        rows = sorted(rows, key=lambda c: (not c.excluded, c.chips, c.identity))[:limit]
        title = (f"per identity: the {limit} with the fewest chips of {len(result.summary.per_identity)} "
                 "(all in identities.csv)")
    t = Table(title=title)
    for col in ("identity", "images", "kept", "chips", "masked", "dropped", ""):
        t.add_column(col, justify="left" if col == "identity" else "right")
    for c in rows:
        t.add_row(c.identity, str(c.images), str(c.kept), str(c.chips), str(c.masked),
                  f"[yellow]{c.dropped}[/]" if c.dropped else "0", "[red]excluded[/]" if c.excluded else "")
    console.print(t)


def _render_hygiene(report, limit: int = 10) -> None:
    thresholds = report.thresholds
    if report.same_person:
        t = Table(title=f"identities that look like the same person (centroid similarity >= {thresholds.same_person})")
        for col in ("identity A", "identity B", "similarity", "images A", "images B"):
            t.add_column(col)
        for p in report.same_person[:limit]:
            t.add_row(p["identity_a"], p["identity_b"], f"{p['similarity']:.3f}", str(p["images_a"]),
                      str(p["images_b"]))
        console.print(t)
    else:
        near = report.nearest_pairs[0] if report.nearest_pairs else None
        console.print(f"no two identities look like the same person (centroid similarity >= {thresholds.same_person})"
                      + (f"; closest pair {near['identity_a']} / {near['identity_b']} at "
                         f"{near['similarity']:.3f}" if near else ""))
    if report.outliers:
        t = Table(title=f"images that may be someone else: {len(report.outliers)} (first "
                        f"{min(limit, len(report.outliers))}; "
                        f"all in outliers.csv)")
        for col in ("chip", "similarity to own identity", "nearest other identity", "why"):
            t.add_column(col)
        for o in report.outliers[:limit]:
            t.add_row(o["output"], f"{o['own_similarity']:.3f}",
                      f"{o['nearest_identity']} {o['nearest_similarity']:.3f}" if o["nearest_identity"] else "-",
                      o["why"])
        console.print(t)
    else:
        console.print(f"no outlier images (all have similarity >= {thresholds.outlier} to their own identity, and none "
                      f"is "
                      f"more than {thresholds.outlier_margin} closer to another)")
    for checked in report.overlap_sets:
        near = checked.get("closest")
        console.print(f"evaluation set {checked['path']}: {checked['identities']} identities "
                      f"({checked['images']} faces embedded, {checked['photos_hashed']} photos hashed); "
                      f"{checked['overlapping']} identities of this set found in it (centroid similarity >= "
                      f"{thresholds.overlap}"
                      " or the same file)" + (f"; closest: {near['identity']} ~ {near['other_identity']} at "
                                              f"{near['similarity']:.3f}" if near else ""), highlight=False)
    if report.overlap:
        t = Table(title="identities also in an evaluation set: excluded from the training set")
        for col in ("identity", "evaluation set", "its identity", "similarity", "found by"):
            t.add_column(col)
        for o in report.overlap:
            t.add_row(o["identity"], o["other_set"], o["other_identity"],
                      "-" if o["similarity"] is None else f"{o['similarity']:.3f}", o["by"])
        console.print(t)


class _Reporter:
    """Progress bar (terminal) or a line every 10% (logs); one red line per unreadable file."""

    def __init__(self):
        from facepipe.train.progress import make_progress

        self.bar = make_progress("img", disable=not console.is_terminal)
        self.task = None
        self.total = self.done = 0
        self.errors = 0
        self.next_line = 1
        self.t0 = time.perf_counter()

    def start(self, total: int, done_before: int) -> None:
        self.total = total
        if done_before:
            err.print(f"resuming: {done_before} images already done, {total} to go")
        self.task = self.bar.add_task("preparing", total=total, status="")
        self.t0 = time.perf_counter()
        self.next_line = max(1, total // 10)

    def records(self, records: list[dict]) -> None:
        for r in records:
            if r.get("error"):
                self.errors += 1
                err.print(f"[bold red]error:[/] {r['error']} [dim](skipped; the run goes on)[/]", highlight=False,
                          soft_wrap=True)
        self.done += len(records)
        if self.task is not None:
            self.bar.update(self.task, advance=len(records), status=records[-1]["identity"] if records else "")
        if self.bar.disable and self.total and self.done >= self.next_line:
            rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
            err.print(f"prepare: {self.done}/{self.total} images, {rate:.1f} images/s", highlight=False)
            self.next_line = self.done + max(1, self.total // 10)

    def stage(self, text: str) -> None:
        err.print(f"[dim]{text}...[/]", highlight=False)


def prepare_command(
    src: Path = typer.Argument(..., help="Photos, one sub-folder per identity: SRC/<identity>/*.jpg (never modified).",
                               readable=False),
    dst: Path = typer.Argument(..., help="Output folder (created). Run again to resume or to add new photos."),
    faces: str = typer.Option("largest", "--faces", help="Which faces of a photo: largest | all | single-only."),
    size: Optional[int] = typer.Option(None, "--size",
        help="Chip width in pixels (template scaled); default: the template's (112)."),
    template: str = typer.Option("arcface", "--template",
        help="arcface | dlib | a JSON file with \"points\" (5 x, y pairs, chip pixels) and \"size\" (width, height)."),
    out_format: str = typer.Option("folder", "--format",
        help="folder (DST/<identity>/*.jpg) | recordio (also DST/train.rec + train.idx)."),
    image_format: str = typer.Option("jpg", "--image-format", help="jpg | png."),
    quality: int = typer.Option(95, "--quality", help="JPEG quality of the chips."),
    min_image_size: int = typer.Option(0, "--min-image-size",
        help="Drop photos whose shorter side is below this (0 = off; the seed project used 250)."),
    min_face_size: int = typer.Option(32, "--min-face-size",
        help="Drop faces whose box's shorter side is below this many pixels."),
    min_sharpness: Optional[float] = typer.Option(None, "--min-sharpness",
        help="Drop blurred chips: variance of the Laplacian below this (off by default; see the manifest's sharpness "
             "values)."),
    max_yaw: Optional[float] = typer.Option(None, "--max-yaw",
        help="Drop faces turned more than this many degrees (estimated from the landmarks; off by default)."),
    mask_ratio: float = typer.Option(0.0, "--mask-ratio",
        help="Fraction of kept faces that also get a synthetic-mask copy (<name>_mask.jpg)."),
    mask_landmarks: str = typer.Option("auto", "--mask-landmarks",
        help="68 (dlib's predictor on the box) | 5 (estimated) | auto (68 with the dlib detector)."),
    seed: int = typer.Option(0, "--seed", help="Seed for masks and the contact sheet."),
    detector: Optional[Path] = typer.Option(None, "--detector",
        help="Detector model (.onnx or .pt); default: dlib HOG + 68 landmarks."),
    detect_threshold: Optional[float] = typer.Option(None, "--detect-threshold", help="Detector score threshold."),
    recognizer: Optional[Path] = typer.Option(None, "--recognizer",
        help="Model for the hygiene embeddings; default: dlib ResNet via ONNX Runtime."),
    hygiene: bool = typer.Option(True, "--hygiene/--no-hygiene",
        help="Embed every chip and report identity problems (slower)."),
    same_person_threshold: float = typer.Option(0.97, "--same-person-threshold",
        help="Centroid similarity that flags two identities as one person (default tuned for dlib's ResNet)."),
    outlier_threshold: float = typer.Option(0.88, "--outlier-threshold",
        help="Similarity to its own identity below which an image is flagged."),
    outlier_margin: float = typer.Option(0.03, "--outlier-margin",
        help="Flag an image when another identity is this much closer than its own."),
    overlap_threshold: float = typer.Option(0.97, "--overlap-threshold",
        help="Centroid similarity to an evaluation identity that excludes an identity."),
    exclude_overlap_with: Optional[list[Path]] = typer.Option(None, "--exclude-overlap-with",
        help="Evaluation set (identity folders, or a prepared DST): its identities are dropped here. Repeatable."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (dlib's detector uses one core each)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1,
        help="Images per worker task; their chips are embedded together."),
    contact_sheet: bool = typer.Option(True, "--contact-sheet/--no-contact-sheet", help="Write DST/contact_sheet.png."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto (for ONNX/torch models)."),
    ray: Optional[str] = RayOpt,
):
    """Detect, align and filter an identity-per-folder photo set into a training set; resumable."""
    from facepipe.prepare.config import PrepareConfig, PrepareError
    from facepipe.prepare.hygiene import HygieneThresholds
    from facepipe.prepare.run import Events, RunOptions, prepare

    if out_format not in ("folder", "recordio"):
        raise PrepareError(f"--format must be folder or recordio, not {out_format!r}")
    config = PrepareConfig(faces=faces, template=template, size=size, image_format=image_format.lower().lstrip("."),
                           quality=quality, min_image_size=min_image_size, min_face_size=min_face_size,
                           min_sharpness=min_sharpness, max_yaw=max_yaw, mask_ratio=mask_ratio,
                           mask_landmarks=mask_landmarks, seed=seed, detector=str(detector) if detector else None,
                           detect_threshold=detect_threshold, recognizer=str(recognizer) if recognizer else None,
                           embed=hygiene)
    options = RunOptions(workers=workers, batch_size=batch_size, format=out_format,
                         exclude_overlap_with=list(exclude_overlap_with or []),
                         thresholds=HygieneThresholds(same_person_threshold, outlier_threshold, overlap_threshold,
                                                      outlier_margin),
                         contact_sheet=contact_sheet, device=device)
    if ray is not None:  # the chunks go to Ray actors; the manifest, resume and reports stay here
        from facepipe.scaleout import require_ray

        require_ray()
        from facepipe.scaleout.prepare import ray_runner

        options.runner = ray_runner(ray, workers if workers > 1 else None)
    reporter = _Reporter()
    try:
        with reporter.bar:
            result = prepare(src, dst, config, options, Events(reporter.start, reporter.records, reporter.stage))
    except KeyboardInterrupt:
        err.print(f"interrupted after {reporter.done} images; run the same command again to resume", highlight=False)
        raise typer.Exit(130) from None
    _render_summary(result)
    _render_identities(result)
    if result.hygiene is not None:
        _render_hygiene(result.hygiene)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False)
    sheet = [result.contact_sheet] if result.contact_sheet else []
    written = [result.dst / "manifest.jsonl"] + result.reports + sheet
    console.print("written: " + ", ".join(p.name for p in written) + f"  (in {result.dst})", highlight=False,
                  soft_wrap=True)


def pairs_command(
    dst: Path = typer.Argument(..., help="A folder made by `facepipe prepare --mask-ratio R` (R > 0)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Pairs file to write; default DST/pairs_masked.txt."),
    genuine: int = typer.Option(1000, "--genuine", min=1, help="Masked probe vs unmasked photo of the same identity."),
    impostor: int = typer.Option(1000, "--impostor", min=1, help="Masked probe vs unmasked photo of another identity."),
    seed: int = typer.Option(0, "--seed"),
):
    """Write a masked verification list: `probe reference same` lines, paths relative to DST."""
    from facepipe.prepare.manifest import read_manifest
    from facepipe.prepare.pairs import masked_pairs, write_pairs

    records = read_manifest(dst)
    out = out or Path(dst) / "pairs_masked.txt"
    pairs = masked_pairs(records, genuine, impostor, seed)
    if out.resolve().parent != Path(dst).resolve():
        err.print(f"note: paths in {out} are relative to {dst}; read it with that root (pairs.txt@{dst})",
                  highlight=False)
    genuine_written, impostor_written, skipped = write_pairs(out, pairs)
    console.print(f"wrote {out}: {genuine_written} genuine and {impostor_written} impostor pairs (masked probe vs "
                  f"unmasked reference)"
                  + (f"; {skipped} skipped (whitespace in a path)" if skipped else ""), highlight=False)
    if genuine_written < genuine or impostor_written < impostor:
        err.print(f"note: asked for {genuine} genuine / {impostor} impostor pairs; the set only allows "
                  f"{genuine_written} / {impostor_written}",
                  highlight=False)


def register(app: typer.Typer) -> None:
    app.command("prepare")(prepare_command)
    app.command("prepare-pairs")(pairs_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit("run `facepipe prepare --help`")
