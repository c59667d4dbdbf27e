"""WIDER-FACE-style evaluation: AP at IoU 0.5, precision-recall curves, landmark NME.

Subsets without the official .mat files: "all" (every face; WIDER "invalid" faces ignored) and "min16"
(faces at least 16 px tall; smaller faces are ignored, and so are unmatched detections smaller than
that, as COCO does for its size ranges). With the official wider_face_val.mat and
wider_{easy,medium,hard}_val.mat, the easy/medium/hard settings: faces outside a setting's list are
ignored, every unmatched detection is a false positive (as the official evaluation does).

A detection matched (IoU >= 0.5, greedy by score) to an ignored face is neither a hit nor a miss.
NME: mean distance of the 5 landmarks to the ground truth divided by sqrt(w * h) of the true box,
over true positives at the operating threshold whose face has all 5 landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facepipe.detection.data import FaceSample
from facepipe.errors import DataError
from facepipe.runtime.boxes import box_iou
from facepipe.types import Detection

MIN_HEIGHT = 16.0


@dataclass
class Curve:
    ap: float
    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray
    n_faces: int
    n_detections: int

    def best_f1(self) -> tuple[float, float]:
        """(F1, score threshold) at the best point of the curve."""
        if not len(self.recall):
            return 0.0, 1.0
        f1 = 2 * self.precision * self.recall / np.maximum(self.precision + self.recall, 1e-12)
        i = int(np.argmax(f1))
        return float(f1[i]), float(self.thresholds[i])

    def recall_at(self, threshold: float) -> float:
        idx = np.nonzero(self.thresholds >= threshold)[0]
        return float(self.recall[idx[-1]]) if len(idx) else 0.0


@dataclass
class EvalReport:
    curves: dict[str, Curve]
    nme: float | None
    nme_faces: int
    images: int
    threshold: float
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        out = {"images": self.images, "threshold": self.threshold, "nme": self.nme, "nme_faces": self.nme_faces}
        for name, c in self.curves.items():
            f1, thr = c.best_f1()
            out[f"ap_{name}"] = round(c.ap, 4)
            out[f"faces_{name}"] = c.n_faces
            out[f"recall_{name}@thr"] = round(c.recall_at(self.threshold), 4)
            out[f"best_f1_{name}"] = round(f1, 4)
            out[f"best_f1_threshold_{name}"] = round(thr, 4)
        return {**out, **self.extra}


def match_image(det_boxes: np.ndarray, det_scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                iou_threshold: float = 0.5, ignore_unmatched: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy matching by score. Returns per detection: is_tp, is_ignored, matched gt index (-1 = none)."""
    n = len(det_boxes)
    tp, ignored, which = np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1)
    if n == 0:
        return tp, ignored, which
    ious = box_iou(det_boxes, gt_boxes) if len(gt_boxes) else np.zeros((n, 0))
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-det_scores, kind="stable"):
        if len(gt_boxes):
            cand = np.where(~taken & ~gt_ignore, ious[d], -1.0)
            g = int(np.argmax(cand))
            if cand[g] >= iou_threshold:
                tp[d], which[d], taken[g] = True, g, True
                continue
            if (gt_ignore & (ious[d] >= iou_threshold)).any():
                ignored[d] = True
                continue
        if ignore_unmatched is not None and ignore_unmatched[d]:
            ignored[d] = True
    return tp, ignored, which


def pr_curve(scores: np.ndarray, tp: np.ndarray, n_faces: int) -> Curve:
    """Precision/recall over all detections sorted by score; AP = area under the interpolated curve (VOC)."""
    order = np.argsort(-scores, kind="stable")
    scores, tp = scores[order], tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(tp), np.cumsum(1 - tp)
    recall = ctp / max(n_faces, 1)
    precision = ctp / np.maximum(ctp + cfp, 1e-12)
    if not len(scores) or n_faces == 0:
        return Curve(0.0, recall, precision, scores, n_faces, len(scores))
    mrec = np.concatenate([[0.0], recall, [recall[-1]]])
    mpre = np.concatenate([[1.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0]
    ap = float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))
    return Curve(ap, recall, precision, scores, n_faces, len(scores))


def _heights(boxes: np.ndarray) -> np.ndarray:
    return boxes[:, 3] - boxes[:, 1] if len(boxes) else np.zeros(0)


def evaluate(samples: list[FaceSample], detections: list[list[Detection]], threshold: float,
             min_height: float = MIN_HEIGHT, settings: dict[str, list[np.ndarray]] | None = None) -> EvalReport:
    """Detections per sample (any score) against the samples' faces.

    settings: optional {name: [ignore mask per sample]} (e.g. WIDER easy/medium/hard) evaluated as the
    official tool does; otherwise the "all" and "min16" subsets.
    """
    if len(samples) != len(detections):
        raise ValueError("one list of detections per sample")
    subsets: dict[str, tuple[list[np.ndarray], bool]] = {}
    if settings:
        for name, masks in settings.items():
            subsets[name] = (masks, False)
    else:
        subsets["all"] = ([s.ignore for s in samples], False)
        subsets["min16"] = ([s.ignore | (_heights(s.boxes) < min_height) for s in samples], True)
    curves = {}
    nme_errors: list[float] = []
    for name, (masks, size_limited) in subsets.items():
        all_scores, all_tp = [], []
        n_faces = 0
        for sample, dets, ignore in zip(samples, detections, masks):
            boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
            scores = np.array([d.score for d in dets], np.float32)
            small = _heights(boxes) < min_height if size_limited else None
            tp, ignored, which = match_image(boxes, scores, sample.boxes, ignore, 0.5, small)
            all_scores.append(scores[~ignored])
            all_tp.append(tp[~ignored])
            n_faces += int((~ignore).sum())
            if name == next(iter(subsets)):
                for d in np.nonzero(tp & (scores >= threshold))[0]:
                    g = which[d]
                    if sample.landmark_valid[g].all() and dets[d].landmarks is not None:
                        b = sample.boxes[g]
                        norm = np.sqrt(max((b[2] - b[0]) * (b[3] - b[1]), 1e-6))
                        err = np.linalg.norm(dets[d].landmarks - sample.landmarks[g], axis=1).mean() / norm
                        nme_errors.append(float(err))
        curves[name] = pr_curve(np.concatenate(all_scores) if all_scores else np.zeros(0),
                                np.concatenate(all_tp) if all_tp else np.zeros(0, bool), n_faces)
    nme = float(np.mean(nme_errors)) if nme_errors else None
    return EvalReport(curves, nme, len(nme_errors), len(samples), threshold)


def run_detector(detect: Callable[[np.ndarray, float], list[Detection]], samples: list[FaceSample],
                 threshold: float = 0.05, progress: bool = False) -> list[list[Detection]]:
    """Run `detect(image, threshold)` on every sample's image (read as RGB uint8)."""
    from facepipe.runtime.image import read_image
    from facepipe.train.progress import make_progress

    out = []
    with make_progress("img", disable=not progress) as bar:
        task = bar.add_task("evaluate", total=len(samples), status="")
        for s in samples:
            out.append(detect(read_image(s.image), threshold))
            bar.update(task, advance=1)
    return out


def plot_pr(curves: dict[str, Curve], path: str | Path, title: str = "") -> None:
    """Precision-recall curves (label: AP in the legend) as a PNG."""
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure registry

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.subplots()
    for label, c in curves.items():
        rec = np.concatenate([[0.0], c.recall]) if len(c.recall) else np.zeros(1)
        pre = np.concatenate([[1.0], c.precision]) if len(c.precision) else np.ones(1)
        ax.plot(rec, pre, label=f"{label}  AP={c.ap:.3f}  ({c.n_faces} faces)")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "precision-recall at IoU 0.5", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------ official WIDER FACE val .mat files

def load_wider_mat(gt_dir: str | Path, images: str | Path) -> tuple[list[FaceSample], dict[str, list[np.ndarray]]]:
    """wider_face_val.mat + wider_{easy,medium,hard}_val.mat -> samples and per-setting ignore masks."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading the official WIDER .mat files needs scipy (pip install scipy); "
                        "without them, evaluate on a label file (AP over all faces and faces >= 16 px)") from None
    gt_dir, images = Path(gt_dir), Path(images)
    files = {name: gt_dir / f"wider_{name}_val.mat" for name in ("face", "easy", "medium", "hard")}
    for f in files.values():
        if not f.is_file():
            raise DataError(f"{f}: not found (expected the official WIDER FACE eval_tools ground truth)")
    try:
        gt = loadmat(files["face"])
        events, file_list, box_list = gt["event_list"], gt["file_list"], gt["face_bbx_list"]
        lists = {name: loadmat(files[name])["gt_list"] for name in ("easy", "medium", "hard")}
    except (KeyError, ValueError, OSError) as exc:
        raise DataError(f"{gt_dir}: not the official WIDER FACE val .mat files ({exc})") from None
    samples: list[FaceSample] = []
    settings: dict[str, list[np.ndarray]] = {name: [] for name in lists}
    for i in range(len(events)):
        event = str(events[i][0][0])
        for j in range(len(file_list[i][0])):
            name = str(file_list[i][0][j][0][0])
            xywh = np.asarray(box_list[i][0][j][0], np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
            samples.append(FaceSample.make(images / event / f"{name}.jpg", boxes))
            for setting, gl in lists.items():
                keep = np.asarray(gl[i][0][j][0], np.int64).reshape(-1) - 1
                ignore = np.ones(len(boxes), bool)
                ignore[keep[(keep >= 0) & (keep < len(boxes))]] = False
                settings[setting].append(ignore)
    return samples, settings
