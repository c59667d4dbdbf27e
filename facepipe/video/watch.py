"""Many cameras, files and streams in one process, with one set of models: `facepipe watch`.

One reader thread per source opens it, reads frames at the source's pace (a file is played at its frame rate,
as a camera would deliver it) and keeps only the newest `buffer` frames: when the models fall behind, the
oldest frame is dropped and counted, so a slow moment never piles up latency. A source that fails or ends is
reopened with exponential backoff (1 s doubling to 30 s); its open tracks are flushed first. The main thread
takes one frame from each source that has one in turn (round-robin), so one busy source cannot starve the
others, and feeds it to that source's VideoRun; records and events come out as tracks end. `stop()` (SIGTERM,
Ctrl-C) ends every run with its open tracks flushed.

Times in records are seconds since the watch started (wall clock), the same for every source.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from facepipe.video.identify import TrackRecord, VideoOptions, VideoRun
from facepipe.video.source import VideoError, VideoInfo, VideoSource, describe

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0


@dataclass
class SourceStatus:
    name: str
    state: str = "connecting"  # connecting · live · retrying · stopped
    detail: str = ""  # the last error, or when the next try is
    frames_read: int = 0
    frames_done: int = 0
    dropped: int = 0  # frames dropped because the models were behind
    connects: int = 0
    tracks_open: int = 0
    records: int = 0
    fps: float = 0.0  # frames processed per second, recently
    _rate: deque = field(default_factory=lambda: deque(maxlen=50), repr=False)


class SourceReader(threading.Thread):
    """Reads one source into a small buffer; reopens it with backoff when it fails or ends."""

    def __init__(self, source: str | int, buffer: int, clock_start: float, wake: threading.Condition):
        super().__init__(name=f"facepipe-watch-{describe(source)}", daemon=True)
        self.source = source
        self.status = SourceStatus(describe(source))
        self.frames: deque = deque(maxlen=buffer)
        self.info: VideoInfo | None = None
        self.connection = 0  # increases at every (re)connection: the processor flushes tracks when it changes
        self.clock_start = clock_start
        self._wake = wake
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        backoff = BACKOFF_FIRST
        while not self._halt.is_set():
            try:
                with VideoSource(self.source) as video:
                    self.info = video.info
                    self.connection += 1
                    self.status.connects += 1
                    self.status.state, self.status.detail = "live", ""
                    backoff = BACKOFF_FIRST
                    self._read(video)
                    why = "ended"
            except VideoError as exc:
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - a reader never dies: it says why and tries again
                why = f"{type(exc).__name__}: {exc}"
            if self._halt.is_set():
                break
            self.status.state, self.status.detail = "retrying", f"{why}; again in {backoff:.0f} s"
            self._halt.wait(backoff)
            backoff = min(2 * backoff, BACKOFF_MAX)
        self.status.state, self.status.detail = "stopped", ""

    def _read(self, video: VideoSource) -> None:
        paced = not video.info.live  # a file: deliver frames at its frame rate, like a camera
        opened = time.monotonic()
        for _, t, frame in video.frames():
            if self._halt.is_set():
                return
            if paced:
                delay = opened + t - time.monotonic()
                if delay > 0 and self._halt.wait(delay):
                    return
            with self._wake:
                if len(self.frames) == self.frames.maxlen:
                    self.status.dropped += 1  # the oldest goes: the models are behind
                self.frames.append((self.connection, time.monotonic() - self.clock_start, frame))
                self.status.frames_read += 1
                self._wake.notify()


class Watcher:
    """Watch several sources until `stop()`: `run()` blocks and calls on_record for every finished track."""

    def __init__(self, engine, sources: list[str | int], options: VideoOptions | None = None,
                 on_record: Callable[[TrackRecord], None] | None = None,
                 on_event: Callable[[str, TrackRecord, np.ndarray | None], None] | None = None,
                 event_crops: bool = False, buffer: int = 2):
        if not sources:
            raise ValueError("no source to watch")
        self.engine = engine
        self.options = options or VideoOptions()
        self.on_record = on_record or (lambda record: None)
        self.on_event = on_event
        self.event_crops = event_crops
        self.started = time.monotonic()
        self._wake = threading.Condition()
        self.readers = [SourceReader(s, buffer, self.started, self._wake) for s in sources]
        self._runs: dict[int, tuple[int, VideoRun]] = {}  # reader index -> (connection, run)
        self._stopping = threading.Event()

    @property
    def statuses(self) -> list[SourceStatus]:
        return [reader.status for reader in self.readers]

    def stop(self) -> None:
        """Ask run() to finish (safe from a signal handler or another thread)."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()

    def run(self) -> None:
        self.engine.threshold(self.options.threshold)  # a missing or foreign gallery fails here, before any thread
        self.engine.detector  # loaded before the first frame arrives, not while frames pile up
        self.started = time.monotonic()
        for reader in self.readers:
            reader.clock_start = self.started
            reader.start()
        try:
            turn = 0
            while not self._stopping.is_set():
                self._flush_dropped()
                picked = self._next_frame(turn)
                if picked is None:
                    with self._wake:
                        self._wake.wait(0.1)
                    continue
                turn = picked[0] + 1
                self._process(*picked)
        finally:
            for reader in self.readers:
                reader.stop()
            for index in list(self._runs):
                self._finish(index)
            for reader in self.readers:
                reader.join(5)

    def _flush_dropped(self) -> None:
        """A source that is down (retrying) has no tracks open: flush them now, not when it comes back."""
        for index, reader in enumerate(self.readers):
            if index in self._runs and reader.status.state != "live" and not reader.frames:
                self._finish(index)

    def _next_frame(self, turn: int):
        """(reader index, connection, t, frame) from the next source in turn that has a frame, or None."""
        with self._wake:
            for k in range(len(self.readers)):
                index = (turn + k) % len(self.readers)
                if self.readers[index].frames:
                    return (index, *self.readers[index].frames.popleft())
        return None

    def _process(self, index: int, connection: int, t: float, frame: np.ndarray) -> None:
        reader = self.readers[index]
        current = self._runs.get(index)
        if current is None or current[0] != connection:
            if current is not None:
                self._finish(index)  # the source dropped and came back: its old tracks are over
            self._runs[index] = (connection, self._new_run(reader))
        run = self._runs[index][1]
        for record in run.feed(frame, t):
            self._record(reader, record)
        status = reader.status
        status.frames_done += 1
        status.tracks_open = sum(1 for tr in run.tracker.tracks if tr.confirmed)
        status._rate.append(time.monotonic())
        if len(status._rate) > 1:
            status.fps = (len(status._rate) - 1) / max(1e-6, status._rate[-1] - status._rate[0])

    def _new_run(self, reader: SourceReader) -> VideoRun:
        info = reader.info
        live = VideoInfo(reader.status.name, info.fps, info.width, info.height, None, True)
        return VideoRun(self.engine, None, self.options, on_event=self.on_event, event_crops=self.event_crops,
                        info=live)

    def _finish(self, index: int) -> None:
        _, run = self._runs.pop(index)
        for record in run.flush():
            self._record(self.readers[index], record)
        self.readers[index].status.tracks_open = 0

    def _record(self, reader: SourceReader, record: TrackRecord) -> None:
        reader.status.records += 1
        self.on_record(record)
