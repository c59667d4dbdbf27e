"""Batch samplers whose order is a pure function of (seed, epoch, rank): resuming mid-epoch is exact.

Each sampler yields batches of (dataset index, augmentation seed) pairs, so that random augmentation in
DataLoader workers is reproducible whatever the number of workers.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np


def _aug_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**31 - 1, size=n, dtype=np.int64)


class EpochBatchSampler:
    """Shuffled batches over the dataset; with several ranks each takes every world_size-th batch.

    Every rank gets the same number of full batches (the remainder of the epoch is dropped).
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if num_samples < batch_size * world_size:
            raise ValueError(f"{num_samples} training images are fewer than one batch per rank "
                             f"({batch_size} x {world_size}): lower batch_size")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch; start_batch skips that many batches (resuming in the middle of an epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.n // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = _aug_seeds(rng, self.n)
        for b in range(self.start_batch, len(self)):
            start = (b * self.world_size + self.rank) * self.batch_size
            idx = order[start:start + self.batch_size]
            yield [(int(i), int(seeds[i])) for i in idx]


class IdentityBalancedBatchSampler(EpochBatchSampler):
    """P identities x K images per batch (FaceNet / batch-hard triplets); identities with < 2 images are skipped.

    Identities are visited in a shuffled order; one with fewer than K images repeats images. An epoch is
    (number of usable identities) // (P * world_size) batches.
    """

    def __init__(self, labels: Sequence[int], identities_per_batch: int, images_per_identity: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.by_label: dict[int, list[int]] = defaultdict(list)
        for i, label in enumerate(labels):
            self.by_label[int(label)].append(i)
        self.identities = sorted(k for k, v in self.by_label.items() if len(v) >= 2)
        self.p, self.k = identities_per_batch, images_per_identity
        if self.p < 2 or self.k < 2:
            raise ValueError("identity-balanced batches need at least 2 identities and 2 images per identity")
        if len(self.identities) < self.p * world_size:
            raise ValueError(f"only {len(self.identities)} identities have 2+ images; need identities_per_batch x "
                             f"ranks "
                             f"= {self.p * world_size}")
        super().__init__(len(self.identities), self.p, seed, rank, world_size)
        self.batch_size = self.p * self.k

    def __len__(self) -> int:
        return len(self.identities) // (self.p * self.world_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        ids = [self.identities[i] for i in rng.permutation(len(self.identities))]
        picks = []
        for ident in ids:  # draw every batch's images up front so that skipping batches changes nothing
            pool = self.by_label[ident]
            chosen = rng.choice(len(pool), self.k, replace=len(pool) < self.k)
            picks.append([(pool[c], int(s)) for c, s in zip(chosen, _aug_seeds(rng, self.k))])
        for b in range(self.start_batch, len(self)):
            start = (b * self.world_size + self.rank) * self.p
            yield [item for group in picks[start:start + self.p] for item in group]
