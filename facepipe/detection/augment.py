"""Training augmentation that keeps boxes and landmarks consistent (numpy + OpenCV, worker-safe).

Every function takes and returns (image, boxes N x 4, landmarks N x 5 x 2, landmark_valid N x 5) and
draws randomness only from the numpy Generator it is given, so a sample's augmentation is a pure
function of (seed, epoch, index): resuming a run replays it exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from facepipe.runtime.preprocess import pad_value

# horizontal flip: image-left eye <-> image-right eye, nose stays, mouth corners swap
FLIP_ORDER = [1, 0, 2, 4, 3]


@dataclass
class AugmentConfig:
    crop_scales: list[float] = field(default_factory=lambda: [0.3, 0.45, 0.6, 0.8, 1.0])
    crop_prob: float = 1.0  # else: the whole image, letterboxed
    flip: bool = True
    color_jitter: float = 0.5  # strength 0..1 (0 = off)
    mosaic_prob: float = 0.0  # else one photo: a mosaic of grid x grid photos turns portraits into crowds
    mosaic_grids: list[int] = field(default_factory=lambda: [2, 3, 4])
    mosaic_min_fill: float = 0.5  # each photo fills this to 1.0 of its cell (random), at a random place in it


def _keep(boxes, landmarks, valid, mask):
    return boxes[mask], landmarks[mask], valid[mask]


def random_square_crop(image, boxes, landmarks, valid, rng: np.random.Generator, scales, tries: int = 50,
                       ignore_boxes=None):
    """RetinaFace-style: a square of side scale * short side at a random place, keeping faces whose
    centre falls inside (clipped to the crop). After `tries` crops with no face centre inside, the
    image is returned unchanged. Ignore regions (M x 4) are clipped to the crop, whatever their centre.
    Returns (image, boxes, landmarks, valid, ignore_boxes)."""
    h, w = image.shape[:2]
    short = min(h, w)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    ignore_boxes = _no_boxes() if ignore_boxes is None else np.asarray(ignore_boxes, np.float32).reshape(-1, 4)
    for _ in range(tries):
        side = max(1, int(float(rng.choice(scales)) * short))
        left = int(rng.integers(0, w - side + 1))
        top = int(rng.integers(0, h - side + 1))
        inside = ((centres[:, 0] >= left) & (centres[:, 0] < left + side)
                  & (centres[:, 1] >= top) & (centres[:, 1] < top + side))
        if len(boxes) and not inside.any():
            continue
        b, l, v = _keep(boxes, landmarks, valid, inside)
        shift = np.array([left, top], np.float32)
        b = _clip_boxes(b - np.tile(shift, 2), side)
        l = (l - shift).astype(np.float32)
        ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
        b, l, v = _keep(b, l, v, ok)
        ig = _clip_boxes(ignore_boxes - np.tile(shift, 2), side)
        ig = ig[(ig[:, 2] > ig[:, 0]) & (ig[:, 3] > ig[:, 1])]
        return np.ascontiguousarray(image[top:top + side, left:left + side]), b, l, v, ig
    return image, boxes, landmarks, valid, ignore_boxes


def _no_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def _clip_boxes(boxes: np.ndarray, side: int) -> np.ndarray:
    return np.clip(boxes, 0, side).astype(np.float32)


def _flip_boxes(boxes: np.ndarray, w: int) -> np.ndarray:
    return np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]],
                    axis=1).astype(np.float32).reshape(-1, 4)


def hflip(image, boxes, landmarks, valid):
    """Mirror left-right; landmark order is swapped so 'image-left eye' stays image-left."""
    w = image.shape[1]
    image = np.ascontiguousarray(image[:, ::-1])
    boxes = _flip_boxes(boxes, w)
    landmarks = landmarks[:, FLIP_ORDER].copy()
    landmarks[..., 0] = w - landmarks[..., 0]
    return image, boxes, landmarks.astype(np.float32), valid[:, FLIP_ORDER].copy()


def color_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast, saturation and hue, each applied with probability 0.5."""
    img = image.astype(np.float32)
    if rng.random() < 0.5:
        img += rng.uniform(-32, 32) * strength
    if rng.random() < 0.5:
        img = (img - img.mean()) * rng.uniform(1 - 0.5 * strength, 1 + 0.5 * strength) + img.mean()
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - 0.5 * strength, 1 + 0.5 * strength), 0, 255)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-18, 18) * strength) % 180
        img = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    return img


def _resize_long_side(image, boxes, landmarks, size: int, ignore_boxes):
    h, w = image.shape[:2]
    s = size / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (nw, nh), interpolation=interp) if (nw, nh) != (w, h) else image
    scale = np.array([nw / w, nh / h], np.float32)
    return (resized, (boxes * np.tile(scale, 2)).astype(np.float32), (landmarks * scale).astype(np.float32),
            (ignore_boxes * np.tile(scale, 2)).astype(np.float32))


def _pad_square(image, size: int, mean) -> np.ndarray:
    out = np.empty((size, size, 3), np.uint8)
    out[:] = pad_value(mean)
    out[:image.shape[0], :image.shape[1]] = image
    return out


def letterbox(image, boxes, landmarks, valid, size: int, mean, ignore_boxes=None):
    """Resize so the long side is `size` (up or down), pad bottom/right to size x size with the mean colour
    (the same placement as inference.resize_and_pad). Returns (image, boxes, landmarks, valid, ignore_boxes)."""
    ignore_boxes = _no_boxes() if ignore_boxes is None else np.asarray(ignore_boxes, np.float32).reshape(-1, 4)
    image, boxes, landmarks, ignore_boxes = _resize_long_side(image, boxes, landmarks, size, ignore_boxes)
    return _pad_square(image, size, mean), boxes, landmarks, valid, ignore_boxes


def train_transform(image, boxes, landmarks, valid, size: int, cfg: AugmentConfig, rng: np.random.Generator, mean,
                    ignore_boxes=None):
    """Crop -> flip -> resize -> colour jitter -> pad (padding stays the plain mean colour, bottom/right).

    ignore_boxes (M x 4, e.g. WIDER's "invalid" faces) follow the same geometry; returns
    (image, boxes, landmarks, valid, ignore_boxes)."""
    ignore_boxes = _no_boxes() if ignore_boxes is None else np.asarray(ignore_boxes, np.float32).reshape(-1, 4)
    if cfg.crop_scales and rng.random() < cfg.crop_prob:
        image, boxes, landmarks, valid, ignore_boxes = random_square_crop(image, boxes, landmarks, valid, rng,
                                                                          cfg.crop_scales, ignore_boxes=ignore_boxes)
    if cfg.flip and rng.random() < 0.5:
        ignore_boxes = _flip_boxes(ignore_boxes, image.shape[1])
        image, boxes, landmarks, valid = hflip(image, boxes, landmarks, valid)
    image, boxes, landmarks, ignore_boxes = _resize_long_side(image, boxes, landmarks, size, ignore_boxes)
    if cfg.color_jitter > 0:
        image = color_jitter(image, rng, cfg.color_jitter)
    return _pad_square(image, size, mean), boxes, landmarks, valid, ignore_boxes


def mosaic(tiles, size: int, grid: int, cfg: AugmentConfig, rng: np.random.Generator, mean):
    """grid x grid photos, each shrunk into its cell of a size x size canvas (mean colour around them), flipped at
    random, then colour jitter: crowds of small faces from photos of one face (the zoom-out of small photos).
    tiles: [(image, boxes, landmarks, valid, ignore_boxes)]; returns (image, boxes, landmarks, valid, ignore)."""
    canvas = np.empty((size, size, 3), np.uint8)
    canvas[:] = pad_value(mean)
    cell = size / grid
    parts: list[tuple[np.ndarray, ...]] = []
    for k, (image, boxes, landmarks, valid, ignore) in enumerate(tiles[:grid * grid]):
        if cfg.flip and rng.random() < 0.5:
            ignore = _flip_boxes(ignore, image.shape[1])
            image, boxes, landmarks, valid = hflip(image, boxes, landmarks, valid)
        h, w = image.shape[:2]
        s = cell * rng.uniform(cfg.mosaic_min_fill, 1.0) / max(h, w)
        nw, nh = max(1, min(int(cell), round(w * s))), max(1, min(int(cell), round(h * s)))
        row, col = divmod(k, grid)
        x0 = int(col * cell + rng.uniform(0, max(0.0, cell - nw)))
        y0 = int(row * cell + rng.uniform(0, max(0.0, cell - nh)))
        nw, nh = min(nw, size - x0), min(nh, size - y0)
        canvas[y0:y0 + nh, x0:x0 + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
        scale = np.array([nw / w, nh / h], np.float32)
        shift = np.array([x0, y0], np.float32)
        parts.append(((boxes * np.tile(scale, 2) + np.tile(shift, 2)).astype(np.float32),
                      (landmarks * scale + shift).astype(np.float32), valid,
                      (ignore * np.tile(scale, 2) + np.tile(shift, 2)).astype(np.float32)))
    boxes = np.concatenate([p[0] for p in parts]).reshape(-1, 4)
    landmarks = np.concatenate([p[1] for p in parts]).reshape(-1, 5, 2)
    valid = np.concatenate([p[2] for p in parts]).reshape(-1, 5)
    ignore = np.concatenate([p[3] for p in parts]).reshape(-1, 4)
    if cfg.color_jitter > 0:
        canvas = color_jitter(canvas, rng, cfg.color_jitter)
    return canvas, boxes, landmarks, valid, ignore
