"""Nearest-neighbour search over gallery embeddings: exact numpy when small, faiss IVF when large.

Embeddings are unit vectors, so inner product = cosine similarity. Below `IVF_MIN` vectors an exact
matrix product is fast enough (well under a millisecond per query at 10k x 512); above it an inverted-file
index probes the few clusters nearest to the query. `nprobe` trades speed for exactness; the benchmark
(benchmarks/search_bench.py) measures both.
"""
from __future__ import annotations

import math
import os

import numpy as np

IVF_MIN = 50_000


def ann_min() -> int:
    """Gallery size from which the gallery searches a (persisted) IVF index; FACEPIPE_ANN_MIN overrides it
    (tests force the index path on small galleries with it)."""
    return int(os.environ.get("FACEPIPE_ANN_MIN") or IVF_MIN)


def ivf_lists(size: int) -> int:
    return max(1, int(4 * math.sqrt(size)))


def default_nprobe(nlist: int) -> int:
    # About 1/64 of the lists: at 1M faces (4,000 lists) ~10 ms per query with 99.85% exact top-1 on
    # face-like synthetic data, and the right person found even where the best face is missed
    # (docs/benchmarks.md). Probing more lists buys exactness with time: set `nprobe`.
    return min(nlist, max(32, nlist // 64))


def train_ivf(sample: np.ndarray, size: int | None = None, seed: int = 0, l2: bool = False):
    """An empty, trained faiss IVF-Flat (inner product; `l2`: Euclidean) for a gallery of `size` vectors (default:
    the sample's). It trains on at most 64 vectors per list drawn from `sample`."""
    import faiss

    size = size or len(sample)
    dim = sample.shape[1]
    nlist = min(ivf_lists(size), len(sample))
    if len(sample) > 64 * nlist:
        sample = sample[np.random.default_rng(seed).choice(len(sample), size=64 * nlist, replace=False)]
    if l2:
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist, faiss.METRIC_L2)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # small forced-ANN galleries: no warning spam
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    index.nprobe = default_nprobe(nlist)
    return index


class EmbeddingIndex:
    def __init__(self, embeddings: np.ndarray, nprobe: int | None = None):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        self.size = len(self.embeddings)
        self.kind = "numpy" if self.size < IVF_MIN else "faiss-ivf"
        self._faiss = None
        if self.kind == "faiss-ivf":
            self._faiss = self._build_ivf(nprobe)

    def _build_ivf(self, nprobe: int | None):
        index = train_ivf(self.embeddings)
        index.add(self.embeddings)
        if nprobe:
            index.nprobe = nprobe
        return index

    @property
    def nlist(self) -> int | None:
        return None if self._faiss is None else self._faiss.nlist

    @property
    def nprobe(self) -> int | None:
        return None if self._faiss is None else self._faiss.nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if self._faiss is not None:
            self._faiss.nprobe = value

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (similarities, indices) per query, best first; -1 indices pad short results."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.size)
        if self.size == 0 or k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        if self._faiss is not None:
            sims, idx = self._faiss.search(queries, k)
            return sims, idx
        return exact_search(self.embeddings, queries, k)


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product (also the ground truth for the benchmark)."""
    sims = np.atleast_2d(queries) @ embeddings.T
    k = min(k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < sims.shape[1] else np.tile(np.arange(sims.shape[1]),
                                                                                          (len(sims), 1))
    part_sims = np.take_along_axis(sims, part, axis=1)
    order = np.argsort(-part_sims, axis=1, kind="stable")
    return np.take_along_axis(part_sims, order, axis=1), np.take_along_axis(part, order, axis=1)
