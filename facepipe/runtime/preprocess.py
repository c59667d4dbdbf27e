"""Turn RGB uint8 images into network input as a model's metadata describes it."""
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
