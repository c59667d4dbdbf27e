"""Third-party 112 x 112 recognizers without facepipe metadata: insightface's ArcFace family and OpenCV's SFace.

Both take a chip aligned to the ArcFace 5-point template and are compared by cosine; they differ in input
scaling only:
  arcface  RGB, (x - 127.5) / 127.5 (insightface's ArcFaceONNX; when the graph starts with its own
           Sub/Mul, insightface feeds raw pixels, and so do we)
  sface    RGB, 0..255 with no mean or scale (as OpenCV's FaceRecognizerSF feeds it), 128-d
The layout alone cannot tell these apart; SFace is recognised by its published sha256, by a name prefix
(`sface:FILE`) or by a description `FILE.json` ({"layout": "sface"}). Any input 1 x 3 x 112 x 112 or N x 3 x 112 x 112
with one N x D output is taken for an ArcFace-family model.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from facepipe.errors import ModelError
from facepipe.runtime.align import ARCFACE_TEMPLATE
from facepipe.runtime.hashing import file_fingerprint
from facepipe.runtime.layouts import ModelLayout, OnnxGraph, register_layout
from facepipe.runtime.onnx_session import open_session
from facepipe.runtime.preprocess import l2_normalize, to_network_input

PROFILES = {  # layout -> (colour, mean, std)
    "arcface": ("RGB", [127.5] * 3, [127.5] * 3),
    "arcface-raw": ("RGB", [0.0] * 3, [1.0] * 3),
    "sface": ("RGB", [0.0] * 3, [1.0] * 3),
}
DEFAULT_THRESHOLD = {"arcface": 0.3, "arcface-raw": 0.3, "sface": 0.363}


def is_112_recognizer(graph: OnnxGraph) -> bool:
    inputs, outputs = graph.inputs, graph.outputs
    if len(inputs) != 1 or len(outputs) < 1:
        return False
    shape = inputs[0][1]
    return len(shape) == 4 and shape[1] == 3 and shape[2] == 112 and shape[3] == 112 and len(outputs[0][1]) == 2


def normalises_itself(path: str | Path) -> bool:
    """insightface's test: a Sub or Mul among the graph's first nodes means it scales its own input."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(n.op_type in ("Sub", "Mul") or n.name.startswith(("Sub", "_minus", "_mul")) for n in graph.node[:8])


class ArcFaceRecognizer:
    """A 112 x 112 ArcFace-template recognizer from a third-party ONNX file; cosine similarity."""

    metric = "cosine"
    template = ARCFACE_TEMPLATE

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, layout: str = "arcface",
                 name: str | None = None, threshold: float | None = None, batch_size: int = 16):
        if layout not in PROFILES:
            raise ModelError(f"{path}: unknown recognizer layout {layout!r} (known: {', '.join(PROFILES)})")
        self.session, _, self.provider = open_session(path, device, threads)
        inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        outputs = [(o.name, o.shape) for o in self.session.get_outputs()]
        if not is_112_recognizer(OnnxGraph(Path(path), inputs, outputs)):
            raise ModelError(f"{path}: not a 112x112 recognizer (inputs {inputs}, outputs {outputs})")
        self.layout = layout
        self.color, self.mean, self.std = PROFILES[layout]
        self.name = name or Path(path).stem
        self.fingerprint = file_fingerprint(path, self.name)
        self.threshold = float(DEFAULT_THRESHOLD[layout] if threshold is None else threshold)
        self._input = inputs[0][0]
        self._fixed_batch = isinstance(inputs[0][1][0], int)
        self.batch_size = batch_size
        size = outputs[0][1][1]
        self.embedding_size = int(size) if isinstance(size, int) else int(self._run(np.zeros((1, 112, 112, 3),
                                                                                             np.uint8)).shape[1])

    def _run(self, chips: np.ndarray) -> np.ndarray:
        x = to_network_input(chips, self.color, self.mean, self.std)
        return self.session.run(None, {self._input: x})[0].reshape(len(chips), -1)

    def embed_raw(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        step = 1 if self._fixed_batch else self.batch_size
        return np.concatenate([self._run(chips[i:i + step]) for i in range(0, len(chips), step)]).astype(np.float32)

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return l2_normalize(self.embed_raw(chips))


def _registered(layout: str, recognises, recognised_by: str) -> ModelLayout:
    return register_layout(ModelLayout(
        name=layout, kind="recognizer", load=partial(ArcFaceRecognizer, layout=layout),
        default_threshold=DEFAULT_THRESHOLD[layout], recognises=recognises, recognised_by=recognised_by,
        metric=ArcFaceRecognizer.metric, template="arcface"))


_registered("arcface", lambda graph: is_112_recognizer(graph) and not normalises_itself(graph.path),
            "one input N x 3 x 112 x 112, one N x D output")
_registered("arcface-raw", lambda graph: is_112_recognizer(graph) and normalises_itself(graph.path),
            "as arcface, with its own Sub/Mul first (raw pixels in)")
_registered("sface", None, "its published sha256, `sface:FILE` or a description FILE.json")
