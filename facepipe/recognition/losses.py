"""Losses on margin logits (cross-entropy, focal), sharded or not, and the FaceNet triplet loss with mining.

`softmax_loss` works on logits whose classes may be split across ranks (Partial FC): every rank holds the
same rows (the gathered batch) and its own columns; label -1 marks a target that lives on another rank.
The softmax denominator and the target logit are summed across ranks in the forward pass. In the backward
pass each rank differentiates only its own columns, which is exactly its share of the global gradient, so
the reductions are identities there (arcface_torch's DistCrossEntropy, without the hand-written backward).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


class _SumAcrossRanks(torch.autograd.Function):
    """all_reduce(SUM) forward; identity backward (each rank back-propagates its own share)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def _sharded(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def log_prob_of_target(logits: torch.Tensor, labels: torch.Tensor, group=None) -> torch.Tensor:
    """log softmax(logits)[label] per row, the softmax taken over the classes of all ranks."""
    logits = logits.float()
    sharded = _sharded(group)
    with torch.no_grad():
        row_max = logits.max(dim=1).values
        if sharded:
            dist.all_reduce(row_max, op=dist.ReduceOp.MAX, group=group)
    sum_exp = torch.exp(logits - row_max[:, None]).sum(dim=1)
    has = labels != -1
    target = torch.zeros_like(row_max).masked_scatter(has, logits[has, labels[has]]) if sharded \
        else logits.gather(1, labels[:, None]).squeeze(1)
    if sharded:
        sum_exp = _SumAcrossRanks.apply(sum_exp, group)
        target = _SumAcrossRanks.apply(target, group)
    return target - row_max - torch.log(sum_exp)


def softmax_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce", gamma: float = 2.0,
                 group=None) -> torch.Tensor:
    """Mean cross-entropy ("ce") or focal loss ("focal": (1 - p)^gamma * CE, Lin et al. 2017)."""
    logp = log_prob_of_target(logits, labels, group)
    if kind == "ce":
        return -logp.mean()
    if kind == "focal":
        return -((1.0 - logp.exp()).pow(gamma) * logp).mean()
    raise ValueError(f"unknown classification loss {kind!r} (ce | focal)")


def pairwise_sq_dist(x: torch.Tensor) -> torch.Tensor:
    """Squared euclidean distances between rows (of unit vectors: 2 - 2 cos)."""
    sq = (x * x).sum(1)
    return (sq[:, None] - 2.0 * x @ x.T + sq[None, :]).clamp(min=0.0)


class TripletLoss(torch.nn.Module):
    """FaceNet's triplet loss on L2-normalised embeddings, with online mining inside the batch.

    mining="hard": per anchor, the farthest positive and the nearest negative (batch-hard, Hermans 2017).
    mining="semi-hard": per anchor-positive pair, the nearest negative that is still farther than the
    positive (d_ap < d_an); pairs with no such negative use the nearest negative (Schroff 2015).
    Batches must hold several images per identity (see sampler.IdentityBalancedBatchSampler).
    `last_active` is the fraction of mined triplets with a positive loss (the "hard samples" of the seed notes).
    """

    def __init__(self, margin: float = 0.2, mining: str = "semi-hard"):
        super().__init__()
        if mining not in ("hard", "semi-hard"):
            raise ValueError(f"unknown triplet mining {mining!r} (hard | semi-hard)")
        self.margin, self.mining = margin, mining
        self.last_active = 0.0

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = F.normalize(embeddings.float(), dim=1)
        d = pairwise_sq_dist(x)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=x.device)
        pos_mask, neg_mask = same & ~eye, ~same
        inf = torch.tensor(float("inf"), device=x.device)
        if self.mining == "hard":
            valid = pos_mask.any(1) & neg_mask.any(1)
            d_ap = torch.where(pos_mask, d, -inf).max(1).values
            d_an = torch.where(neg_mask, d, inf).min(1).values
            losses = F.relu(d_ap - d_an + self.margin)[valid]
        else:
            a_idx, p_idx = torch.where(pos_mask)
            if len(a_idx) == 0 or not neg_mask.any():
                self.last_active = 0.0
                return embeddings.sum() * 0.0
            d_ap = d[a_idx, p_idx]
            d_an_all = torch.where(neg_mask[a_idx], d[a_idx], inf)  # pairs x batch
            semi = d_an_all > d_ap[:, None]
            d_semi = torch.where(semi, d_an_all, inf).min(1).values
            d_hard = d_an_all.min(1).values
            d_an = torch.where(torch.isfinite(d_semi), d_semi, d_hard)
            keep = torch.isfinite(d_an)
            losses = F.relu(d_ap - d_an + self.margin)[keep]
        if len(losses) == 0:
            self.last_active = 0.0
            return embeddings.sum() * 0.0
        self.last_active = float((losses > 0).float().mean())
        return losses.mean()
