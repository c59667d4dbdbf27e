"""Clips made from still photos with camera-like motion, and the truth of where each face is.

Used by the tests and benchmarks/video.py: each shot shows one photo around a known face box for a few
seconds while a virtual camera pans, zooms, rolls a little and blurs now and then; shots follow each other
with hard cuts, and an empty shot (no face) can sit between them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facepipe.video.source import quiet_ffmpeg


@dataclass
class Shot:
    seconds: float
    image: np.ndarray | None = None  # RGB photo; None: an empty background shot
    face_box: np.ndarray | None = None  # x1, y1, x2, y2 of the face to centre on, in photo pixels
    label: str | None = None  # who it is (ground truth)
    face_width: float = 0.26  # face width as a share of the frame width


@dataclass
class FrameTruth:
    t: float
    label: str | None
    box: np.ndarray | None  # where the face is in the frame (bounding box of the moved face box)


def _camera(i: int, n: int, rng_phase: np.ndarray) -> tuple[float, float, float, float, float]:
    """(pan x, pan y in frame widths, zoom, roll in degrees, blur sigma) for frame i of n in a shot."""
    u = i / max(1, n - 1)
    px = 0.08 * math.sin(2 * math.pi * (0.5 * u + rng_phase[0]))
    py = 0.04 * math.sin(2 * math.pi * (0.7 * u + rng_phase[1]))
    zoom = 1.0 + 0.25 * (0.5 - 0.5 * math.cos(2 * math.pi * u))  # in and back out
    roll = 6.0 * math.sin(2 * math.pi * (0.8 * u + rng_phase[2]))
    blur = 1.6 if (i + int(rng_phase[3] * 10)) % 17 in (0, 1) else 0.0  # a short defocus now and then
    return px, py, zoom, roll, blur


def render_shot(shot: Shot, size: tuple[int, int], fps: float, seed: int):
    """Yield (RGB frame, face box in the frame or None) for every frame of one shot."""
    width, height = size
    n = max(1, int(round(shot.seconds * fps)))
    rng = np.random.default_rng(seed)
    if shot.image is None:
        background = rng.integers(60, 190, size=(height // 8, width // 8, 3), dtype=np.uint8)
        background = cv2.resize(background, (width, height), interpolation=cv2.INTER_CUBIC)
        for _ in range(n):
            yield background, None
        return
    phase = rng.random(4)
    x1, y1, x2, y2 = [float(v) for v in shot.face_box]
    target = shot.face_width * width
    # Shrink the photo first (INTER_AREA) so the per-frame warp does not alias.
    pre = min(1.0, 2.0 * target / max(1.0, x2 - x1))
    photo = cv2.resize(shot.image, None, fx=pre, fy=pre, interpolation=cv2.INTER_AREA) if pre < 1 else shot.image
    cx, cy = (x1 + x2) / 2 * pre, (y1 + y2) / 2 * pre
    base = target / ((x2 - x1) * pre)
    corners = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]], dtype=np.float64)
    corners[:, :2] *= pre
    for i in range(n):
        px, py, zoom, roll, blur = _camera(i, n, phase)
        matrix = cv2.getRotationMatrix2D((cx, cy), roll, base * zoom)
        matrix[0, 2] += width / 2 + px * width - cx
        matrix[1, 2] += height / 2 + py * width - cy
        # Replicate the border: reflecting it would mirror the face into the frame.
        frame = cv2.warpAffine(photo, matrix, (width, height), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)
        if blur:
            frame = cv2.GaussianBlur(frame, (0, 0), blur)
        moved = corners @ matrix.T
        box = np.array([moved[:, 0].min(), moved[:, 1].min(), moved[:, 0].max(), moved[:, 1].max()])
        yield frame, np.clip(box, 0, [width, height, width, height])


def make_clip(path: str | Path, shots: list[Shot], size: tuple[int, int] = (640, 480), fps: float = 25.0,
              fourcc: str = "mp4v", seed: int = 0) -> list[FrameTruth]:
    """Write the shots one after the other into a video file; return the truth for every frame."""
    path = Path(path)
    quiet_ffmpeg()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write {fourcc} video here")
    truth: list[FrameTruth] = []
    try:
        for k, shot in enumerate(shots):
            for frame, box in render_shot(shot, size, fps, seed + k):
                truth.append(FrameTruth(len(truth) / fps, shot.label if box is not None else None, box))
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return truth
