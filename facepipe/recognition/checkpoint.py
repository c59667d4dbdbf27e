"""Recognizer checkpoints: what they hold, how they are checked, how a backbone is rebuilt from one.

A checkpoint is a plain dict (tensors, numbers, strings, lists) loaded with weights_only=True:
  kind "recognizer", format, backbone (registry name), backbone_args (its constructor arguments),
  embedding_size, model (backbone state_dict), preprocess {color, mean, std, input_size [w, h], template},
  verification (last verification results incl. the recommended threshold) and, for resuming: head
  (this rank's Partial FC shard), optimizer, scaler, step, epoch, rng, world_size, config.
Ranks other than 0 write their own head / optimizer / RNG next to it (`<name>.rank<r>.pt`).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facepipe.errors import ModelError
from facepipe.recognition.backbones import build_backbone
from facepipe.train.checkpoint import check_format, load_checkpoint

KIND = "recognizer"
FORMAT = 1


def rank_path(path: str | Path, rank: int) -> Path:
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def load_recognizer_checkpoint(path: str | Path, backbone: str | None = None, embedding_size: int | None = None,
                               map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a recognizer checkpoint; with backbone / embedding_size given, insist that they match."""
    state = load_checkpoint(path, map_location)
    kind = state.get("kind")
    if kind != KIND:
        raise ModelError(f"{path}: not a recognizer checkpoint (kind={kind!r})")
    check_format(state, path, KIND, FORMAT)
    for key in ("backbone", "backbone_args", "embedding_size", "model", "preprocess"):
        if key not in state:
            raise ModelError(f"{path}: recognizer checkpoint without {key!r}")
    problems = []
    if backbone is not None and state["backbone"] != backbone:
        problems.append(f"backbone {state['backbone']!r} (this run uses {backbone!r})")
    if embedding_size is not None and int(state["embedding_size"]) != int(embedding_size):
        problems.append(f"embedding size {state['embedding_size']} (this run uses {embedding_size})")
    if problems:
        raise ModelError(f"{path}: checkpoint was made for " + " and ".join(problems)
                         + "; pick a matching config or a checkpoint of this architecture")
    return state


def build_backbone_from(state: dict[str, Any], path: str | Path = "checkpoint") -> torch.nn.Module:
    """The backbone described by a checkpoint, with its weights, in eval mode."""
    model = build_backbone(state["backbone"], **state["backbone_args"])
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not fit backbone {state['backbone']!r} "
                         f"({len(missing)} missing, {len(unexpected)} unexpected tensors, e.g. "
                         f"{(missing or unexpected)[0]})")
    return model.eval()


def weights_fingerprint(name: str, model_state: dict[str, torch.Tensor]) -> str:
    """Identifies an embedding space by its weights (the same for the .pt and its ONNX export)."""
    digest = hashlib.sha256()
    for key in sorted(model_state):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(model_state[key].detach().cpu().float().numpy()).tobytes())
    return f"{name}:{digest.hexdigest()[:16]}"
