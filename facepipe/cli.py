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

DetectorOpt = typer.Option(None, "--detector", help="Detector model (.onnx or .pt); default: dlib HOG + 68 landmarks.")
RecognizerOpt = typer.Option(None, "--recognizer", help="Recognizer model (.onnx or .pt); default: dlib ResNet via ONNX Runtime.")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda or auto. Asking for cuda warns loudly if it is not used.")
GalleryOpt = typer.Option(None, "--gallery", help="Gallery file (SQLite); default: your user data folder.")
WorkersOpt = typer.Option(1, "--workers", min=1, help="Worker processes (dlib's detector uses one core each).")


def _progress(unit: str = "img") -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=err, transient=False,
                    disable=not err.is_terminal)


def _spec(detector, recognizer, device, threshold=None):
    from facepipe.batch import ModelSpec

    return ModelSpec(str(detector) if detector else None, str(recognizer) if recognizer else None, device,
                     detect_threshold=threshold)


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
    gallery: Optional[Path] = GalleryOpt,
    detector: Optional[Path] = DetectorOpt,
    recognizer: Optional[Path] = RecognizerOpt,
    device: str = DeviceOpt,
    workers: int = WorkersOpt,
    reembed: bool = typer.Option(False, "--reembed", help="Convert a gallery made by another model first (needs its source photos)."),
):
    """Enroll everyone in FOLDER: the largest face of each photo; re-enrolling a photo is a no-op."""
    from facepipe.batch import build_pipeline
    from facepipe.enroll import count_images, enroll_folder, reembed_gallery
    from facepipe.gallery import Gallery

    total = count_images(folder)  # checks the folder before anything is created
    spec = _spec(detector, recognizer, device)
    pipeline = build_pipeline(spec)
    rec = pipeline.recognizer
    with Gallery(gallery) as g:
        if reembed and g.model not in (None, rec.fingerprint) and g.face_count():
            n = reembed_gallery(g, spec, rec.fingerprint, workers, pipeline=pipeline)
            err.print(f"re-embedded {n} faces with {rec.name}")
        with _progress() as bar:
            task = bar.add_task("enrolling", total=total, status="")
            report = enroll_folder(folder, g, spec, rec.fingerprint, rec.embedding_size, workers,
                                   on_item=lambda name: bar.update(task, advance=1, status=name), pipeline=pipeline)
        table = Table(title=f"Enrolled into {g.path}  (model {rec.name}, {rec.provider})")
        for col in ("person", "added", "already enrolled", "largest of several", "no face", "errors", "faces in gallery"):
            table.add_column(col, justify="left" if col == "person" else "right")
        in_gallery = {p.name: p.faces for p in g.persons()}
        for name, t in sorted(report.persons.items()):
            table.add_row(name, str(t.added), str(t.unchanged), str(t.largest_of_many), str(t.no_face),
                          f"[red]{t.errors}[/]" if t.errors else "0", str(in_gallery.get(name, 0)))
        console.print(table)
        if report.notes:
            notes = Table(title="Notes", show_header=True)
            notes.add_column("file")
            notes.add_column("what happened")
            for path, what in report.notes:
                notes.add_row(path, f"[red]{what}[/]" if what.startswith("error") else what)
            console.print(notes)
    if report.errors:
        raise typer.Exit(1)


# -- identify / detect -----------------------------------------------------------------------------
def _collect(paths: list[Path]) -> tuple[list[Path], list[str]]:
    from facepipe.runtime.image import list_images

    images, problems = list_images(paths)
    return images, [f"{p}: {why}" for p, why in problems]


@app.command()
def identify(
    paths: list[Path] = typer.Argument(..., help="Images or folders of images."),
    gallery: Optional[Path] = GalleryOpt,
    detector: Optional[Path] = DetectorOpt,
    recognizer: Optional[Path] = RecognizerOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed to name a face (default: calibrated)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Candidates listed per face."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
):
    """Name every face in every image, or call it unknown."""
    from facepipe.annotate import save_annotated
    from facepipe.batch import build_pipeline, run_images
    from facepipe.gallery import Gallery
    from facepipe.matching import choose_threshold

    images, errors = _collect(paths)
    spec = _spec(detector, recognizer, device)
    with Gallery(gallery, create=False) as g:
        if g.face_count() == 0:
            raise FacepipeError(f"{g.path}: the gallery is empty (run `facepipe enroll` first)")
        pipeline = build_pipeline(spec)
        rec = pipeline.recognizer
        if g.model != rec.fingerprint:
            raise FacepipeError(f"{g.path}: gallery made with model {g.model!r}, but the recognizer is "
                                f"{rec.fingerprint!r}; use that model or re-enroll with --reembed")
        th = choose_threshold(rec, g, threshold)
        table = _faces_table(f"threshold {th.value:.3f} ({th.source}); model {rec.name} on {rec.provider}", True)
        results = run_images(images, spec, "all", workers, keep_images=save_dir is not None, pipeline=pipeline)
        for result in _with_progress(results, "identifying", len(images), errors):
            matches = g.match([f.embedding for f in result.faces], th.value, top_k) if result.faces else []
            for face, m in zip(result.faces, matches):
                face.identity, face.similarity, face.candidates = m.identity, m.similarity, m.candidates
            _emit(result, table, as_json, True)
            if save_dir is not None:
                save_annotated(result.image, result.faces, result.path, save_dir)
    if not as_json:
        console.print(table)
    _report_errors(errors)
    if errors:
        raise typer.Exit(1)


@app.command()
def detect(
    paths: list[Path] = typer.Argument(..., help="Images or folders of images."),
    detector: Optional[Path] = DetectorOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Detector score threshold."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per image on stdout."),
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
):
    """Find faces: box, score and 5 landmarks."""
    from facepipe.annotate import save_annotated
    from facepipe.batch import build_pipeline, run_images

    images, errors = _collect(paths)
    spec = _spec(detector, None, device, threshold)
    pipeline = build_pipeline(spec, with_recognizer=False)
    table = _faces_table(f"detector {pipeline.detector.name} on {pipeline.detector.provider}", False)
    results = run_images(images, spec, "detect", workers, keep_images=save_dir is not None, pipeline=pipeline)
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
    for col in ["image", "face", "box (x1, y1, x2, y2)", "score"] + (["identity", "similarity", "candidates"] if with_identity else []):
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
    detector: Optional[Path] = DetectorOpt,
    recognizer: Optional[Path] = RecognizerOpt,
    device: str = DeviceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed for 'same person'."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Same person or not: cosine similarity of the two largest faces against the threshold."""
    import numpy as np

    from facepipe.batch import build_pipeline, run_images

    spec = _spec(detector, recognizer, device)
    pipeline = build_pipeline(spec)
    faces = []
    for result in run_images([image_a, image_b], spec, "largest", 1, pipeline=pipeline):
        if result.error:
            raise FacepipeError(result.error)
        if not result.faces:
            raise FacepipeError(f"{result.path}: no face found")
        faces.append(result.faces[0])
    similarity = float(np.dot(faces[0].embedding, faces[1].embedding))
    th = pipeline.recognizer.threshold if threshold is None else threshold
    same = similarity >= th
    if as_json:
        print(json.dumps({"a": str(image_a), "b": str(image_b), "similarity": round(similarity, 4),
                          "threshold": th, "same_person": same}))
    else:
        verdict = "[green]same person[/]" if same else "[red]different people[/]"
        console.print(f"{verdict}: similarity {similarity:.3f}, threshold {th:.3f} "
                      f"({'--threshold' if threshold is not None else pipeline.recognizer.name + ' default'})")


# -- gallery ---------------------------------------------------------------------------------------
@gallery_app.command("list")
def gallery_list(gallery: Optional[Path] = GalleryOpt):
    """Everyone enrolled, with their number of faces."""
    from datetime import datetime

    from facepipe.gallery import Gallery

    with Gallery(gallery, create=False) as g:
        table = Table(title=str(g.path))
        for col in ("person", "faces", "enrolled"):
            table.add_column(col)
        for p in g.persons():
            table.add_row(p.name, str(p.faces), datetime.fromtimestamp(p.created).strftime("%Y-%m-%d %H:%M"))
        console.print(table)


@gallery_app.command("remove")
def gallery_remove(name: str = typer.Argument(..., help="Person to remove."), gallery: Optional[Path] = GalleryOpt):
    """Remove a person and all their faces."""
    from facepipe.gallery import Gallery

    with Gallery(gallery, create=False) as g:
        n = g.remove_person(name)
    console.print(f"removed {name} ({n} faces)")


@gallery_app.command("info")
def gallery_info(gallery: Optional[Path] = GalleryOpt):
    """Where the gallery is, which model filled it, its size and search method."""
    from facepipe.gallery import Gallery
    from facepipe.matching import TARGET_FPIR

    with Gallery(gallery, create=False) as g:
        matrix, _, names = g.embeddings()
        calibrated = g.open_set_threshold(TARGET_FPIR)
        table = Table(show_header=False, title="gallery")
        for key, value in [("file", str(g.path)), ("model", str(g.model)), ("persons", str(len(names))),
                           ("faces", str(len(matrix))), ("embedding size", str(matrix.shape[1]) if len(matrix) else "-"),
                           ("search", g.search_kind),
                           ("calibrated threshold", f"{calibrated:.3f}" if calibrated is not None else
                            "n/a (fewer than 10 persons: the model default applies)")]:
            table.add_row(key, value)
        console.print(table)


# -- demo ------------------------------------------------------------------------------------------
@app.command()
def demo(workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep the demo's photos and gallery here.")):
    """Enroll a person and identify two photos, with photos that pip installed (no download)."""
    from facepipe.demo import make_demo_folder

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="facepipe-demo-"))
    people, queries = make_demo_folder(root)
    gallery_path = root / "gallery.db"
    console.print(f"[bold]1. facepipe enroll[/] {people}")
    enroll(people, gallery_path, None, None, "cpu", 1, False)
    console.print(f"[bold]2. facepipe identify[/] {' '.join(str(q) for q in queries)}")
    identify(queries, gallery_path, None, None, "cpu", None, 3, False, root / "annotated", 1)
    console.print(f"annotated copies: {root / 'annotated'}")


def _register_subsystems() -> None:
    """Training, preparation and export verbs live next to their code; each adds its own commands."""
    import importlib

    for module in ("facepipe.detection.cli", "facepipe.recognition.cli", "facepipe.prepare.cli", "facepipe.export_cli"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("facepipe"):
                continue  # that subsystem is not part of this build
            raise
        mod.register(app)


_register_subsystems()
__import__("facepipe.gallery_cli", fromlist=["register"]).register(gallery_app)  # gallery export/import/reindex


def main() -> None:
    """Entry point: user errors become one red line and exit code 1; usage errors exit 2 (typer)."""
    try:
        app()
    except FacepipeError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
