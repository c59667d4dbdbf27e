"""The metadata contract of facepipe's ONNX models.

Every exported model carries its own preprocessing in ONNX `metadata_props`, so the runtime reads it
instead of guessing. Keys are plain strings; each value is JSON-encoded.

Common keys:
  facepipe.kind      "detector" | "recognizer"
  facepipe.format    1 (bump when the contract changes)
  name               human name of the model (e.g. "mobilefacenet", "dlib_resnet_v1")
  color              "RGB" | "BGR" | "GRAY": channel order the network expects
  mean, std          per-channel lists, applied as (pixel - mean) / std on 0..255 values
  input_size         [width, height] for fixed-size inputs (recognizers)

Recognizer keys:
  template           5x2 list: where the standard 5 landmarks sit in the input chip (pixels)
  embedding_size     int
  threshold          recommended similarity threshold (from a verification run; facepipe.openset.matching)
  metric             "cosine" (facepipe's exports: embeddings are L2-normalised) or "euclidean"
                     (dlib's ResNet: raw descriptors, similarity = 1 - d^2/2)

Detector keys:
  input_rule         {"multiple_of": 32, "max_side": 640, "enlarge": false}: how to size the network input
                     (long side shrunk to max_side; enlarge: small photos enlarged to it too)
  training           facepipe's own releases: run, network, epochs, data entries, data_sha256
  strides            [4]: output stride(s)
  outputs            ["hm", "wh", "off", "lm"]: output names in order
  decode             "centernet"
  score_threshold    default score threshold
"""
from __future__ import annotations

import json
from typing import Any

FORMAT = 1


def write_metadata(model, meta: dict[str, Any]) -> None:
    """Set metadata_props on an onnx.ModelProto (in place), JSON-encoding each value."""
    del model.metadata_props[:]
    for key, value in {"facepipe.format": FORMAT, **meta}.items():
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = json.dumps(value)


def check_format(meta: dict[str, Any], path) -> None:
    """Refuse a model whose metadata contract is newer than this facepipe's (files without the key are third-party)."""
    from facepipe.errors import ModelError

    fmt = meta.get("facepipe.format")
    if fmt is None:
        return
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise ModelError(f"{path}: facepipe model format {fmt!r}, written by a newer facepipe (this one reads "
                         f"format {FORMAT} and older): upgrade facepipe to use it")


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """Decode a {key: json-string} map, as onnxruntime's custom_metadata_map gives it."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out
