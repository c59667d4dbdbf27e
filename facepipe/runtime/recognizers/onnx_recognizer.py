"""Any recognizer exported to ONNX with facepipe metadata (facepipe-trained or dlib's converted ResNet)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.align import Template
from facepipe.runtime.hashing import file_fingerprint
from facepipe.runtime.onnx_session import open_session
from facepipe.runtime.preprocess import chips_to_input, l2_normalize


class OnnxRecognizer:
    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 16, fingerprint: str | None = None):
        self.session, meta, self.provider = open_session(path, device, threads)
        if meta.get("facepipe.kind") != "recognizer":
            raise ModelError(f"{path}: not a facepipe recognizer (its ONNX metadata has no facepipe.kind=recognizer)")
        self.meta = meta
        self.name = str(meta.get("name", Path(path).stem))
        self.fingerprint = fingerprint or meta.get("fingerprint") or file_fingerprint(path, self.name)
        width, height = meta.get("input_size", [112, 112])
        self.template = Template(np.asarray(meta["template"], dtype=np.float32), (int(width), int(height)))
        self.embedding_size = int(meta["embedding_size"])
        self.threshold = float(meta.get("threshold", 0.3))
        self.metric = str(meta.get("metric", "cosine"))  # facepipe.openset.matching.METRICS
        if self.metric not in ("cosine", "euclidean"):
            raise ModelError(f"{path}: unknown metric {self.metric!r} in its ONNX metadata (expected cosine or "
                             f"euclidean)")
        self.batch_size = batch_size
        self._input = self.session.get_inputs()[0].name
        self._fixed_batch = isinstance(self.session.get_inputs()[0].shape[0], int)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        """Unit vectors for a cosine model; the raw vectors its distance was trained on for "euclidean"."""
        raw = self.embed_raw(chips)
        return l2_normalize(raw) if self.metric == "cosine" else raw

    def embed_raw(self, chips: np.ndarray) -> np.ndarray:
        """The network's output before L2 normalisation (dlib's descriptors are ~1.49 long)."""
        if len(chips) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        step = 1 if self._fixed_batch else self.batch_size
        out = []
        for i in range(0, len(chips), step):
            x = chips_to_input(chips[i:i + step], self.template.size, self.meta.get("color", "RGB"),
                               self.meta["mean"], self.meta["std"])
            out.append(self.session.run(None, {self._input: x})[0])
        return np.concatenate(out)
