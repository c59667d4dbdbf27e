"""The video part of `facepipe identify`: run each video / camera / stream, render tracks as JSON or a table.

cli/faces.py's identify sends the sources for which `is_video_source` is true (and --camera) here:

    errors += identify_videos(engine, sources, video_options(every, max_fps, start, end, top_k, threshold),
                              as_json, save_dir, console)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facepipe.cli.console import err as stderr_console
from facepipe.errors import FacepipeError
from facepipe.video.identify import TrackRecord, VideoOptions, identify_video
from facepipe.video.source import describe, is_url, is_video_source  # noqa: F401  (is_video_source: for cli.py)
from facepipe.video.writer import annotated_path


def parse_time(text: str | float | None, option: str) -> float | None:
    """Seconds from "90", "90.5", "1:30" or "0:01:30"."""
    if text is None or isinstance(text, (int, float)):
        return text
    try:
        value = 0.0
        for part in str(text).strip().split(":"):
            value = value * 60 + float(part)
    except ValueError:
        raise FacepipeError(f"{option} {text!r}: expected seconds (90.5), m:ss (1:30) or h:mm:ss (0:01:30)") from None
    if value < 0:
        raise FacepipeError(f"{option} {text!r}: must not be negative")
    return value


def video_options(every: int = 3, max_fps: float | None = None, start: str | None = None, end: str | None = None,
                  top_k: int = 3, threshold: float | None = None, stream_timeout: float = 5.0,
                  second_chance: bool = False) -> VideoOptions:
    """The identify command's video options, checked; times as seconds, m:ss or h:mm:ss."""
    if every < 1:
        raise FacepipeError(f"--every {every}: must be 1 or more")
    if max_fps is not None and max_fps <= 0:
        raise FacepipeError(f"--max-fps {max_fps:g}: must be more than 0")
    if not stream_timeout > 0:
        raise FacepipeError(f"--stream-timeout {stream_timeout:g}: must be more than 0")
    return VideoOptions(every=every, max_fps=max_fps, start=parse_time(start, "--start"),
                        end=parse_time(end, "--end"), top_k=top_k, threshold=threshold, stream_timeout=stream_timeout,
                        second_chance=second_chance)


def _progress(err: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed} frames"), TextColumn("{task.fields[fps]}"), TimeElapsedColumn(),
                    console=err, transient=False, disable=not err.is_terminal)


def _expected_frames(info, options: VideoOptions) -> int | None:
    """Frames the run will take from a file (the bar's total); None for live sources."""
    if not info.frame_count:
        return None
    first = (options.start or 0.0) * info.fps
    last = info.frame_count if options.end is None else min(info.frame_count, options.end * info.fps)
    frames = max(0.0, last - first)
    if options.max_fps:
        frames *= min(1.0, options.max_fps / info.fps)
    return int(round(frames))


def _track_table(name: str, caption: str) -> Table:
    table = Table(title=escape(name), caption=caption)
    for col in ("track", "from (s)", "to (s)", "identity", "similarity", "candidates", "embedded"):
        table.add_column(col, justify="left" if col in ("identity", "candidates") else "right")
    return table


def _row(record: TrackRecord) -> list[str]:
    name = f"[green]{escape(record.identity)}[/]" if record.identity else "[red]unknown[/]"
    cands = ", ".join(f"{escape(c.identity)} {c.similarity:.2f}" for c in record.candidates)
    sim = "-" if record.similarity is None else f"{record.similarity:.3f}"
    return [str(record.track), f"{record.start:.2f}", f"{record.end:.2f}", name, sim, cands, str(record.embedded)]


def identify_videos(engine, sources: list[str | int], options: VideoOptions, as_json: bool,
                    save_dir: Path | None, console: Console, err: Console | None = None, sinks: list | None = None,
                    event_crops: bool = False) -> list[str]:
    """Identify every source in turn; return one error line per source that failed.

    JSON: one object per track on stdout as each track ends. Otherwise a table per source. Ctrl-C ends the
    current source cleanly (open tracks reported, annotated video kept) and skips the rest."""
    err = err or stderr_console
    errors: list[str] = []
    for source in sources:
        name = describe(source)
        records: list[TrackRecord] = []

        def emit(record: TrackRecord) -> None:
            records.append(record)
            if as_json:
                sys.stdout.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
                sys.stdout.flush()

        try:
            target = None
            if save_dir is not None:
                is_file = not isinstance(source, int) and not is_url(str(source))
                target = annotated_path(name, Path(save_dir), is_file)
            on_event = None
            if sinks:
                from facepipe.video.events import publish

                on_event = lambda kind, record, crop: publish(sinks, kind, record, crop)  # noqa: E731
            run = identify_video(engine, source, options, annotate_to=target, on_event=on_event,
                                 event_crops=event_crops)  # a bad source fails here
            with _progress(err) as bar:
                task = bar.add_task(escape(name), total=_expected_frames(run.info, options), fps="")
                clock = {"frames": 0, "t": bar.get_time()}

                def on_frame(frames: int, t: float, shown) -> None:
                    now = bar.get_time()
                    if now - clock["t"] >= 0.5:  # frames per second over the last half second or more
                        bar.update(task, fps=f"{(frames - clock['frames']) / (now - clock['t']):.1f} frames/s")
                        clock.update(frames=frames, t=now)
                    bar.update(task, completed=frames)

                run.on_frame = on_frame
                try:
                    for record in run:  # a Ctrl-C inside the run ends it cleanly (run.interrupted)
                        emit(record)
                except KeyboardInterrupt:  # one that lands here, between records
                    run.interrupted = True
                    for record in run.stop():
                        emit(record)
                finally:
                    run.close()
        except FacepipeError as exc:
            errors.append(str(exc))
            continue
        if not as_json:
            threshold_used = run.threshold
            caption = (f"{run.frames} frames, detection every {options.every}; threshold {threshold_used.value:.3f} "
                       f"({threshold_used.source})" + (f"; annotated: {run.saved}" if run.saved else ""))
            table = _track_table(name, caption)
            for record in sorted(records, key=lambda r: r.track):
                table.add_row(*_row(record))
            if not records:
                table.add_row("-", "", "", "no face found", "", "", "")
            console.print(table)
        elif run.saved:
            err.print(f"annotated: {run.saved}", highlight=False)
        if run.interrupted:
            err.print(f"stopped (Ctrl-C) at {name}", highlight=False)
            break
    return errors
