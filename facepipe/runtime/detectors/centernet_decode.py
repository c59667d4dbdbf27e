"""Network outputs -> faces (pure numpy). The same code decodes PyTorch and ONNX Runtime outputs.

decode_maps is the exact inverse of targets.encode_targets: peaks of the heatmap (3x3 max-pool, top-K),
then box = (cell + off) * stride +- exp(wh) * stride / 2 and landmarks = cell * stride + lm * (w, h).
"""
from __future__ import annotations

import numpy as np

from facepipe.runtime.boxes import nms


def max_pool3x3(x: np.ndarray) -> np.ndarray:
    """3x3 max filter with stride 1 over the last two axes (edges padded with -inf)."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(x, pad, constant_values=-np.inf)
    out = p[..., 0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, p[..., dy:dy + h, dx:dx + w], out=out)
    return out


def find_peaks(heatmap: np.ndarray, threshold: float, top_k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local maxima of a 2-D heatmap with score >= threshold, best first: (ys, xs, scores)."""
    keep = (heatmap == max_pool3x3(heatmap)) & (heatmap >= threshold)
    ys, xs = np.nonzero(keep)
    scores = heatmap[ys, xs]
    order = np.argsort(-scores, kind="stable")[:top_k]
    return ys[order], xs[order], scores[order]


def decode_maps(hm: np.ndarray, wh: np.ndarray, off: np.ndarray, lm: np.ndarray, stride: int = 4,
                threshold: float = 0.3, top_k: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's maps (1/2/2/10 x H x W) -> boxes K x 4 and landmarks K x 5 x 2 in input pixels, scores K."""
    ys, xs, scores = find_peaks(np.asarray(hm, np.float32)[0], threshold, top_k)
    w = np.exp(wh[0, ys, xs].astype(np.float64)) * stride
    h = np.exp(wh[1, ys, xs].astype(np.float64)) * stride
    cx = (xs + off[0, ys, xs]) * stride
    cy = (ys + off[1, ys, xs]) * stride
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    rel = lm[:, ys, xs].T.reshape(-1, 5, 2).astype(np.float64)
    landmarks = np.stack([xs, ys], axis=1)[:, None, :] * stride + rel * np.stack([w, h], axis=1)[:, None, :]
    return boxes.astype(np.float32), scores.astype(np.float32), landmarks.astype(np.float32)


def decode_detections(outputs, scale: tuple[float, float], image_size: tuple[int, int], stride: int = 4,
                      threshold: float = 0.3, nms_iou: float = 0.4, top_k: int = 200
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (hm, wh, off, lm) -> boxes, scores, landmarks in original image pixels, after NMS.

    scale = (sx, sy) maps original pixels to network-input pixels; image_size = (width, height) of the
    original image, to which boxes are clipped.
    """
    hm, wh, off, lm = (np.asarray(o) for o in outputs)
    boxes, scores, landmarks = decode_maps(hm, wh, off, lm, stride, threshold, top_k)
    s = np.array(scale, np.float32)
    boxes = boxes / np.tile(s, 2)
    landmarks = landmarks / s
    width, height = image_size
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    boxes, scores, landmarks = boxes[valid], scores[valid], landmarks[valid]
    keep = nms(boxes, scores, nms_iou)
    return boxes[keep], scores[keep], landmarks[keep]
