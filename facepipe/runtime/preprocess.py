"""Turn RGB uint8 images into network input as a model's metadata describes it: sizing a photo for a detector
(shrink, pad), channel order, mean and scale; chips for a recognizer. Every model family uses these."""
from __future__ import annotations

import cv2
import numpy as np


def to_network_input(images: np.ndarray, color: str, mean, std) -> np.ndarray:
    """N x H x W x 3 RGB uint8 -> N x C x H x W float32, with (x - mean) / std per channel."""
    x = images.astype(np.float32)
    if color == "BGR":
        x = x[..., ::-1]
    elif color == "GRAY":
        x = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 1, -1)
    std = np.asarray(std, dtype=np.float32).reshape(1, 1, 1, -1)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def resize_chips(chips, size: tuple[int, int]) -> np.ndarray:
    """Chips (N x H x W x 3 array or a list of arrays) at `size` (width, height): INTER_AREA to shrink,
    INTER_LINEAR to enlarge; chips already at that size are left untouched."""
    def one(chip: np.ndarray) -> np.ndarray:
        if (chip.shape[1], chip.shape[0]) == tuple(size):
            return chip
        shrink = chip.shape[1] > size[0]
        return cv2.resize(chip, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    return np.stack([one(np.asarray(c)) for c in chips]) if len(chips) else np.zeros((0, size[1], size[0], 3), np.uint8)


def chips_to_input(chips, size: tuple[int, int], color: str, mean, std) -> np.ndarray:
    """Every recognizer's preprocessing: chips at the network's size, then (x - mean) / std, N x C x H x W."""
    return to_network_input(resize_chips(chips, size), color, mean, std)


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Accept H x W x 3 RGB uint8 (or H x W gray); anything else is an ImageError."""
    from facepipe.runtime.image import as_rgb_array  # here: training imports this module without Pillow

    return as_rgb_array(np.asarray(image), "detector input")


def pad_value(mean: list[float]) -> tuple[int, ...]:
    return tuple(int(round(m)) for m in mean)


def shrink_to(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image with its long side at most max_side (never enlarged), and the factor applied."""
    h, w = image.shape[:2]
    s = min(1.0, max_side / max(h, w))
    if s == 1.0:
        return image, s
    return cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA), s


def resize_and_pad(image: np.ndarray, max_side: int, multiple_of: int, mean: list[float], enlarge: bool = False
                   ) -> tuple[np.ndarray, tuple[float, float]]:
    """Shrink so the long side is <= max_side (enlarge: make it max_side, small photos too), pad bottom/right
    to a multiple.

    Returns the padded RGB uint8 image and (sx, sy), the factors from original to network pixels.
    """
    h, w = image.shape[:2]
    s = (max_side / max(h, w) if enlarge else min(1.0, max_side / max(h, w))) if max_side else 1.0
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    pw, ph = -nw % multiple_of, -nh % multiple_of
    if pw or ph:
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=pad_value(mean))
    return image, (nw / w, nh / h)


def network_input(image: np.ndarray, color: str, mean, std) -> np.ndarray:
    """One RGB uint8 image -> 1 x C x H x W float32, (x - mean) / std: runtime/preprocess.to_network_input,
    done by OpenCV's blobFromImage for colour models (the same numbers, ~10x faster at 640x480)."""
    if color not in ("RGB", "BGR"):
        return to_network_input(image[None], color, mean, std)
    x = cv2.dnn.blobFromImage(image, 1.0, swapRB=color == "BGR")
    x -= np.asarray(mean, np.float32).reshape(1, 3, 1, 1)  # mean/std are in the network's channel order
    x *= 1.0 / np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return x
