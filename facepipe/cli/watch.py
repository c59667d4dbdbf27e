"""`facepipe watch SOURCE...`: several cameras, streams or files at once until SIGTERM / Ctrl-C (video/watch.py),
records on stdout, events to a webhook and MQTT, a status table per source on stderr."""
from __future__ import annotations

import json
import signal
import sys
from contextlib import nullcontext
from typing import Optional

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from facepipe.cli.console import console, err
from facepipe.cli.options import (
    DetectorOpt,
    DeviceOpt,
    EventCropsOpt,
    GalleryOpt,
    JsonOpt,
    MqttOpt,
    RecognizerOpt,
    WebhookOpt,
    open_engine,
)
from facepipe.errors import FacepipeError


def status_table(watcher, sinks) -> Table:
    table = Table(title="facepipe watch", caption=_sink_caption(sinks))
    for col in ("source", "state", "frames/s", "frames", "dropped", "tracks open", "tracks ended", "connects"):
        table.add_column(col, justify="left" if col in ("source", "state") else "right")
    for s in watcher.statuses:
        colour = {"live": "green", "retrying": "yellow"}.get(s.state, "white")
        state = f"[{colour}]{s.state}[/]" + (f" ({escape(s.detail)})" if s.detail else "")
        table.add_row(escape(s.name), state, f"{s.fps:.1f}", str(s.frames_done), str(s.dropped), str(s.tracks_open),
                      str(s.records), str(s.connects))
    return table


def _sink_caption(sinks) -> str:
    return "; ".join(f"{s.name}: {s.stats.sent} sent, {s.stats.dropped} dropped, {s.stats.failed} failed"
                     for s in sinks)


def _source(text: str) -> str | int:
    """A camera index (digits) or a path / URL."""
    return int(text) if text.isdigit() else text


def watch(
    sources: list[str] = typer.Argument(..., help="Cameras (0, 1...), stream URLs (rtsp://, http://) or video files."),
    gallery: Optional[str] = GalleryOpt,
    detector: Optional[str] = DetectorOpt,
    recognizer: Optional[str] = RecognizerOpt,
    device: str = DeviceOpt,
    every: int = typer.Option(3, "--every", min=1, help="Detect on every Nth frame, track faces in between."),
    max_fps: Optional[float] = typer.Option(None, "--max-fps", help="Take at most this many frames per second."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Similarity needed to name a face."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="Candidates listed per track."),
    webhook: Optional[str] = WebhookOpt,
    mqtt: Optional[str] = MqttOpt,
    event_crops: bool = EventCropsOpt,
    as_json: bool = JsonOpt,
):
    """Watch cameras and streams until SIGTERM or Ctrl-C: one record per person on screen, events as they come."""
    from facepipe.cli.video import video_options
    from facepipe.video.events import close_sinks, open_sinks, publish
    from facepipe.video.watch import Watcher

    options = video_options(every, max_fps, None, None, top_k, threshold)
    with open_engine(gallery, detector, recognizer, device) as engine:
        sinks = open_sinks(webhook=webhook, mqtt=mqtt)
        try:
            def on_record(record) -> None:
                if as_json:
                    sys.stdout.write(json.dumps(record.to_json(), ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    name = escape(record.identity) if record.identity else "[red]unknown[/]"
                    console.print(f"{escape(record.video)}: track {record.track} {record.start:.1f}-{record.end:.1f} s "
                                  f"{name}")

            on_event = (lambda kind, record, crop: publish(sinks, kind, record, crop)) if sinks else None
            watcher = Watcher(engine, [_source(s) for s in sources], options, on_record, on_event, event_crops)
            previous = {sig: signal.signal(sig, lambda *_: watcher.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                live = Live(console=err, refresh_per_second=2, transient=True,
                            get_renderable=lambda: status_table(watcher, sinks)) if err.is_terminal else nullcontext()
                with live:
                    watcher.run()
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
        finally:
            close_sinks(sinks)
    err.print(status_table(watcher, sinks))
    if not any(s.connects for s in watcher.statuses):
        raise FacepipeError("no source could be opened: " + "; ".join(s.detail for s in watcher.statuses))


def register(app: typer.Typer) -> None:
    app.command()(watch)
