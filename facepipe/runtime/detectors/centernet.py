"""Sizing an image for the detector network and turning its outputs into Detections.

Both runtime backends (ONNX Runtime and PyTorch) subclass CenterNetDetector and only supply
`_forward`; preprocessing and decoding are this one code path. The preprocessing rule travels with
the model (ONNX metadata or checkpoint) as a DetectorSpec.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.detectors.centernet_decode import decode_detections
from facepipe.runtime.preprocess import as_rgb_uint8, network_input, resize_and_pad
from facepipe.types import Detection

MEAN = [127.5, 127.5, 127.5]
STD = [128.0, 128.0, 128.0]


@dataclass
class DetectorSpec:
    """How to feed the network and read its outputs (what the ONNX metadata carries)."""

    name: str = "centerface_mbv2"
    color: str = "RGB"
    mean: list[float] = field(default_factory=lambda: list(MEAN))
    std: list[float] = field(default_factory=lambda: list(STD))
    multiple_of: int = 32
    max_side: int = 640
    enlarge: bool = False  # small photos enlarged to max_side too (their faces are small)
    stride: int = 4
    score_threshold: float = 0.4
    nms_iou: float = 0.4
    top_k: int = 200

    def to_metadata(self) -> dict[str, Any]:
        """The detector keys of facepipe/onnx_meta.py."""
        return {
            "facepipe.kind": "detector", "name": self.name, "color": self.color, "mean": self.mean, "std": self.std,
            "input_rule": {"multiple_of": self.multiple_of, "max_side": self.max_side, "enlarge": self.enlarge},
            "strides": [self.stride], "outputs": ["hm", "wh", "off", "lm"], "decode": "centernet",
            "score_threshold": self.score_threshold, "nms_iou": self.nms_iou, "top_k": self.top_k,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], where: str) -> "DetectorSpec":
        if meta.get("facepipe.kind") != "detector":
            raise ModelError(f"{where}: not a facepipe detector (its metadata has no facepipe.kind=detector)")
        if meta.get("decode", "centernet") != "centernet" or list(meta.get("outputs", [])) != ["hm", "wh", "off", "lm"]:
            raise ModelError(f"{where}: unsupported detector outputs {meta.get('outputs')} / decode "
                             f"{meta.get('decode')!r}")
        rule = meta.get("input_rule", {})
        return cls(
            name=str(meta.get("name", "detector")), color=str(meta.get("color", "RGB")),
            mean=list(meta.get("mean", MEAN)), std=list(meta.get("std", STD)),
            multiple_of=int(rule.get("multiple_of", 32)), max_side=int(rule.get("max_side", 640)),
            enlarge=bool(rule.get("enlarge", False)),
            stride=int(meta.get("strides", [4])[0]), score_threshold=float(meta.get("score_threshold", 0.4)),
            nms_iou=float(meta.get("nms_iou", 0.4)), top_k=int(meta.get("top_k", 200)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare_input(image: np.ndarray, spec: DetectorSpec) -> tuple[np.ndarray, tuple[float, float]]:
    """RGB uint8 image -> 1 x 3 x H x W float32 network input and the (sx, sy) scale."""
    padded, scale = resize_and_pad(as_rgb_uint8(image), spec.max_side, spec.multiple_of, spec.mean, spec.enlarge)
    return network_input(padded, spec.color, spec.mean, spec.std), scale


def to_detections(outputs, scale: tuple[float, float], image_size: tuple[int, int], spec: DetectorSpec,
                  threshold: float) -> list[Detection]:
    boxes, scores, landmarks = decode_detections(outputs, scale, image_size, spec.stride, threshold,
                                                 spec.nms_iou, spec.top_k)
    return [Detection(box=b, score=float(s), landmarks=l) for b, s, l in zip(boxes, scores, landmarks)]


class CenterNetDetector:
    """detect() shared by the ONNX and PyTorch backends; subclasses implement _forward."""

    name: str
    fingerprint: str
    provider: str
    spec: DetectorSpec

    @property
    def default_threshold(self) -> float:
        return self.spec.score_threshold

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        """1 x 3 x H x W float32 -> [hm, wh, off, lm] as numpy arrays with a batch axis."""
        raise NotImplementedError

    def raw_outputs(self, image: np.ndarray) -> tuple[list[np.ndarray], tuple[float, float]]:
        x, scale = prepare_input(image, self.spec)
        return self._forward(x), scale

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        image = as_rgb_uint8(image)
        outputs, scale = self.raw_outputs(image)
        threshold = self.default_threshold if threshold is None else float(threshold)
        h, w = image.shape[:2]
        return to_detections([o[0] for o in outputs], scale, (w, h), self.spec, threshold)
