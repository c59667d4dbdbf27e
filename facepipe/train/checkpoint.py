"""Checkpoints: written atomically, read with weights_only=True (no arbitrary pickle)."""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facepipe.errors import ModelError
from facepipe.runtime.files import exclusive_temp


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write to a temp file then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = exclusive_temp(path)  # unpredictable, O_EXCL: nothing planted there is written through
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable facepipe checkpoint ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{path}: not a facepipe checkpoint (expected a dict)")
    return state


def check_format(state: dict[str, Any], path: str | Path, kind: str, current: int) -> None:
    """Refuse a checkpoint written in a newer format than this facepipe reads, saying so."""
    fmt = state.get("format", current)
    if not isinstance(fmt, int) or fmt > current:
        raise ModelError(f"{path}: {kind} checkpoint format {fmt!r}, written by a newer facepipe (this one reads "
                         f"format {current} and older): upgrade facepipe to use it")


def capture_rng() -> dict[str, Any]:
    """RNG states as plain Python lists, so they survive weights_only loading and come back on the CPU
    whatever `map_location` a loader uses (tensors mapped to a GPU cannot be handed to torch.set_rng_state)."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy_keys": np_state[1].astype(np.int64).tolist(),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def _bytes(value: Any) -> torch.Tensor:
    """A CPU uint8 tensor from a list (this format) or a tensor (older checkpoints, possibly on a GPU)."""
    return value.detach().to("cpu", torch.uint8) if isinstance(value, torch.Tensor) else torch.tensor(value,
                                                                                                      dtype=torch.uint8)


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate((3, tuple(int(v) for v in state["python"]), state["python_pos"]))
    keys = state["numpy_keys"]
    keys = (keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)).astype(np.uint32)
    np.random.set_state(("MT19937", keys, int(state["numpy_pos"]), 0, 0.0))
    torch.set_rng_state(_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([_bytes(s) for s in state["cuda"]])
