"""Several teachers, several views of each photo -> one set of face labels with soft scores and ignore regions.

Views (test-time augmentation): the photo, its mirror, and copies upscaled 1.5x and 2x (so small faces reach the
sizes each teacher was trained on; a fully convolutional teacher runs on the whole upscaled copy, which is the
same as running it on tiles of it). Teachers with a fixed input (UltraFace: `fixed_input`) see the photo and its
mirror only.

Fusion (weighted box fusion, Solovyev et al. 2021, with votes per teacher): every detection above a teacher's
floor joins the cluster of fused boxes it overlaps most (IoU >= `iou`), else starts one; a fused box is the
score-weighted mean of its members, its landmarks the mean of its members' landmarks. Its **score** is the
teachers' agreement: each teacher adds the fraction of its views in which it voted for the face (a detection at
or above its own threshold), divided by the number of teachers. Score >= `keep`: a face; `ignore` <= score <
`keep`: an ignore region (the teachers disagree: trained neither as face nor as background); below: dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facepipe.detection.augment import FLIP_ORDER
from facepipe.detection.teachers import Teacher
from facepipe.runtime.boxes import box_iou
from facepipe.types import Detection

UPSCALES = (1.5, 2.0)
MAX_UPSCALED_SIDE = 1280  # no upscaled copy beyond this long side (large photos have large faces)


@dataclass
class FusionSettings:
    iou: float = 0.5
    keep: float = 0.45  # agreement that makes a face
    ignore: float = 0.15  # agreement that makes an ignore region
    flip: bool = True
    upscales: tuple[float, ...] = UPSCALES


@dataclass
class FusedFace:
    box: np.ndarray  # x1 y1 x2 y2
    score: float  # agreement, 0..1
    landmarks: np.ndarray | None  # 5 x 2, or None when no voting teacher gave landmarks
    votes: dict[str, float] = field(default_factory=dict)  # teacher -> fraction of its views that voted


def _unflip(d: Detection, width: int) -> Detection:
    box = np.array([width - d.box[2], d.box[1], width - d.box[0], d.box[3]], np.float32)
    lms = None
    if d.landmarks is not None:
        lms = d.landmarks[FLIP_ORDER].copy()
        lms[:, 0] = width - lms[:, 0]
    return Detection(box, d.score, lms)


def _scaled(d: Detection, s: float) -> Detection:
    return Detection((d.box / s).astype(np.float32), d.score, None if d.landmarks is None else d.landmarks / s)


def views(image: np.ndarray, teacher: Teacher, settings: FusionSettings) -> list[tuple[str, list[Detection]]]:
    """The teacher's detections on every view of the image, in the image's own pixels: [(view name, dets)]."""
    h, w = image.shape[:2]
    out = [("image", teacher.detect(image))]
    if settings.flip:
        out.append(("mirror", [_unflip(d, w) for d in teacher.detect(np.ascontiguousarray(image[:, ::-1]))]))
    if not teacher.fixed_input:
        for s in settings.upscales:
            if max(h, w) * s > MAX_UPSCALED_SIDE:
                continue
            big = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_LINEAR)
            out.append((f"x{s:g}", [_scaled(d, big.shape[1] / w) for d in teacher.detect(big)]))
    return out


def fuse(runs: list[tuple[Teacher, str, list[Detection]]], settings: FusionSettings | None = None) -> list[FusedFace]:
    """Detections of (teacher, view) runs on one image -> fused faces (score = agreement), best first."""
    settings = settings or FusionSettings()
    teachers = {t.name: t for t, _, _ in runs}
    n_views = {name: len({v for t, v, _ in runs if t.name == name}) for name in teachers}
    items = [(t, v, d) for t, v, dets in runs for d in dets if d.score >= t.floor]
    # voting detections first, then by how far over their teacher's floor they are
    items.sort(key=lambda it: (it[2].score < it[0].vote, -(it[2].score - it[0].floor) / (1.0 + abs(it[0].vote))))
    clusters: list[list[tuple[Teacher, str, Detection]]] = []
    fused_boxes: list[np.ndarray] = []
    for item in items:
        box = item[2].box
        best, best_iou = -1, settings.iou
        if fused_boxes:
            ious = box_iou(box[None], np.stack(fused_boxes))[0]
            j = int(np.argmax(ious))
            if ious[j] >= best_iou:
                best = j
        if best < 0:
            clusters.append([item])
            fused_boxes.append(box.astype(np.float64))
        else:
            clusters[best].append(item)
            fused_boxes[best] = _weighted_box(clusters[best])
    faces = []
    for members, box in zip(clusters, fused_boxes):
        votes = {}
        for name in teachers:
            voted = {v for t, v, d in members if t.name == name and d.score >= t.vote}
            if voted:
                votes[name] = len(voted) / n_views[name]
        score = sum(votes.values()) / len(teachers)
        points = [d.landmarks for t, v, d in members if d.landmarks is not None and d.score >= t.vote]
        faces.append(FusedFace(box.astype(np.float32), float(score),
                               np.mean(points, axis=0).astype(np.float32) if points else None, votes))
    faces.sort(key=lambda f: -f.score)
    return faces


def _weighted_box(members) -> np.ndarray:
    weights = np.array([1.0 if d.score >= t.vote else 0.25 for t, _, d in members])
    boxes = np.stack([d.box for _, _, d in members]).astype(np.float64)
    return (boxes * weights[:, None]).sum(0) / weights.sum()


def label_image(image: np.ndarray, teachers: list[Teacher], settings: FusionSettings | None = None) -> list[FusedFace]:
    """Every teacher on every view of the image, fused; faces and ignore regions (score >= settings.ignore)."""
    settings = settings or FusionSettings()
    runs = [(t, name, dets) for t in teachers for name, dets in views(image, t, settings)]
    return [f for f in fuse(runs, settings) if f.score >= settings.ignore]
