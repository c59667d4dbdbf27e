"""Open a video file, a camera or a stream URL with OpenCV, and read RGB frames with their times.

Every failure is a VideoError naming the source in one line: a file OpenCV cannot open, a file that opens
but gives no frame (corrupt), a file that stops well before the frame count its header announces
(truncated), a camera index that does not exist, a stream that cannot be reached or drops.
Live sources (cameras, streams without a known length) are timed by the wall clock.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from facepipe.errors import FacepipeError

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                  ".mts", ".m2ts", ".3gp", ".ogv", ".mjpeg", ".mjpg"}  # GIFs stay images
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
# A file may end this many frames before its header's count (headers are estimates in some containers).
TRUNCATION_SLACK = 0.02
STREAM_RETRIES = 25  # failed reads in a row before a live source counts as dropped (about 1 s at 25 fps)
# A network source that says nothing for this long (opening, or between two frames) has stalled: FFmpeg's open
# and read timeouts are set to it, and a live source without a frame for that long ends with one line.
STREAM_TIMEOUT_S = 5.0


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's own messages (e.g. "moov atom not found") off the terminal. OpenCV reads this once,
    when it first uses FFmpeg in the process, so call it before any VideoCapture or VideoWriter; a value
    the user set wins."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


class VideoError(FacepipeError):
    """A video file, camera or stream that cannot be read."""


def is_url(source: str) -> bool:
    return str(source).lower().startswith(URL_SCHEMES)


def is_video_source(source: str | Path | int) -> bool:
    """True for a camera index, a stream URL or a path with a video suffix (what `identify` sends here)."""
    if isinstance(source, int):
        return True
    text = str(source)
    return is_url(text) or Path(text).suffix.lower() in VIDEO_SUFFIXES


def describe(source: str | Path | int) -> str:
    """How a source is named in records and messages."""
    return f"camera {source}" if isinstance(source, int) else str(source)


@dataclass
class VideoInfo:
    name: str
    fps: float
    width: int
    height: int
    frame_count: int | None  # None for live sources
    live: bool


class VideoSource:
    """Frames of one source; use as a context manager so the device or file is always released."""

    def __init__(self, source: str | Path | int, start: float | None = None, end: float | None = None,
                 timeout_s: float = STREAM_TIMEOUT_S):
        import cv2

        self._cv2 = cv2
        self.source = source
        self.name = describe(source)
        self.start = start or 0.0
        self.end = end
        self.timeout_s = timeout_s
        if self.end is not None and self.end <= self.start:
            raise VideoError(f"{self.name}: --end ({self.end:g} s) must be after --start ({self.start:g} s)")
        self._cap = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        live = isinstance(source, int) or (is_url(str(source)) and count <= 0)
        width, height = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(fps) if fps and 1 <= fps <= 1000 else 25.0  # some cameras and streams report 0 or nonsense
        self.info = VideoInfo(self.name, fps, width, height, None if live or count <= 0 else count, live)
        self.frames_read = 0

    def _open(self):
        """Open quietly: OpenCV and FFmpeg print warnings for bad input; our error says it in one line."""
        cv2 = self._cv2
        quiet_ffmpeg()
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            return self._open_capture()
        finally:
            cv2.utils.logging.setLogLevel(level)

    def _open_capture(self):
        cv2 = self._cv2
        source = self.source
        if isinstance(source, int):
            if source < 0:
                raise VideoError(f"camera {source}: a camera index is 0 or more")
            cap = cv2.VideoCapture(source)
            if not cap.isOpened():
                cap.release()
                raise VideoError(f"camera {source}: no such camera (or it is in use by another program)")
            return cap
        text = str(source)
        if not is_url(text):
            path = Path(text)
            if not path.exists():
                raise VideoError(f"{path}: no such file")
            if path.is_dir():
                raise VideoError(f"{path}: is a folder, not a video")
            if not os.access(path, os.R_OK):
                raise VideoError(f"{path}: permission denied")
        if is_url(text):  # a server that accepts and then says nothing must not hold us for FFmpeg's 30 s
            ms = int(self.timeout_s * 1000)
            cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms,
                                                         cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(text, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            if is_url(text):
                raise VideoError(f"{text}: cannot open the stream within {self.timeout_s:g} s (unreachable, "
                                 "refused, silent or not a video; --stream-timeout)")
            raise VideoError(f"{text}: not a video OpenCV can read (corrupt, truncated or unknown format)")
        return cap

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        """(frame index, time in seconds, RGB uint8 frame) from --start to --end, then VideoError on a bad end."""
        return self._live_frames() if self.info.live else self._file_frames()

    def _file_frames(self):
        cv2, cap, fps = self._cv2, self._cap, self.info.fps
        index = 0
        if self.start > 0:
            index = int(round(self.start * fps))
            if self.info.frame_count is not None and index >= self.info.frame_count:
                raise VideoError(f"{self.name}: --start {self.start:g} s is past the end "
                                 f"({self.info.frame_count / fps:.1f} s)")
            cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            index = int(cap.get(cv2.CAP_PROP_POS_FRAMES) or index)
        first = index
        while True:
            t = index / fps
            if self.end is not None and t >= self.end:
                return
            ok, frame = cap.read()
            if not ok:
                break
            self.frames_read += 1
            yield index, t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
        if self.frames_read == 0:
            raise VideoError(f"{self.name}: no frame could be decoded (corrupt or empty video)")
        expected = self.info.frame_count
        if expected is not None:
            expected_end = expected if self.end is None else min(expected, int(round(self.end * fps)))
            missing = expected_end - index
            if missing > max(2, TRUNCATION_SLACK * (expected_end - first)):
                what = "the stream dropped" if is_url(self.name) else "truncated or corrupt"
                raise VideoError(f"{self.name}: {what}: decoding stopped at frame {index} "
                                 f"of {expected} ({index / fps:.1f} s)")

    def _live_frames(self):
        cv2, cap = self._cv2, self._cap
        opened = time.monotonic()
        last_frame = opened
        index = 0
        failures = 0
        while True:
            ok, frame = cap.read()
            now = time.monotonic() - opened
            if not ok:
                failures += 1
                silent = time.monotonic() - last_frame
                if failures >= STREAM_RETRIES or silent >= self.timeout_s:
                    what = "no frame from the camera" if isinstance(self.source, int) else "the stream dropped"
                    raise VideoError(f"{self.name}: {what} after {self.frames_read} frames ({now:.1f} s; "
                                     f"no frame for {silent:.1f} s)")
                time.sleep(0.04)
                continue
            failures = 0
            last_frame = time.monotonic()
            if self.end is not None and now >= self.end:
                return
            self.frames_read += 1
            if now >= self.start:
                yield index, now, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
