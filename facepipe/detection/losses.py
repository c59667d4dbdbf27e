"""Losses: penalty-reduced focal loss on the heatmap (CornerNet/CenterNet), masked L1 on regressions."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, target: torch.Tensor, centres: torch.Tensor,
               alpha: float = 2.0, beta: float = 4.0, weight: torch.Tensor | None = None) -> torch.Tensor:
    """CenterNet's focal loss from logits, normalised by the number of face centres.

    weight (0 on ignore regions, 1 elsewhere) multiplies every cell's term.

    centres is the centre indicator (1 at each face's cell): positives are taken from it, not from
    `target == 1`, so a float rounding in the Gaussian can never turn a centre into a negative.
    """
    logits, target, centres = logits.float(), target.float(), centres.float()
    p = torch.sigmoid(logits)
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    pos = centres * (1 - p) ** alpha * log_p
    neg = (1 - centres) * (1 - target) ** beta * p ** alpha * log_not_p
    if weight is not None:
        pos, neg = pos * weight.float(), neg * weight.float()
    return -(pos.sum() + neg.sum()) / centres.sum().clamp(min=1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smooth_beta: float = 0.0) -> torch.Tensor:
    """Mean L1 (smooth-L1 when smooth_beta > 0) over the elements where mask is 1 (mask broadcasts over channels)."""
    pred, target = pred.float(), target.float()
    mask = mask.float().expand_as(pred)
    if smooth_beta > 0:
        err = F.smooth_l1_loss(pred, target, reduction="none", beta=smooth_beta)
    else:
        err = (pred - target).abs()
    return (err * mask).sum() / mask.sum().clamp(min=1.0)


@dataclass
class LossWeights:
    hm: float = 1.0
    wh: float = 1.0
    off: float = 1.0
    lm: float = 0.5
    lm_smooth_beta: float = 0.0


def detector_loss(outputs, targets: dict[str, torch.Tensor], weights: LossWeights) -> dict[str, torch.Tensor]:
    """(hm logits, wh, off, lm) and batched targets -> {"loss", "hm", "wh", "off", "lm"}."""
    hm, wh, off, lm = outputs
    parts = {
        "hm": focal_loss(hm, targets["hm"], targets["reg_mask"], weight=targets.get("hm_weight")),
        "wh": masked_l1(wh, targets["wh"], targets["reg_mask"]),
        "off": masked_l1(off, targets["off"], targets["reg_mask"]),
        "lm": masked_l1(lm, targets["lm"], targets["lm_mask"], weights.lm_smooth_beta),
    }
    parts["loss"] = (weights.hm * parts["hm"] + weights.wh * parts["wh"] + weights.off * parts["off"]
                     + weights.lm * parts["lm"])
    return parts
