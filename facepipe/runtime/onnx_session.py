"""ONNX Runtime sessions that say where they really run, opened only on files that keep to their folder.

onnxruntime-gpu quietly falls back to the CPU when CUDA libraries are missing; we check the providers
the session actually got and warn loudly when CUDA was asked for and not obtained.

A model file may keep tensors in "external data" files named inside it. Before any session is built, every
such name is resolved (symlinks too) and must lie inside the model's own folder, and may not be a hard link:
a file given to facepipe cannot make it read /etc/passwd or another user's files. The pinned onnx (1.21) and
onnxruntime (1.24.3) releases refuse paths that escape the folder too, but ONNX Runtime still follows a hard
link; checking here does not depend on either.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from facepipe import log
from facepipe.errors import ModelError
from facepipe.runtime.device import wants_cuda
from facepipe.runtime.onnx_meta import check_format, decode_metadata


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _tensors(graph) -> Iterator:
    """Every tensor a graph holds: initializers, sparse ones, node attributes, and those of subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def check_external_data(path: str | Path) -> None:
    """ModelError when a tensor's external data lies outside the model's folder (absolute, '..', or a symlink
    leading out). Reads the graph only, never the external files."""
    import onnx

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise several kinds for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable ONNX model ({first[:200]})") from None
    folder = path.resolve().parent
    for tensor in _tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder):
            raise ModelError(f"{path}: tensor {tensor.name[:80]!r} keeps its data in {location[:200]!r}, outside the "
                             "model's folder (refused: a model file may only use files beside it)")
        # A hard link looks like a file of the folder but may be any file of the disk (ONNX Runtime follows it).
        if target.is_file() and target.stat().st_nlink > 1:
            raise ModelError(f"{path}: tensor {tensor.name[:80]!r} keeps its data in {location[:200]!r}, a file with "
                             "other hard links (refused: it may be a file from outside the model's folder)")


def open_session(path: str | Path, device: str = "cpu", threads: int | None = None, model_bytes: bytes | None = None,
                 optimize: bool = True):
    """Open an ONNX model on `device` ("cpu", "cuda" or "auto"); return (session, metadata, provider).

    model_bytes: run these bytes instead of the file (e.g. the file with its input made dynamic); `path` still
    names the model in messages. optimize=False builds the graph as it is written: no constant folding, so a
    small file cannot unfold into gigabytes of constants while it is only being looked at."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    check_external_data(path)
    available = ort.get_available_providers()
    want_cuda = wants_cuda(device)
    providers = ["CUDAExecutionProvider",
                 "CPUExecutionProvider"] if want_cuda and "CUDAExecutionProvider" in available \
        else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    # No busy-waiting between runs: spinning threads took the CPU from the next request in `facepipe serve`
    # (HTTP overhead p50 11-15 ms -> 6-7 ms) and, on a busy machine, made identify itself slower (6.2 -> 3.9-4.7 s
    # wall, 4.0 -> 2.6-3.0 s CPU for 16 people/ photos); see docs/serve.md.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = ort.InferenceSession(model_bytes if model_bytes is not None else str(path), sess_options=options,
                                       providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a usable ONNX model ({first[:200]})") from None
    used = session.get_providers()[0]
    if device == "cuda" and used != "CUDAExecutionProvider":
        log.warn(
            f"CUDA was requested for {path.name} but ONNX Runtime is running it on {used} "
            f"(available providers: {', '.join(available)}). Install onnxruntime-gpu with a matching CUDA, "
            "or pass --device cpu to silence this."
        )
    meta = decode_metadata(session.get_modelmeta().custom_metadata_map)
    check_format(meta, path)
    return session, meta, used
