"""`facepipe enroll | identify | detect | verify`: the verbs over photos (videos go on to cli/video.py)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from facepipe.cli.console import console, err, print_error, progress
from facepipe.cli.options import (
    BatchOpt,
    DetectorOpt,
    DeviceOpt,
    EventCropsOpt,
    GalleryOpt,
    JsonOpt,
    MqttOpt,
    RayOpt,
    RecognizerOpt,
    SecondChanceOpt,
    WebhookOpt,
    WorkersOpt,
    open_engine,
)
from facepipe.errors import FacepipeError


def _with_progress(results, label: str, total: int, errors: list[str]):
    """Yield the images that worked, under a progress bar; collect the others' errors."""
    with progress() as bar:
        task = bar.add_task(label, total=total, status="")
        for result in results:
            bar.update(task, advance=1, status=result.path.name)
            if result.error:
                errors.append(result.error)
            else:
                yield result


def _report_errors(results_errors: list[str]) -> None:
    for message in results_errors:
        print_error(message)


# -- enroll ----------------------------------------------------------------------------------------
def enroll(
    folder: Path = typer.Argument(..., help="Folder with one subfolder per person (nested images allowed).",
                                readable=False),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    second_chance: bool = SecondChanceOpt,
    workers: int = WorkersOpt,
    reembed: bool = typer.Option(False, "--reembed", help="Convert a gallery made by another model first (needs its "
                                                          "source photos)."),
    ray: Optional[str] = RayOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="With --ray: the job folder (resume manifest, errors.txt); "
                                                           "default: beside the gallery file."),
    batch_size: int = BatchOpt,
):
    """Enroll everyone in FOLDER: the largest face of each photo; re-enrolling a photo is a no-op."""
    from facepipe.pipeline.enroll import NO_FACE_NOTE
    from facepipe.runtime.folders import scan_identity_folders

    if ray is not None:
        from facepipe.cli.ray_jobs import enroll_ray

        enroll_ray(str(folder), gallery, detector, recognizer, device, workers, ray, out, batch_size,
                   second_chance=second_chance)
        return

    total = scan_identity_folders(folder, "person").image_count  # checks the folder before anything is created
    with open_engine(gallery, detector, recognizer, device, second_chance=second_chance) as engine:
        recognizer_used = engine.recognizer
        with progress() as bar:
            task = bar.add_task("enrolling", total=total, status="")
            report = engine.enroll_folder(folder, workers, on_item=lambda name: bar.update(task, advance=1,
                                                                                           status=name),
                                      reembed=reembed)
        table = Table(title=f"Enrolled into {engine.gallery().path}  "
                            f"(model {recognizer_used.name}, {recognizer_used.provider})")
        for col in ("person", "added", "already enrolled", "largest of several", "no face", "errors",
                    "faces in gallery"):
            table.add_column(col, justify="left" if col == "person" else "right")
        in_gallery = {p.name: p.faces for p in engine.persons()}
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
        _no_face_summary([Path(path) for path, what in report.notes if what == NO_FACE_NOTE], total)
    if report.errors:
        raise typer.Exit(1)


# -- identify / detect -----------------------------------------------------------------------------
def _collect(paths: list[Path]) -> tuple[list[Path], list[str]]:
    from facepipe.runtime.image import list_images

    images, problems = list_images(paths)
    return images, [f"{p}: {why}" for p, why in problems]


def identify(
    paths: Optional[list[str]] = typer.Argument(None, help="Images, folders of images, videos or stream URLs (rtsp://, "
                                                           "http://)."),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    second_chance: bool = SecondChanceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed to name a face (default: "
                                                                        "calibrated)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Candidates listed per face."),
    as_json: bool = JsonOpt,
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
    camera: Optional[int] = typer.Option(None, "--camera", help="Identify from this camera (index, e.g. 0) until "
                                                                "Ctrl-C."),
    every: int = typer.Option(3, "--every", min=1, help="Videos: detect on every Nth frame, track faces in between."),
    max_fps: Optional[float] = typer.Option(None, "--max-fps", help="Videos: take at most this many frames per "
                                                                    "second."),
    start: Optional[str] = typer.Option(None, "--start", help="Videos: start here (seconds, m:ss or h:mm:ss)."),
    end: Optional[str] = typer.Option(None, "--end", help="Videos: stop here (seconds, m:ss or h:mm:ss)."),
    stream_timeout: float = typer.Option(5.0, "--stream-timeout", help="Streams: seconds a server may stay silent "
                                                                       "(opening, or between frames) before it "
                                                                       "counts as gone."),
    video_second_chance: bool = typer.Option(False, "--video-second-chance",
                                             help="Videos: where a frame shows no face, let the detector try its "
                                                  "second chance too (photos always get it; costly per frame)."),
    webhook: Optional[str] = WebhookOpt,
    mqtt: Optional[str] = MqttOpt,
    event_crops: bool = EventCropsOpt,
    ray: Optional[str] = RayOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="With --ray: write the records here as shards (and "
                                                           "errors.txt); a rerun skips the photos already there."),
    out_format: str = typer.Option("jsonl", "--format", help="With --ray --out: jsonl or parquet shards."),
    batch_size: int = BatchOpt,
):
    """Name every face in every image, video or stream, or call it unknown."""
    from facepipe.cli.video import identify_videos, is_video_source, video_options

    paths = paths or []
    if ray is not None:
        from facepipe.cli.ray_jobs import identify_ray

        identify_ray(paths, gallery, detector, recognizer, device, threshold, top_k, as_json, workers, ray, out,
                     out_format, batch_size, save_dir is not None or camera is not None, second_chance=second_chance)
        return
    if not paths and camera is None:
        raise FacepipeError("nothing to identify: give images, videos, stream URLs or --camera N")
    videos = [p for p in paths if is_video_source(p)] + ([camera] if camera is not None else [])
    options = video_options(every, max_fps, start, end, top_k, threshold, stream_timeout,
                            video_second_chance) if videos else None
    stills = [Path(p) for p in paths if not is_video_source(p)]
    images, errors = _collect(stills) if stills else ([], [])
    if not images and not videos:  # nothing to read: say why before a gallery or a model is opened
        _report_errors(errors)
        raise typer.Exit(1)
    with open_engine(gallery, detector, recognizer, device, second_chance=second_chance) as engine:
        if images or not videos:
            results = engine.identify_paths(images, top_k, threshold, workers, keep_images=save_dir is not None)
            threshold_used = engine.threshold(threshold)
            recognizer_used = engine.recognizer
            _render_photos(results, len(images), errors, "identifying", as_json, save_dir,
                           f"threshold {threshold_used.value:.3f} ({threshold_used.source}); "
                           f"model {recognizer_used.name} on {recognizer_used.provider}", with_identity=True)
        if videos:
            from facepipe.video.events import close_sinks, open_sinks

            sinks = open_sinks(webhook=webhook, mqtt=mqtt)
            try:
                errors += identify_videos(engine, videos, options, as_json, save_dir, console, err, sinks, event_crops)
            finally:
                close_sinks(sinks)
    _report_errors(errors)
    if errors:
        raise typer.Exit(1)


def detect(
    paths: list[Path] = typer.Argument(..., help="Images or folders of images.", readable=False),
    detector: Optional[str] = DetectorOpt,
    device: str = DeviceOpt,
    second_chance: bool = SecondChanceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Detector score threshold."),
    as_json: bool = JsonOpt,
    save_dir: Optional[Path] = typer.Option(None, "--save-dir", help="Write annotated copies here."),
    workers: int = WorkersOpt,
):
    """Find faces: box, score and 5 landmarks."""
    images, errors = _collect(paths)
    if not images:  # nothing to read: say why before a model is loaded
        _report_errors(errors)
        raise typer.Exit(1)
    engine = open_engine(None, detector, None, device, threshold, second_chance)
    results = engine.detect_paths(images, threshold, workers, keep_images=save_dir is not None)
    _render_photos(results, len(images), errors, "detecting", as_json, save_dir,
                   f"detector {engine.detector.name} on {engine.detector.provider}", with_identity=False)
    _report_errors(errors)
    if errors:
        raise typer.Exit(1)


def _render_photos(results, total: int, errors: list[str], label: str, as_json: bool, save_dir: Optional[Path],
                   caption: str, with_identity: bool) -> None:
    """identify's and detect's output for photos: a JSON line or a table row each (annotated copies when asked),
    then the table and the photos where no face was found."""
    from facepipe.pipeline.annotate import save_annotated

    table = _faces_table(caption, with_identity)
    no_face = []
    for result in _with_progress(results, label, total, errors):
        _emit(result, table, as_json, with_identity)
        if not result.faces:
            no_face.append(result.path)
        if save_dir is not None:
            save_annotated(result.image, result.faces, result.path, save_dir, with_identity=with_identity)
    if not as_json:
        if table.row_count:  # every photo failed: the error lines alone say so
            console.print(table)
        _no_face_summary(no_face, total)


def _faces_table(caption: str, with_identity: bool) -> Table:
    table = Table(caption=caption)
    table.add_column("image", overflow="fold")  # long paths wrap instead of losing the file name
    for col in ["face", "box (x1, y1, x2, y2)", "score"] + (["identity", "similarity",
                                                             "candidates"] if with_identity else []):
        table.add_column(col)
    return table


def _no_face_summary(paths: list[Path], total: int, shown: int = 20) -> None:
    """One line naming the photos where no face was found, the detector's second chance included."""
    if not paths:
        return
    names = ", ".join(_short(p) for p in paths[:shown]) + (f", ... ({len(paths) - shown} more)" if len(paths) > shown
                                                            else "")
    console.print(f"[yellow]no face found[/] in {len(paths)} of {total} photo(s) (after the detector's second chance, "
                  f"where it has one): {names}", highlight=False, soft_wrap=True)


def _short(path: Path) -> str:
    """Paths relative to the current folder when they are inside it: tables stay readable."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(Path(path.parent.name) / path.name)  # the full path is in --json


def _emit(result, table: Table, as_json: bool, with_identity: bool) -> None:
    from facepipe.runtime.detectors.dlib_detector import SECOND_CHANCE_PASSES

    if as_json:
        from facepipe.types import image_record

        record = image_record(str(result.path), result.faces, with_identity)
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
        sys.stdout.flush()
        return
    if not result.faces:
        table.add_row(_short(result.path), "-", "no face found", "", *([""] * 3 if with_identity else []))
    for i, face in enumerate(result.faces):
        box = ", ".join(f"{v:.0f}" for v in face.box)
        score = f"{face.score:.2f}" + (f" ({face.detector_pass})" if face.detector_pass in SECOND_CHANCE_PASSES else "")
        row = [_short(result.path) if i == 0 else "", str(i + 1), box, score]
        if with_identity:
            name = f"[green]{face.identity}[/]" if face.identity else "[red]unknown[/]"
            cands = ", ".join(f"{c.identity} {c.similarity:.2f}" for c in face.candidates)
            row += [name, f"{face.similarity:.3f}", cands]
        table.add_row(*row)


# -- verify ----------------------------------------------------------------------------------------
def verify(
    image_a: Path = typer.Argument(..., help="First photo (its largest face is used).", readable=False),
    image_b: Path = typer.Argument(..., help="Second photo (its largest face is used).", readable=False),
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    second_chance: bool = SecondChanceOpt,
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed for 'same person'."),
    as_json: bool = JsonOpt,
):
    """Same person or not: the similarity of the two largest faces against the threshold."""
    v = open_engine(None, detector, recognizer, device, second_chance=second_chance).verify(image_a, image_b, threshold)
    if as_json:
        print(json.dumps({"a": str(image_a), "b": str(image_b), "similarity": round(v.similarity, 4),
                          "threshold": v.threshold, "same_person": v.same_person}))
    else:
        verdict = "[green]same person[/]" if v.same_person else "[red]different people[/]"
        console.print(f"{verdict}: similarity {v.similarity:.3f}, threshold {v.threshold:.3f} ({v.threshold_source})")




def register(app: typer.Typer) -> None:
    for verb in (enroll, identify, detect, verify):
        app.command()(verb)
