"""SCRFD (insightface): per stride S in 8, 16, 32 (or 8..128), outputs score_S, bbox_S and (optionally) kps_S.

Conventions, as insightface's SCRFD class reads the network: input RGB, (x - 127.5) / 128; a fixed input is
letterboxed (top-left, black); each stride's grid has A anchors per cell (2 in the 3-stride models, 1 in the
5-stride ones), ordered cell by cell (row-major) with a cell's anchors adjacent; the anchor point is the
cell's top-left corner cell * S; scores are already sigmoids; bbox = distances (left, top, right, bottom)
and kps = offsets (dx, dy) x 5, all in units of S. Outputs may carry a leading batch axis of 1.
Exports that kept the names score_8/bbox_8/kps_8... are read by name; others (insightface's own
buffalo files number their outputs) by position: scores, then boxes, then landmarks, strides ascending.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.detectors.anchor_free import AnchorFreeDetector, InputRule, fixed_input_size
from facepipe.runtime.hashing import file_fingerprint
from facepipe.runtime.layouts import ModelLayout, OnnxGraph, register_layout
from facepipe.runtime.onnx_session import open_session

MEAN = [127.5, 127.5, 127.5]
STD = [128.0, 128.0, 128.0]
DEFAULT_SCORE = 0.5  # insightface's default detection threshold
NMS_IOU = 0.4  # insightface's
_NAMED = re.compile(r"^(score|bbox|kps)_(\d+)$")


def scrfd_heads(outputs: list[tuple[str, list]]) -> dict[int, dict[str, str]] | None:
    """{stride: {"score": name, "bbox": name, "kps": name?}} for an SCRFD output list [(name, shape)], or None."""
    named: dict[int, dict[str, str]] = {}
    for name, _ in outputs:
        m = _NAMED.match(name)
        if m:
            named.setdefault(int(m.group(2)), {})[m.group(1)] = name
    if named and all({"score", "bbox"} <= set(h) for h in named.values()) and len(named) in (3, 5):
        return dict(sorted(named.items()))
    # insightface's positional layout: 6/9 outputs (3 strides) or 10/15 (5 strides), last dims 1, 4, 10
    n = len(outputs)
    if n not in (6, 9, 10, 15):
        return None
    fmc = 3 if n in (6, 9) else 5
    groups = ["score", "bbox", "kps"][: n // fmc]
    last = {"score": 1, "bbox": 4, "kps": 10}
    strides = [8, 16, 32, 64, 128][:fmc]
    heads: dict[int, dict[str, str]] = {s: {} for s in strides}
    for g, group in enumerate(groups):
        for i, s in enumerate(strides):
            name, shape = outputs[g * fmc + i]
            if not shape or shape[-1] != last[group]:
                return None
            heads[s][group] = name
    return heads


def anchor_points(rows: int, cols: int, stride: int, per_cell: int) -> np.ndarray:
    """(rows * cols * per_cell) x 2 anchor points (x, y), a cell's anchors adjacent."""
    ys, xs = np.mgrid[:rows, :cols]
    points = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64) * stride
    return np.repeat(points, per_cell, axis=0)


def decode_scrfd(outputs: dict[str, np.ndarray], heads: dict[int, dict[str, str]], input_size: tuple[int, int],
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's SCRFD outputs -> boxes K x 4, scores K, landmarks K x 5 x 2 in network pixels.

    Without a kps head, landmarks are NaN (the pipeline then aligns from the box)."""
    width, height = input_size
    all_boxes, all_scores, all_landmarks = [], [], []
    for s, head in heads.items():
        rows, cols = height // s, width // s
        score = outputs[head["score"]].reshape(-1)
        per_cell, rest = divmod(len(score), rows * cols)
        if rest or per_cell < 1:
            raise ValueError(f"{head['score']} has {len(score)} anchors for a {cols}x{rows} grid")
        keep = np.nonzero(score >= threshold)[0]
        points = anchor_points(rows, cols, s, per_cell)[keep]
        dist = outputs[head["bbox"]].reshape(-1, 4)[keep].astype(np.float64) * s
        all_boxes.append(np.concatenate([points - dist[:, :2], points + dist[:, 2:]], axis=1))
        if "kps" in head:
            kps = outputs[head["kps"]].reshape(-1, 10)[keep].astype(np.float64).reshape(-1, 5, 2) * s
            all_landmarks.append(points[:, None, :] + kps)
        else:
            all_landmarks.append(np.full((len(keep), 5, 2), np.nan))
        all_scores.append(score[keep])
    return (np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32),
            np.concatenate(all_landmarks).astype(np.float32))


class ScrfdDetector(AnchorFreeDetector):
    nms_iou = NMS_IOU

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, name: str | None = None,
                 threshold: float | None = None, max_side: int = 640):
        self.session, _, self.provider = open_session(path, device, threads)
        outputs = [(o.name, o.shape) for o in self.session.get_outputs()]
        heads = scrfd_heads(outputs)
        if heads is None:
            raise ModelError(f"{path}: not an SCRFD detector (outputs {[n for n, _ in outputs]})")
        self.heads = heads
        self.name = name or Path(path).stem
        self.fingerprint = file_fingerprint(path, self.name)
        self.default_threshold = DEFAULT_SCORE if threshold is None else float(threshold)
        self._input = self.session.get_inputs()[0].name
        self.rule = InputRule("RGB", MEAN, STD, fixed_input_size(self.session), max_side)

    def decode(self, outputs, input_size, threshold):
        return decode_scrfd(outputs, self.heads, input_size, threshold)

    def detect(self, image, threshold=None):
        faces = super().detect(image, threshold)
        for face in faces:  # a model without landmarks: the pipeline aligns from the box
            if face.landmarks is not None and np.isnan(face.landmarks).any():
                face.landmarks = None
        return faces


def is_scrfd(graph: OnnxGraph) -> bool:
    return scrfd_heads(graph.outputs) is not None


register_layout(ModelLayout(
    name="scrfd", kind="detector", load=ScrfdDetector, default_threshold=DEFAULT_SCORE, recognises=is_scrfd,
    recognised_by="score/bbox(/kps) heads per stride 8..32 or 8..128, by name or insightface's output order"))
