"""The `facepipe` command: parse, call the library, render with rich. No logic of its own."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facepipe.errors import FacepipeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Face pipeline: detect, align, recognize; train your own detector and recognizer.")
gallery_app = typer.Typer(no_args_is_help=True, help="Look into and edit the gallery.")
app.add_typer(gallery_app, name="gallery")
# Piped or captured output gets room for the tables instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 140)

DetectorOpt = typer.Option(None, "--detector", help="A named model (yunet), a third-party or facepipe ONNX file, or a .pt checkpoint; default: dlib HOG + 68 landmarks.")
RecognizerOpt = typer.Option(None, "--recognizer", help="A named model (sface), a third-party or facepipe ONNX file, or a .pt checkpoint; default: dlib ResNet via ONNX Runtime.")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda or auto. Asking for cuda warns loudly if it is not used.")
GalleryOpt = typer.Option(None, "--gallery", help="Gallery file (SQLite); default: your user data folder.")
WorkersOpt = typer.Option(1, "--workers", min=1, help="Worker processes (dlib's detector uses one core each); with --ray, actors (default: one per CPU, or per GPU on cuda).")
BatchOpt = typer.Option(8, "--batch-size", min=1, help="With --ray: photos per actor call.")
RayOpt = typer.Option(None, "--ray", help="Run as a Ray Data job: --ray (a local cluster, or $RAY_ADDRESS), --ray auto (the running cluster), --ray HOST:PORT or ray://HOST:PORT. Needs Ray, the ray extra of facepipe (docs/ray.md).")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err, transient=False,
                    disable=not err.is_terminal)


def _engine(gallery=None, detector=None, recognizer=None, device="cpu", detect_threshold=None):
    from facepipe.engine import Engine

    return Engine(gallery, detector, recognizer, device, detect_threshold=detect_threshold)


def _with_progress(results, label: str, total: int, errors: list[str]):
    """Yield the images that worked, under a progress bar; collect the others' errors."""
    with _progress() as bar:
        task = bar.add_task(label, total=total, status="")
        for result in results:
            bar.update(task, advance=1, status=result.path.name)
            if result.error:
                errors.append(result.error)
            else:
                yield result


def _report_errors(results_errors: list[str]) -> None:
    for message in results_errors:
        err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


# -- enroll ----------------------------------------------------------------------------------------
@app.command()
def enroll(
    folder: Path = typer.Argument(..., help="Folder with one subfolder per person (nested images allowed)."),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    workers: int = WorkersOpt,
    reembed: bool = typer.Option(False, "--reembed", help="Convert a gallery made by another model first (needs its source photos)."),
    ray: Optional[str] = RayOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="With --ray: the job folder (resume manifest, errors.txt); default: beside the gallery file."),
    batch_size: int = BatchOpt,
):
    """Enroll everyone in FOLDER: the largest face of each photo; re-enrolling a photo is a no-op."""
    from facepipe.runtime.folders import scan_identity_folders

    if ray is not None:
        _enroll_ray(str(folder), gallery, detector, recognizer, device, workers, ray, out, batch_size)
        return
    total = scan_identity_folders(folder, "person").image_count  # checks the folder before anything is created
    with _engine(gallery, detector, recognizer, device) as fp:
        rec = fp.recognizer
        with _progress() as bar:
            task = bar.add_task("enrolling", total=total, status="")
            report = fp.enroll_folder(folder, workers, on_item=lambda name: bar.update(task, advance=1, status=name),
                                      reembed=reembed)
        g = fp.gallery()
        table = Table(title=f"Enrolled into {g.path}  (model {rec.name}, {rec.provider})")
        for col in ("person", "added", "already enrolled", "largest of several", "no face", "errors", "faces in gallery"):
            table.add_column(col, justify="left" if col == "person" else "right")
        in_gallery = {p.name: p.faces for p in fp.persons()}
        for name, t in sorted(report.persons.items()):
            table.add_row(name, str(t.added), str(t.unchanged), str(t.largest_of_many), str(t.no_face),
                          f"[red]{t.errors}[/]" if t.errors else "0", str(in_gallery.get(name, 0)))
        console.print(table)
        if report.notes:
            notes = Table(title="Notes", show_header=True)
            notes.add_column("file", overflow="fold")
            notes.add_column("what happened")
            for path, what in report.notes:
                notes.add_row(path, f"[red]{what}[/]" if what.startswith("error") else what)
            console.print(notes)
    if report.errors:
        raise typer.Exit(1)


def _ray_summary(summary, title: str, to: Optional[Console] = None) -> None:
    """The table every --ray job ends with."""
    table = Table(title=title, show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("photos", summary.photos), ("processed in this run", summary.processed),
            ("skipped: done before (resume)", summary.skipped)]
    if summary.known:
        rows.append(("skipped: already in the gallery", summary.known))
    rows += [("faces", summary.faces), ("no face", summary.no_face),
             ("[red]unreadable[/]" if summary.unreadable else "unreadable", summary.unreadable),
             ("wall time", f"{summary.seconds:.1f} s"), ("photos/s", f"{summary.rate:.2f}"),
             ("actors", summary.actors)]
    for what, value in rows:
        table.add_row(what, str(value))
    (to or console).print(table)
    if summary.unreadable or summary.problems:
        err.print(f"[yellow]{summary.unreadable + len(summary.problems)} problem(s), one line each in "
                  f"{summary.errors_file}[/]", highlight=False)


def _enroll_ray(folder: str, gallery, detector, recognizer, device: str, workers: int, address: str,
                out: Optional[Path], batch_size: int) -> None:
    from facepipe.scaleout import require_ray

    require_ray()
    from facepipe.scaleout import verbs

    with _engine(gallery, detector, recognizer, device) as fp:
        report, summary = verbs.enroll(fp, [folder], out, address, workers, batch_size)
        rec, g = fp.recognizer, fp.gallery()
        if len(report.persons) <= 50:  # an archive of 200,000 persons gets the totals only
            table = Table(title=f"Enrolled into {g.path}  (model {rec.name})")
            for col in ("person", "added", "already enrolled", "largest of several", "no face", "errors"):
                table.add_column(col, justify="left" if col == "person" else "right")
            for name, t in sorted(report.persons.items()):
                table.add_row(name, str(t.added), str(t.unchanged), str(t.largest_of_many), str(t.no_face),
                              f"[red]{t.errors}[/]" if t.errors else "0")
            console.print(table)
        added = sum(t.added for t in report.persons.values())
        _ray_summary(summary, f"enroll --ray: {added} faces added to {g.path}; job folder {summary.out}")
    if report.errors:
        raise typer.Exit(1)


# -- identify / detect -----------------------------------------------------------------------------
def _collect(paths: list[Path]) -> tuple[list[Path], list[str]]:
    from facepipe.runtime.image import list_images

    images, problems = list_images(paths)
    return images, [f"{p}: {why}" for p, why in problems]


@app.command()
def identify(
    paths: Optional[list[str]] = typer.Argument(None, help="Images, folders of images, videos or stream URLs (rtsp://, http://)."),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed to name a face (default: calibrated)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Candidates listed per face."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image (per track for videos) on stdout."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
    camera: Optional[int] = typer.Option(None, "--camera", help="Identify from this camera (index, e.g. 0) until Ctrl-C."),
    every: int = typer.Option(3, "--every", min=1, help="Videos: detect on every Nth frame, track faces in between."),
    max_fps: Optional[float] = typer.Option(None, "--max-fps", help="Videos: take at most this many frames per second."),
    start: Optional[str] = typer.Option(None, "--start", help="Videos: start here (seconds, m:s or h:m:s)."),
    end: Optional[str] = typer.Option(None, "--end", help="Videos: stop here (seconds, m:s or h:m:s)."),
    ray: Optional[str] = RayOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="With --ray: write the records here as shards (and errors.txt); a rerun skips the photos already there."),
    out_format: str = typer.Option("jsonl", "--format", help="With --ray --out: jsonl or parquet shards."),
    batch_size: int = BatchOpt,
):
    """Name every face in every image, video or stream, or call it unknown."""
    from facepipe.annotate import save_annotated
    from facepipe.video.cli import identify_videos, is_video_source, video_options

    paths = paths or []
    if ray is not None:
        _identify_ray(paths, gallery, detector, recognizer, device, threshold, top_k, as_json, workers, ray, out,
                      out_format, batch_size, save_dir is not None or camera is not None)
        return
    if not paths and camera is None:
        raise FacepipeError("nothing to identify: give images, videos, stream URLs or --camera N")
    videos = [p for p in paths if is_video_source(p)] + ([camera] if camera is not None else [])
    options = video_options(every, max_fps, start, end, top_k, threshold) if videos else None
    images, errors = _collect([Path(p) for p in paths if not is_video_source(p)]) if len(videos) < len(paths) else ([], [])
    with _engine(gallery, detector, recognizer, device) as fp:
        if images or not videos:
            results = fp.identify_paths(images, top_k, threshold, workers, keep_images=save_dir is not None)
            th = fp.threshold(threshold)
            rec = fp.recognizer
            table = _faces_table(f"threshold {th.value:.3f} ({th.source}); model {rec.name} on {rec.provider}", True)
            for result in _with_progress(results, "identifying", len(images), errors):
                _emit(result, table, as_json, True)
                if save_dir is not None:
                    save_annotated(result.image, result.faces, result.path, save_dir)
            if not as_json:
                console.print(table)
        if videos:
            errors += identify_videos(fp, videos, options, as_json, save_dir, console, err)
    _report_errors(errors)
    if errors:
        raise typer.Exit(1)


def _identify_ray(paths: list[str], gallery, detector, recognizer, device: str, threshold, top_k: int, as_json: bool,
                  workers: int, address: str, out: Optional[Path], out_format: str, batch_size: int,
                  local_only: bool) -> None:
    from facepipe.scaleout import require_ray

    if local_only:
        raise FacepipeError("--ray identifies photos into --out shards; --save-dir and --camera run without --ray")
    if out is None:
        raise FacepipeError("--ray writes its records to a folder: add --out DIR")
    if out_format not in ("jsonl", "parquet"):
        raise FacepipeError(f"--format {out_format!r}: expected jsonl or parquet")
    if not paths:
        raise FacepipeError("nothing to identify: give photos or folders (local paths or s3://, gs://, file:// URIs)")
    require_ray()
    from facepipe.scaleout import verbs

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    with _engine(gallery, detector, recognizer, device) as fp:
        summary, th = verbs.identify(fp, paths, out, out_format, threshold, top_k, address, workers, batch_size,
                                     on_record=emit if as_json else None)
    (err if as_json else console).print(
        f"threshold {th.value:.3f} ({th.source}); records in {out}", highlight=False)
    _ray_summary(summary, "identify --ray", err if as_json else console)  # with --json the records own stdout
    if summary.unreadable or summary.problems:
        raise typer.Exit(1)


@app.command()
def detect(
    paths: list[Path] = typer.Argument(..., help="Images or folders of images."),
    detector: Optional[str] = DetectorOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Detector score threshold."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
):
    """Find faces: box, score and 5 landmarks."""
    from facepipe.annotate import save_annotated

    images, errors = _collect(paths)
    fp = _engine(None, detector, None, device, threshold)
    results = fp.detect_paths(images, threshold, workers, keep_images=save_dir is not None)
    table = _faces_table(f"detector {fp.detector.name} on {fp.detector.provider}", False)
    for result in _with_progress(results, "detecting", len(images), errors):
        _emit(result, table, as_json, False)
        if save_dir is not None:
            save_annotated(result.image, result.faces, result.path, save_dir, with_identity=False)
    if not as_json:
        console.print(table)
    _report_errors(errors)
    if errors:
        raise typer.Exit(1)


def _faces_table(caption: str, with_identity: bool) -> Table:
    table = Table(caption=caption)
    table.add_column("image", overflow="fold")  # long paths wrap instead of losing the file name
    for col in ["face", "box (x1, y1, x2, y2)", "score"] + (["identity", "similarity", "candidates"] if with_identity else []):
        table.add_column(col)
    return table
def _short(path: Path) -> str:
    """Paths relative to the current folder when they are inside it: tables stay readable."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(path.parent.name) / path.name)  # the full path is in --json


def _emit(result, table: Table, as_json: bool, with_identity: bool) -> None:
    if as_json:
        record = {"image": str(result.path), "faces": [f.to_json(with_identity) for f in result.faces]}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    if not result.faces:
        table.add_row(_short(result.path), "-", "no face found", "", *([""] * 3 if with_identity else []))
    for i, face in enumerate(result.faces):
        box = ", ".join(f"{v:.0f}" for v in face.box)
        row = [_short(result.path) if i == 0 else "", str(i + 1), box, f"{face.score:.2f}"]
        if with_identity:
            name = f"[green]{face.identity}[/]" if face.identity else "[red]unknown[/]"
            cands = ", ".join(f"{c.identity} {c.similarity:.2f}" for c in face.candidates)
            row += [name, f"{face.similarity:.3f}", cands]
        table.add_row(*row)


# -- verify ----------------------------------------------------------------------------------------
@app.command()
def verify(
    image_a: Path = typer.Argument(..., help="First photo (its largest face is used)."),
    image_b: Path = typer.Argument(..., help="Second photo (its largest face is used)."),
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed for 'same person'."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Same person or not: the similarity of the two largest faces against the threshold."""
    v = _engine(None, detector, recognizer, device).verify(image_a, image_b, threshold)
    if as_json:
        print(json.dumps({"a": str(image_a), "b": str(image_b), "similarity": round(v.similarity, 4),
                          "threshold": v.threshold, "same_person": v.same_person}))
    else:
        verdict = "[green]same person[/]" if v.same_person else "[red]different people[/]"
        console.print(f"{verdict}: similarity {v.similarity:.3f}, threshold {v.threshold:.3f} ({v.threshold_source})")


# -- gallery ---------------------------------------------------------------------------------------
@gallery_app.command("list")
def gallery_list(gallery: Optional[str] = GalleryOpt):
    """Everyone enrolled, with their number of faces."""
    from datetime import datetime

    with _engine(gallery) as fp:
        table = Table(title=str(fp.gallery().path))
        for col in ("person", "faces", "enrolled"):
            table.add_column(col)
        for p in fp.persons():
            table.add_row(p.name, str(p.faces), datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M"))
        console.print(table)


@gallery_app.command("remove")
def gallery_remove(name: str = typer.Argument(..., help="Person to remove."), gallery: Optional[str] = GalleryOpt):
    """Remove a person and all their faces."""
    with _engine(gallery) as fp:
        n = fp.remove(name)
    console.print(f"removed {name} ({n} faces)")


@gallery_app.command("info")
def gallery_info(gallery: Optional[str] = GalleryOpt, recognizer: Optional[str] = RecognizerOpt,
                 as_json: bool = typer.Option(False, "--json")):
    """Where the gallery is, which model filled it, its size, search method and threshold."""
    with _engine(gallery, recognizer=recognizer) as fp:
        info = fp.info()
    if as_json:
        print(json.dumps(info))
        return
    calibrated = info["calibrated_threshold"]
    table = Table(show_header=False, title="gallery")
    rows = [("file", info["gallery"]), ("model", str(info["model"])), ("persons", str(info["persons"])),
            ("faces", str(info["faces"])), ("embedding size", str(info["embedding_size"] or "-")),
            ("search", info["search"]),
            ("calibrated threshold", f"{calibrated:.3f}" if calibrated is not None else info["calibration"])]
    if info["threshold"] is not None:
        rows.append(("threshold used", f"{info['threshold']:.3f} ({info['threshold_source']})"))
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


# -- demo ------------------------------------------------------------------------------------------
@app.command()
def demo(workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep the demo's photos and gallery here.")):
    """Enroll a person and identify two photos, with photos that pip installed (no download)."""
    from facepipe.demo import make_demo_folder

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="facepipe-demo-"))
    people, queries = make_demo_folder(root)
    gallery_path = str(root / "gallery.db")
    console.print(f"[bold]1. facepipe enroll[/] {people}")
    enroll(people, gallery_path, None, None, "cpu", 1, False, ray=None, out=None, batch_size=8)
    console.print(f"[bold]2. facepipe identify[/] {' '.join(str(q) for q in queries)}")
    identify([str(q) for q in queries], gallery_path, None, None, "cpu", None, 3, False, root / "annotated", 1,
             None, 3, None, None, None, ray=None, out=None, out_format="jsonl", batch_size=8)
    console.print(f"annotated copies: {root / 'annotated'}")


# Training, preparation and export verbs live next to their code; each module adds its own commands.
SUBSYSTEMS = ("facepipe.detection.cli", "facepipe.recognition.cli", "facepipe.prepare.cli", "facepipe.export_cli",
              "facepipe.models_cli", "facepipe.serve.cli")


def _register_subsystems() -> None:
    import importlib

    for module in SUBSYSTEMS:
        importlib.import_module(module).register(app)


_register_subsystems()

def _register_gallery_verbs() -> None:
    from facepipe.gallery_cli import register  # gallery export / import / reindex

    register(gallery_app)


_register_gallery_verbs()


def _ray_flag_value(argv: list[str]) -> list[str]:
    """`--ray` may stand alone: give it the value "local" unless the next word is a cluster address
    (auto, local, HOST:PORT, ray://...), so `identify photos/ --ray` and `identify --ray auto photos/` both work."""
    import re

    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        is_address = nxt is not None and (nxt in ("auto", "local") or nxt.startswith("ray://")
                                          or re.fullmatch(r"[\w.-]+:\d+", nxt) is not None)
        out.append("--ray=local" if arg == "--ray" and not is_address else arg)
    return out


def main() -> None:
    """Entry point: user errors become one red line and exit code 1; usage errors exit 2 (typer)."""
    try:
        app(_ray_flag_value(sys.argv[1:]))
    except FacepipeError as exc:
        from rich.markup import escape

        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)  # [brackets] are text
        sys.exit(1)


if __name__ == "__main__":
    main()
