"""YuNet (OpenCV model zoo, 2023 layout): outputs cls_S, obj_S, bbox_S, kps_S for strides S = 8, 16, 32.

Conventions, as OpenCV's FaceDetectorYN reads the network: input BGR pixels 0..255 (no mean or scale),
padded bottom/right with black to a multiple of 32; one prediction per cell of each stride's grid, row-major;
score = sqrt(clip(cls) * clip(obj)); centre = (cell + bbox[0:2]) * S, size = exp(bbox[2:4]) * S;
landmark k = (cell + kps[2k:2k+2]) * S, in the order right eye, left eye, nose, right and left mouth corner
of the person, i.e. image-left eye first: facepipe's standard order.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.runtime.detectors.anchor_free import BLACK, AnchorFreeDetector, InputRule, fixed_input_size, open_flexible
from facepipe.runtime.hashing import file_fingerprint
from facepipe.runtime.layouts import ModelLayout, OnnxGraph, register_layout

STRIDES = (8, 16, 32)
HEADS = ("cls", "obj", "bbox", "kps")
OUTPUT_NAMES = [f"{head}_{s}" for head in HEADS for s in STRIDES]
DEFAULT_SCORE = 0.417  # the named model's measured default (runtime/models.py)
NMS_IOU = 0.3  # OpenCV's default for FaceDetectorYN


def is_yunet(graph: OnnxGraph) -> bool:
    return set(OUTPUT_NAMES) <= set(graph.output_names)


def decode_yunet(outputs: dict[str, np.ndarray], input_size: tuple[int, int], threshold: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's YuNet outputs -> boxes K x 4 (x1 y1 x2 y2), scores K, landmarks K x 5 x 2 in network pixels."""
    width, height = input_size
    all_boxes, all_scores, all_landmarks = [], [], []
    for s in STRIDES:
        cols, rows = width // s, height // s
        cls = np.clip(outputs[f"cls_{s}"].reshape(-1), 0, 1)
        obj = np.clip(outputs[f"obj_{s}"].reshape(-1), 0, 1)
        if len(cls) != rows * cols:
            raise ValueError(f"cls_{s} has {len(cls)} cells for a {width}x{height} input ({rows * cols} expected)")
        score = np.sqrt(cls * obj)
        keep = np.nonzero(score >= threshold)[0]
        bbox = outputs[f"bbox_{s}"].reshape(-1, 4)[keep].astype(np.float64)
        kps = outputs[f"kps_{s}"].reshape(-1, 10)[keep].astype(np.float64).reshape(-1, 5, 2)
        cell = np.stack([keep % cols, keep // cols], axis=1).astype(np.float64)
        centre = (cell + bbox[:, :2]) * s
        size = np.exp(bbox[:, 2:]) * s
        all_boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
        all_landmarks.append((kps + cell[:, None, :]) * s)
        all_scores.append(score[keep])
    return (np.concatenate(all_boxes).astype(np.float32), np.concatenate(all_scores).astype(np.float32),
            np.concatenate(all_landmarks).astype(np.float32))


def _fits(outputs: dict[str, np.ndarray], width: int, height: int) -> bool:
    return all(outputs[f"cls_{s}"].size == (width // s) * (height // s) for s in STRIDES)


class YunetDetector(AnchorFreeDetector):
    nms_iou = NMS_IOU

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, name: str | None = None,
                 threshold: float | None = None, max_side: int = 640):
        self.session, _, self.provider = open_flexible(path, device, threads, fits=_fits)
        self.name = name or "yunet"
        self.fingerprint = file_fingerprint(path, self.name)
        self.default_threshold = DEFAULT_SCORE if threshold is None else float(threshold)
        self._input = self.session.get_inputs()[0].name
        self.rule = InputRule("BGR", BLACK, [1.0, 1.0, 1.0], fixed_input_size(self.session), max_side)

    def decode(self, outputs, input_size, threshold):
        return decode_yunet(outputs, input_size, threshold)


register_layout(ModelLayout(
    name="yunet", kind="detector", load=YunetDetector, default_threshold=DEFAULT_SCORE, recognises=is_yunet,
    recognised_by="outputs cls_S, obj_S, bbox_S, kps_S for S = 8, 16, 32"))
