"""The annotated copy of a video: every frame, with each track's box and its track-level name.

Names come from the track's current decision, not from the frame, so they do not flicker. The file is
written under a temporary name next to the target and renamed only when the run ends well; on failure the
temporary file is deleted, so no half-written video is ever left behind.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import cv2
import numpy as np

from facepipe.errors import FacepipeError
from facepipe.pipeline.annotate import draw_faces
from facepipe.types import Face
from facepipe.video.source import quiet_ffmpeg


def annotated_path(source_name: str, save_dir: Path, is_file: bool) -> Path:
    """Where the annotated copy of a source goes: <stem>.mp4 for files, a timestamped name for live sources."""
    if is_file:
        source = Path(source_name)
        target = save_dir / (source.stem + ".mp4")
        if target.resolve() == source.resolve():
            target = save_dir / (source.stem + ".annotated.mp4")
        return target
    slug = re.sub(r"[^A-Za-z0-9]+", "-", source_name.split("://")[-1]).strip("-")[:60] or "stream"
    return save_dir / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"


class AnnotatedWriter:
    def __init__(self, target: Path, fps: float, size: tuple[int, int]):
        target.parent.mkdir(parents=True, exist_ok=True)
        self.target = target
        # Same folder (so the rename is atomic), same suffix (OpenCV picks the container from it).
        self.partial = target.with_name(f".{target.stem}.partial-{os.getpid()}{target.suffix}")
        self.size = size
        quiet_ffmpeg()
        self._writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            self._writer.release()
            self.partial.unlink(missing_ok=True)
            raise FacepipeError(f"{target}: cannot write a video there (mp4v encoder or folder not writable)")
        self.frames = 0

    def write(self, frame: np.ndarray, faces: list[Face]) -> None:
        """frame: RGB uint8; faces: boxes with the names to show (identity None = unknown)."""
        if frame.shape[1::-1] != self.size:  # a stream that changed its resolution: keep the file's
            sx, sy = self.size[0] / frame.shape[1], self.size[1] / frame.shape[0]
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
            faces = [Face(box=f.box * np.array([sx, sy, sx, sy], dtype=np.float32), score=f.score,
                          identity=f.identity, similarity=f.similarity) for f in faces]
        drawn = np.asarray(draw_faces(frame, faces)) if faces else frame
        self._writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def finish(self) -> Path:
        """Close and move the finished file to its name."""
        self._writer.release()
        os.replace(self.partial, self.target)
        return self.target

    def discard(self) -> None:
        self._writer.release()
        self.partial.unlink(missing_ok=True)
