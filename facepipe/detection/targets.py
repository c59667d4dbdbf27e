"""Ground truth -> training targets on the stride-4 output grid (pure numpy).

For a face with box (x1, y1, x2, y2) in network-input pixels, centre c = box centre / stride and its
cell ci = floor(c):
  hm[ci]  = 1, with a Gaussian around it whose radius grows with the face (CornerNet/CenterNet radius)
  wh[ci]  = log(w / stride), log(h / stride)       (negative for faces smaller than a cell)
  off[ci] = c - ci                                  (in cells)
  lm[ci]  = (point - ci * stride) / (w, h)          (negative for points left of / above the cell)
Regression targets are only defined at centre cells: `reg_mask` is that centre indicator (never
`target > 0`, which would drop every negative log-size and landmark offset); `lm_mask` further
zeroes faces or points without landmarks, so those faces train the box heads only.
`hm_weight` is 0 on the cells an ignore region (a face labelled "invalid") covers, except at real face
centres: those cells are neither positives nor background in the heatmap loss.
decode.decode_maps is the exact inverse.
"""
from __future__ import annotations

import math

import numpy as np


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (in cells): how far a corner may move and the box keep IoU >= min_overlap.

    The smallest root of the three cases of CornerNet's derivation, as CenterNet computes it.
    """
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 * b1 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 * b2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 * b3 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def draw_gaussian(heatmap: np.ndarray, cx: int, cy: int, radius: int) -> None:
    """Max-merge a Gaussian (sigma = diameter / 6, peak exactly 1 at (cx, cy)) into a 2-D heatmap."""
    diameter = 2 * radius + 1
    sigma = diameter / 6
    ys, xs = np.ogrid[-radius:radius + 1, -radius:radius + 1]
    g = np.exp(-(xs * xs + ys * ys) / (2 * sigma * sigma))
    h, w = heatmap.shape
    left, right = min(cx, radius), min(w - cx, radius + 1)
    top, bottom = min(cy, radius), min(h - cy, radius + 1)
    if right <= 0 or bottom <= 0 or left < 0 or top < 0:
        return
    region = heatmap[cy - top:cy + bottom, cx - left:cx + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    np.maximum(region, patch, out=region)


def encode_targets(
    boxes: np.ndarray,
    landmarks: np.ndarray | None,
    landmark_valid: np.ndarray | None,
    out_size: tuple[int, int],
    stride: int = 4,
    min_overlap: float = 0.7,
    ignore_boxes: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Boxes N x 4 (x1 y1 x2 y2, input pixels), landmarks N x 5 x 2, landmark_valid N x 5 -> target maps.

    out_size is (height, width) of the output grid. Faces whose centre falls outside the grid, or
    with no area, are left out. ignore_boxes (M x 4, input pixels) zero `hm_weight` on the cells they touch.
    """
    oh, ow = out_size
    hm = np.zeros((1, oh, ow), np.float32)
    wh = np.zeros((2, oh, ow), np.float32)
    off = np.zeros((2, oh, ow), np.float32)
    lm = np.zeros((10, oh, ow), np.float32)
    reg_mask = np.zeros((1, oh, ow), np.float32)
    lm_mask = np.zeros((10, oh, ow), np.float32)
    hm_weight = np.ones((1, oh, ow), np.float32)
    for x1, y1, x2, y2 in np.asarray(ignore_boxes if ignore_boxes is not None else [], np.float32).reshape(-1, 4):
        c1, r1 = max(0, int(math.floor(x1 / stride))), max(0, int(math.floor(y1 / stride)))
        c2, r2 = min(ow, int(math.ceil(x2 / stride))), min(oh, int(math.ceil(y2 / stride)))
        hm_weight[0, r1:r2, c1:c2] = 0.0
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    if landmarks is None:
        landmarks = np.zeros((n, 5, 2), np.float32)
        landmark_valid = np.zeros((n, 5), bool)
    elif landmark_valid is None:
        landmark_valid = np.ones((n, 5), bool)
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    # largest first, so where two centres share a cell the smaller face (drawn last) keeps it
    for i in np.argsort(-(widths * heights), kind="stable"):
        w, h = float(widths[i]), float(heights[i])
        if w <= 0 or h <= 0:
            continue
        cx = (boxes[i, 0] + boxes[i, 2]) / 2 / stride
        cy = (boxes[i, 1] + boxes[i, 3]) / 2 / stride
        ix, iy = int(math.floor(cx)), int(math.floor(cy))
        if not (0 <= ix < ow and 0 <= iy < oh):
            continue
        radius = int(gaussian_radius(h / stride, w / stride, min_overlap))
        draw_gaussian(hm[0], ix, iy, radius)
        wh[:, iy, ix] = (math.log(w / stride), math.log(h / stride))
        off[:, iy, ix] = (cx - ix, cy - iy)
        reg_mask[0, iy, ix] = 1.0
        cell = np.array([ix * stride, iy * stride], np.float32)
        rel = (np.asarray(landmarks[i], np.float32) - cell) / np.array([w, h], np.float32)
        lm[:, iy, ix] = rel.reshape(10)
        lm_mask[:, iy, ix] = np.repeat(np.asarray(landmark_valid[i], np.float32), 2)
    hm_weight[reg_mask > 0] = 1.0  # a real face inside an ignore region still trains as a face
    return {"hm": hm, "wh": wh, "off": off, "lm": lm, "reg_mask": reg_mask, "lm_mask": lm_mask, "hm_weight": hm_weight}
