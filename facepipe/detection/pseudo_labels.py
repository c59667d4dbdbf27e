"""Pseudo-labels for detector training: dlib's HOG detector + 68-point landmarks on your own photos.

These are machine labels, not annotations: good for large frontal faces (dlib's HOG finds little
else), and they miss what dlib misses. Photos where dlib finds no face are left out (an unlabelled face
would be trained as background). The output is a RetinaFace-style label.txt with 5 landmarks per face,
plus `<name>.PSEUDO_LABELS.txt` next to it saying how it was made.

Boxes follow the WIDER FACE convention, built from the 68 points rather than dlib's square: the jaw's
x-extent, from above the brows to the chin. The margins (WIDER_STYLE) are the medians measured on the
widerface-dev training split (70 images, 34 faces dlib found; see docs/detector.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.runtime.align import reduce_68_to_5

# (x1, x2, y1, y2) offsets, as fractions of the jaw width (x) and the brow-to-chin height (y)
WIDER_STYLE = (0.05, -0.03, -0.35, 0.0)


def box_from_68(points: np.ndarray, offsets=WIDER_STYLE) -> np.ndarray:
    """68 landmarks -> a WIDER-style face box x1 y1 x2 y2."""
    p = np.asarray(points, np.float32).reshape(68, 2)
    x1, x2 = p[0:17, 0].min(), p[0:17, 0].max()
    top, chin = p[17:27, 1].min(), p[0:17, 1].max()
    w, h = x2 - x1, chin - top
    return np.array([x1 + offsets[0] * w, top + offsets[2] * h, x2 + offsets[1] * w, chin + offsets[3] * h], np.float32)


def _readable_photos(photos: list[Path], counts: dict[str, int], title: str, progress: bool):
    """(path, RGB image) for each photo that can be read, with a progress bar; unreadable ones are counted."""
    from facepipe.errors import ImageError
    from facepipe.runtime.image import read_image
    from facepipe.train.progress import make_progress

    with make_progress("img", disable=not progress) as bar:
        task = bar.add_task(title, total=len(photos), status="")
        for path in photos:
            bar.update(task, advance=1)
            try:
                image = read_image(path)
            except ImageError:
                counts["unreadable"] += 1
                continue
            yield path, image


def dlib_pseudo_labels(photos: list[Path], root: Path, out: Path, upsample: int = 1, min_score: float = 0.0,
                       progress: bool = True) -> dict[str, int]:
    """Label `photos` (paths under `root`) with dlib; write RetinaFace label.txt `out`. Returns counts."""
    from facepipe.runtime.detectors.dlib_detector import DlibDetector

    detector = DlibDetector(detect_size=1 << 30, upsample=upsample)  # the full image, as many passes as asked
    counts = {"photos": len(photos), "labelled": 0, "faces": 0, "no_face": 0, "unreadable": 0}
    lines: list[str] = []
    for path, image in _readable_photos(photos, counts, "dlib pseudo-labels", progress):
        faces = detector.detect(image, min_score)
        if not faces:
            counts["no_face"] += 1
            continue
        h, w = image.shape[:2]
        lines.append(f"# {Path(path).relative_to(root).as_posix()}")
        for face in faces:
            pts = face.landmarks68
            box = np.clip(box_from_68(pts), 0, [w, h, w, h])
            five = reduce_68_to_5(pts)
            lms = " ".join(f"{x:.1f} {y:.1f} 1.0" for x, y in five)
            lines.append(f"{box[0]:.1f} {box[1]:.1f} {box[2] - box[0]:.1f} {box[3] - box[1]:.1f} {lms}")
            counts["faces"] += 1
        counts["labelled"] += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    note = out.with_name(out.stem + ".PSEUDO_LABELS.txt")
    note.write_text(
        "PSEUDO-LABELS, not human annotations.\n"
        f"Made by facepipe.detection.pseudo_labels: dlib HOG (upsample {upsample}, score >= {min_score}) "
        "+ shape_predictor_68_face_landmarks, boxes from the 68 points in WIDER style "
        f"(offsets {WIDER_STYLE}), 5 landmarks from the 68.\n"
        f"Image paths are relative to: {root}\n"
        f"Counts: {counts}\n", encoding="utf-8")
    return counts


def _label_line(box, landmarks, score: float) -> str:
    x1, y1, x2, y2 = (float(v) for v in box)
    if landmarks is None:
        lms = " ".join(["-1.0 -1.0 -1.0"] * 5)
    else:
        lms = " ".join(f"{x:.1f} {y:.1f} 1.0" for x, y in landmarks)
    return f"{x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {lms} {score:.3f}"


def teacher_pseudo_labels(photos: list[Path], root: Path, out: Path, teachers, settings=None,
                          progress: bool = True) -> dict[str, int]:
    """Label `photos` (under `root`) with several teachers and their views, fused (facepipe.detection.fusion).

    Writes a RetinaFace label.txt whose last column is the teachers' agreement: faces score >= settings.keep,
    ignore regions lower (load them with `ignore_below: KEEP` in a training config). Photos where no face reaches
    `keep` are left out (a face all teachers missed would train as background). The label file is written once, at
    the end, under a temporary name then renamed: a killed run leaves none."""
    from facepipe.detection.fusion import FusionSettings, label_image

    settings = settings or FusionSettings()
    counts = {"photos": len(photos), "faces": 0, "ignore_regions": 0, "no_face": 0, "unreadable": 0}
    lines: list[str] = []
    for path, image in _readable_photos(photos, counts, "teacher pseudo-labels", progress):
        faces = label_image(image, teachers, settings)
        if not any(f.score >= settings.keep for f in faces):
            counts["no_face"] += 1
            continue
        lines.append(f"# {Path(path).relative_to(root).as_posix()}")
        for face in faces:
            lines.append(_label_line(face.box, face.landmarks, face.score))
            counts["faces" if face.score >= settings.keep else "ignore_regions"] += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(out)
    note = out.with_name(out.stem + ".PSEUDO_LABELS.txt")
    note.write_text(
        "PSEUDO-LABELS, not human annotations.\n"
        "Made by facepipe.detection.pseudo_labels.teacher_pseudo_labels: teachers "
        f"{', '.join(t.name for t in teachers)} (their own vote thresholds: "
        f"{', '.join(f'{t.name} {t.vote}' for t in teachers)}), each on the photo, its mirror and copies upscaled "
        f"{', '.join(f'{s:g}x' for s in settings.upscales)} (fixed-input teachers: photo and mirror), fused by "
        f"weighted box fusion (IoU {settings.iou}); last column = the teachers' agreement (0..1).\n"
        f"Faces: agreement >= {settings.keep}; ignore regions: {settings.ignore} <= agreement < {settings.keep} "
        f"(train with ignore_below: {settings.keep}).\n"
        f"Image paths are relative to: {root}\n"
        f"Counts: {counts}\n", encoding="utf-8")
    return counts


def ground_truth_with_teacher_landmarks(samples, root: Path, out: Path, teachers, settings=None,
                                        progress: bool = True) -> dict[str, int]:
    """Human boxes (samples, e.g. WIDER's, which have no landmarks) + the fused teachers' 5 landmarks where a
    fused face (agreement >= keep) overlaps the box (IoU >= 0.5): a RetinaFace label.txt, score 1.0 per box.
    Boxes no teacher agrees on keep no landmarks; human ignore boxes are written with score 0 (ignore_below)."""
    from facepipe.detection.fusion import FusionSettings, label_image
    from facepipe.runtime.boxes import box_iou
    from facepipe.runtime.image import read_image
    from facepipe.train.progress import make_progress

    settings = settings or FusionSettings()
    counts = {"photos": len(samples), "faces": 0, "with_landmarks": 0}
    lines: list[str] = []
    with make_progress("img", disable=not progress) as bar:
        task = bar.add_task("teacher landmarks", total=len(samples), status="")
        for sample in samples:
            bar.update(task, advance=1)
            fused = [f for f in label_image(read_image(sample.image), teachers, settings)
                     if f.score >= settings.keep and f.landmarks is not None]
            ious = box_iou(sample.boxes, np.stack([f.box for f in fused])) if fused else np.zeros((len(sample.boxes),
                                                                                                   0))
            lines.append(f"# {Path(sample.image).relative_to(root).as_posix()}")
            for i, box in enumerate(sample.boxes):
                match = int(ious[i].argmax()) if ious.shape[1] else -1
                landmarks = fused[match].landmarks if match >= 0 and ious[i, match] >= 0.5 else None
                lines.append(_label_line(box, landmarks, 0.0 if sample.ignore[i] else 1.0))
                counts["faces"] += 1
                counts["with_landmarks"] += landmarks is not None
    partial = out.with_name(out.name + ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
    partial.replace(out)
    out.with_name(out.stem + ".PSEUDO_LABELS.txt").write_text(
        "Human boxes with PSEUDO-landmarks: the boxes are the source labels; the 5 landmarks are the fused teachers' "
        f"({', '.join(t.name for t in teachers)}; photo, mirror, upscaled views) where a fused face with agreement "
        f">= {settings.keep} overlaps the box at IoU >= 0.5 (-1: none). Score 1 = face, 0 = the source's ignore box.\n"
        f"Image paths are relative to: {root}\nCounts: {counts}\n", encoding="utf-8")
    return counts
