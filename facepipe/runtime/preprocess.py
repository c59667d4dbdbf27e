"""Turn RGB uint8 images into network input as a model's metadata describes it."""
from __future__ import annotations

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
