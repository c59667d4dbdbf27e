"""Partial FC (An et al. 2022, arXiv:2203.15565): class centres sharded across ranks, negatives sampled.

Each rank keeps the centres of its own slice of the classes. The forward pass gathers the embeddings of
the whole global batch from all ranks, computes cosines against the local centres (only the sampled ones
when sample_rate < 1: every positive class of the batch plus random negatives), applies the margin and
the softmax loss across ranks (losses.softmax_loss). With one process and no process group it is a plain
normalised linear layer + margin softmax.

Gradient bookkeeping under DDP: the embedding gradient arriving from every rank's shard is summed and
returned to the rank that owns those rows, multiplied by the world size, because DDP divides the
backbone gradients by the world size; backbone updates then equal single-process training on the global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from facepipe.recognition.losses import softmax_loss
from facepipe.recognition.margins import CombinedMargin


class _GatherRows(torch.autograd.Function):
    """all_gather along dim 0 (equal sizes); backward: sum the gradients of all ranks, keep our rows * world."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:
        world = dist.get_world_size(group)
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.group, ctx.rank, ctx.world, ctx.n = group, dist.get_rank(group), world, x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        mine = grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]
        return mine * ctx.world, None


def class_shard(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """(first class, number of classes) held by `rank`: contiguous slices, sizes differ by at most one."""
    base, extra = divmod(num_classes, world_size)
    return rank * base + min(rank, extra), base + (1 if rank < extra else 0)


class PartialFC(torch.nn.Module):
    def __init__(self, embedding_size: int, num_classes: int, margin: CombinedMargin | None = None,
                 sample_rate: float = 1.0, loss: str = "ce", focal_gamma: float = 2.0, group=None):
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
        self.group = group
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank(group) if distributed else 0
        self.world_size = dist.get_world_size(group) if distributed else 1
        self.num_classes, self.embedding_size = num_classes, embedding_size
        self.class_start, self.num_local = class_shard(num_classes, self.rank, self.world_size)
        self.num_sample = max(1, int(round(sample_rate * self.num_local)))
        self.sample_rate = sample_rate
        self.margin = margin or CombinedMargin()
        self.loss_kind, self.focal_gamma = loss, focal_gamma
        self.weight = torch.nn.Parameter(torch.normal(0, 0.01, (self.num_local, embedding_size)))
        # training accuracy of the last batch (argmax over the sampled classes), a 0-dim device tensor:
        # reading it is a host sync, which the trainer does on logging steps only
        self.last_accuracy = torch.zeros(())

    def extra_repr(self) -> str:
        return (f"classes {self.class_start}..{self.class_start + self.num_local - 1} of {self.num_classes} "
                f"(rank {self.rank}/{self.world_size}), sample_rate={self.sample_rate}")

    def _gather(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.world_size == 1:
            return embeddings, labels
        parts = [torch.empty_like(labels) for _ in range(self.world_size)]
        dist.all_gather(parts, labels.contiguous(), group=self.group)
        return _GatherRows.apply(embeddings, self.group), torch.cat(parts)

    def _sample(self, local_labels: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Indices of the centres to use (all positives + random negatives) and labels re-indexed into them."""
        if self.num_sample >= self.num_local:
            return None, local_labels
        has = local_labels != -1
        score = torch.rand(self.num_local, device=local_labels.device)
        score[local_labels[has]] = 2.0  # positives always win
        # a batch holds at most len(labels) positives: when the sample is at least that large no count is
        # needed (counting them would be a host sync on every step)
        k = self.num_sample if self.num_sample >= len(local_labels) else max(self.num_sample, int((score > 1.0).sum()))
        index = torch.topk(score, k, sorted=False).indices.sort().values
        local_labels = local_labels.clone()
        local_labels[has] = torch.searchsorted(index, local_labels[has])
        return index, local_labels

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Local batch embeddings (N x D) and global class labels (N) -> the loss over the global batch."""
        embeddings, labels = self._gather(embeddings, labels.long())
        local = labels - self.class_start
        local = torch.where((local >= 0) & (local < self.num_local), local, torch.full_like(local, -1))
        index, local = self._sample(local)
        weight = self.weight if index is None else self.weight[index]
        cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(weight.float(), dim=1)).clamp(-1, 1)
        logits = self.margin(cos, local)
        self.last_accuracy = self._accuracy(cos.detach(), local)
        return softmax_loss(logits, local, self.loss_kind, self.focal_gamma,
                            self.group if self.world_size > 1 else None)

    def _accuracy(self, cos: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """Fraction of the global batch whose best cosine (over all ranks' sampled centres) is its own class."""
        best = cos.max(1).values
        has = local != -1
        own = torch.where(has, cos.gather(1, local.clamp(min=0)[:, None])[:, 0], torch.full_like(best, -2.0))
        if self.world_size > 1:
            both = torch.stack([best, own])
            dist.all_reduce(both, op=dist.ReduceOp.MAX, group=self.group)  # one collective, no host sync
            best, own = both[0], both[1]
        return (own >= best).float().mean()

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Global class index of the nearest centre for each row (every rank must call it with the same rows)."""
        cos = F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))
        best, idx = cos.max(1)
        idx = idx + self.class_start
        if self.world_size > 1:
            top = best.clone()
            dist.all_reduce(top, op=dist.ReduceOp.MAX, group=self.group)
            idx = torch.where(best == top, idx, torch.full_like(idx, -1))
            dist.all_reduce(idx, op=dist.ReduceOp.MAX, group=self.group)
        return idx
