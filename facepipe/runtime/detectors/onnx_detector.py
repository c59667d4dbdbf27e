"""A facepipe detector exported to ONNX; preprocessing and decoding come from its metadata."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.runtime.detectors.centernet import CenterNetDetector, DetectorSpec
from facepipe.runtime.hashing import file_fingerprint
from facepipe.runtime.onnx_session import open_session

OUTPUT_NAMES = ["hm", "wh", "off", "lm"]


class OnnxDetector(CenterNetDetector):
    thread_safe = True  # ONNX Runtime sessions may run from several threads at once

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        self.session, meta, self.provider = open_session(path, device, threads)
        self.spec = DetectorSpec.from_metadata(meta, str(path))
        self.name = self.spec.name
        self.fingerprint = meta.get("fingerprint") or file_fingerprint(path, self.name)
        self._input = self.session.get_inputs()[0].name
        have = [o.name for o in self.session.get_outputs()]
        # outputs by name when the exporter kept them, else in the documented order
        self._outputs = OUTPUT_NAMES if set(OUTPUT_NAMES) <= set(have) else have[:4]

    def _forward(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self._outputs, {self._input: x})
