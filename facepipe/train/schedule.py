"""The learning-rate schedule both trainers use: a multiplier of the base rates at each optimizer step."""
from __future__ import annotations

import math
from typing import Sequence

SCHEDULES = ("poly", "cosine", "step", "constant")


def lr_factor(step: int, total: int, warmup: int = 0, schedule: str = "cosine", min_ratio: float = 0.0,
              poly_power: float = 2.0, milestones: Sequence[float] = (), gamma: float = 0.1) -> float:
    """Linear warm-up over `warmup` steps, then `schedule` from 1 down to `min_ratio` at `total`.

    poly: (1 - t) ** poly_power; cosine: half a cosine; step: gamma ** (milestones passed, as fractions of
    `total`); constant: 1. t runs from 0 after the warm-up to 1 at `total`.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "step":
        return gamma ** sum(step >= m * total for m in milestones)
    if schedule == "constant":
        return 1.0
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "poly":
        decay = (1.0 - t) ** poly_power
    elif schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ValueError(f"unknown schedule {schedule!r} (one of {', '.join(SCHEDULES)})")
    return min_ratio + (1.0 - min_ratio) * decay
