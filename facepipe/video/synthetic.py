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


# -- scenes: several people moving over one background (a doorway, two people crossing) -------------------
@dataclass
class Actor:
    """One person's photo moving through a scene. path: (t, cx, cy) keyframes, the face centre in frame
    fractions, linearly interpolated; before the first and after the last keyframe the person is not there."""

    image: np.ndarray
    face_box: np.ndarray
    label: str
    path: list[tuple[float, float, float]]
    face_width: float = 0.22  # share of the frame width


@dataclass
class SceneTruth:
    t: float
    faces: list[tuple[str, np.ndarray]]  # (label, box) of every face at least half inside the frame


def _sprite(actor: Actor, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(RGB patch, alpha 0..1, face box inside the patch): the head and shoulders cut out with a soft oval."""
    x1, y1, x2, y2 = [float(v) for v in actor.face_box]
    scale = actor.face_width * width / (x2 - x1)
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, 1.1 * (x2 - x1)
    matrix = np.array([[scale, 0, (half - cx) * scale], [0, scale, (half * 1.2 - cy) * scale]])
    size = (int(round(2 * half * scale)), int(round(2.4 * half * scale)))
    patch = cv2.warpAffine(actor.image, matrix, size, flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    alpha = np.zeros(size[::-1], np.float32)
    centre, axes = (size[0] // 2, int(size[1] * 0.55)), (int(size[0] * 0.46), int(size[1] * 0.47))
    cv2.ellipse(alpha, centre, axes, 0, 0, 360, 1, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, size[0] * 0.03))
    box = np.array([x1, y1, 1.0]) @ matrix.T, np.array([x2, y2, 1.0]) @ matrix.T
    return patch, alpha, np.concatenate(box)


def _where(path: list[tuple[float, float, float]], t: float) -> tuple[float, float] | None:
    if t < path[0][0] or t > path[-1][0]:
        return None
    times = [p[0] for p in path]
    return float(np.interp(t, times, [p[1] for p in path])), float(np.interp(t, times, [p[2] for p in path]))


def make_scene_clip(path: str | Path, actors: list[Actor], seconds: float, size: tuple[int, int] = (640, 480),
                    fps: float = 25.0, seed: int = 0) -> list[SceneTruth]:
    """Write a clip of the actors moving over a still background (later actors pass in front); return the truth
    for every frame."""
    path = Path(path)
    width, height = size
    quiet_ffmpeg()
    rng = np.random.default_rng(seed)
    background = cv2.resize(rng.integers(70, 180, size=(height // 40, width // 40, 3), dtype=np.uint8),
                            (width, height), interpolation=cv2.INTER_CUBIC)
    sprites = [_sprite(actor, width) for actor in actors]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write mp4v video here")
    truth: list[SceneTruth] = []
    try:
        for i in range(int(round(seconds * fps))):
            t = i / fps
            frame = background.astype(np.float32)
            faces = []
            for actor, (patch, alpha, face) in zip(actors, sprites):
                at = _where(actor.path, t)
                if at is None:
                    continue
                fx, fy = at[0] * width, at[1] * height
                left = int(round(fx - (face[0] + face[2]) / 2))
                top = int(round(fy - (face[1] + face[3]) / 2))
                ph, pw = alpha.shape
                x1, y1, x2, y2 = max(0, left), max(0, top), min(width, left + pw), min(height, top + ph)
                if x2 <= x1 or y2 <= y1:
                    continue
                a = alpha[y1 - top:y2 - top, x1 - left:x2 - left, None]
                frame[y1:y2, x1:x2] = a * patch[y1 - top:y2 - top, x1 - left:x2 - left] + (1 - a) * frame[y1:y2, x1:x2]
                box = face + np.array([left, top, left, top])
                inside = np.clip(box, 0, [width, height, width, height])
                if (inside[2] - inside[0]) * (inside[3] - inside[1]) >= 0.5 * (box[2] - box[0]) * (box[3] - box[1]):
                    faces = [(lbl, b) for lbl, b in faces if not _hidden_by(b, inside)] + [(actor.label, inside)]
            truth.append(SceneTruth(t, faces))
            writer.write(cv2.cvtColor(frame.astype(np.uint8), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return truth


def _hidden_by(behind: np.ndarray, front: np.ndarray) -> bool:
    """A face more than half covered by a face in front of it is not in the truth (nobody could see it)."""
    w = max(0.0, min(behind[2], front[2]) - max(behind[0], front[0]))
    h = max(0.0, min(behind[3], front[3]) - max(behind[1], front[1]))
    return w * h > 0.5 * (behind[2] - behind[0]) * (behind[3] - behind[1])
