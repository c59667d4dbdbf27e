"""ONNX Runtime sessions that say where they really run.

onnxruntime-gpu quietly falls back to the CPU when CUDA libraries are missing; we check the providers
the session actually got and warn loudly when CUDA was asked for and not obtained.
"""
from __future__ import annotations

import os
from pathlib import Path

from facepipe import log
from facepipe.errors import ModelError
from facepipe.runtime.device import wants_cuda
from facepipe.runtime.onnx_meta import check_format, decode_metadata


def default_threads() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def open_session(path: str | Path, device: str = "cpu", threads: int | None = None, model_bytes: bytes | None = None):
    """Open an ONNX model on `device` ("cpu", "cuda" or "auto"); return (session, metadata, provider).

    model_bytes: run these bytes instead of the file (e.g. the file with its input made dynamic); `path` still
    names the model in messages."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    available = ort.get_available_providers()
    want_cuda = wants_cuda(device)
    providers = ["CUDAExecutionProvider",
                 "CPUExecutionProvider"] if want_cuda and "CUDAExecutionProvider" in available \
        else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.log_severity_level = 3
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
