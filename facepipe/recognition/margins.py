"""Margin-based softmax logits: ArcFace, CosFace, SphereFace and their true combination.

For the target class with angle theta between embedding and class centre, the logit becomes

    s * (psi(m1 * theta + m2) - m3)

where psi(phi) = cos(phi) while phi <= pi. Past pi, cos turns back up, so a larger angle would earn a
*larger* logit and training would pull hard samples the wrong way (the "theta + m > pi" problem). psi
continues SphereFace's monotone extension: psi(phi) = (-1)^k cos(phi) - 2k for phi in [k pi, (k+1) pi],
continuous and strictly decreasing for every phi >= 0, and psi(phi) <= cos(theta) whenever m1 >= 1, m2 >= 0.

Special cases: (1, m2, 0) is ArcFace, (1, 0, m3) is CosFace, (m1, 0, 0) is SphereFace-style; any mix is
applied at once. (arcface_torch's CombinedMarginLoss is not a combination: with m1 == 1 and m3 == 0 it
applies ArcFace's m2; with m3 > 0 it applies CosFace's m3 alone, ignoring m1 and m2; any other setting,
SphereFace's m1 included, raises.)
`easy_margin` applies the margin only where cos(theta) > 0, as in the ArcFace reference code.
Other classes keep s * cos(theta). Labels equal to -1 (targets outside this Partial FC shard) are untouched.
"""
from __future__ import annotations

import math

import torch

_EPS = 1e-7


def psi(phi: torch.Tensor) -> torch.Tensor:
    """cos(phi) on [0, pi], extended past pi so that it keeps decreasing: (-1)^k cos(phi) - 2k."""
    k = torch.floor(phi / math.pi).clamp(min=0)
    sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
    return sign * torch.cos(phi) - 2.0 * k


def margin_target(cos_theta: torch.Tensor, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0,
                  easy_margin: bool = False) -> torch.Tensor:
    """The target-class cosine with the combined margin applied (before the scale s)."""
    cos_theta = cos_theta.float()
    if m1 == 1.0 and m2 == 0.0:
        target = cos_theta - m3  # CosFace: no angle needed, exact gradient everywhere
    else:
        theta = torch.acos(cos_theta.clamp(-1.0 + _EPS, 1.0 - _EPS))
        target = psi(m1 * theta + m2) - m3
    if easy_margin:
        target = torch.where(cos_theta > 0, target, cos_theta)
    return target


class CombinedMargin(torch.nn.Module):
    """logits (N x C cosines) + labels (N, -1 = no target here) -> s * margin logits."""

    def __init__(self, s: float = 64.0, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0, easy_margin: bool = False):
        super().__init__()
        if m1 < 1.0 or m2 < 0.0 or m3 < 0.0:
            raise ValueError(f"margins must make the target harder: need m1 >= 1, m2 >= 0, m3 >= 0 (got {m1}, {m2}, "
                             f"{m3})")
        self.s, self.m1, self.m2, self.m3, self.easy_margin = s, m1, m2, m3, easy_margin

    def forward(self, cos: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = cos.float()
        rows = torch.where(labels != -1)[0]
        if len(rows):
            cols = labels[rows]
            target = margin_target(cos[rows, cols], self.m1, self.m2, self.m3, self.easy_margin)
            cos = cos.index_put((rows, cols), target)  # out of place: autograd keeps the original cosines
        return cos * self.s

    def extra_repr(self) -> str:
        return f"s={self.s}, m1={self.m1}, m2={self.m2}, m3={self.m3}, easy_margin={self.easy_margin}"


def arcface(s: float = 64.0, m: float = 0.5) -> CombinedMargin:
    return CombinedMargin(s, 1.0, m, 0.0)


def cosface(s: float = 64.0, m: float = 0.4) -> CombinedMargin:
    return CombinedMargin(s, 1.0, 0.0, m)


def sphereface(s: float = 64.0, m: float = 1.35) -> CombinedMargin:
    return CombinedMargin(s, m, 0.0, 0.0)
