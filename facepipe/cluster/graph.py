"""The k-nearest-neighbour graph of a set of face embeddings, under the recognizer's own metric.

Similarities follow the JSON contract (facepipe.openset.matching): cosine of the vectors, or 1 - d^2/2 for a
Euclidean model, so one threshold scale serves every model. Up to EXACT_MAX faces the neighbours are exact
(faiss flat); above it a faiss inverted file (IVF-flat, ~2 sqrt(n) lists, NPROBE probed) finds them: faces of
one person sit in the same few lists, so it loses almost none of them, and 100,000 faces take seconds of CPU
instead of the minutes of an exact n^2 search on two cores (benchmarks/cluster.py --synthetic).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_MAX = 20_000
NPROBE = 8
TRAIN_PER_LIST = 40  # k-means sample per list: enough for centroids that only route queries


@dataclass
class Graph:
    """Undirected weighted edges i < j (no duplicates) over n faces."""

    n: int
    source: np.ndarray  # int64
    target: np.ndarray  # int64
    similarity: np.ndarray  # float32


def _prepared(embeddings: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    elif metric != "euclidean":
        raise ValueError(f"unknown metric {metric!r} (expected cosine or euclidean)")
    return np.ascontiguousarray(x, dtype=np.float32)


def knn(embeddings: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per face its k nearest other faces: (similarities, indices), n x k, best first; -1 pads."""
    import faiss

    x = _prepared(embeddings, metric)
    n, dim = x.shape
    k = min(k + 1, n)  # +1: the face itself comes back first
    if n == 0 or k <= 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    if n <= EXACT_MAX:
        index = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
    else:
        nlist = int(2 * np.sqrt(n))
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist,
                                   faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2)
        sample = np.random.default_rng(0).choice(n, min(n, TRAIN_PER_LIST * nlist), replace=False)
        index.train(x[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(x)
    scores, idx = index.search(x, k)
    if metric == "euclidean":  # faiss gives squared distances
        scores = 1.0 - np.maximum(scores, 0.0) / 2.0
    # drop each face itself (usually column 0, but ties and ANN misses mean: drop by identity)
    self_hit = idx == np.arange(n)[:, None]
    keep = ~self_hit
    keep[self_hit.sum(1) == 0, -1] = False  # no self found: drop the worst to keep k-1 columns
    sims = scores[keep].reshape(n, k - 1).astype(np.float32)
    nbrs = idx[keep].reshape(n, k - 1).astype(np.int64)
    return sims, nbrs


def knn_graph(embeddings: np.ndarray, metric: str, threshold: float, k: int = 20,
              groups: np.ndarray | None = None) -> Graph:
    """Edges between each face and those of its k nearest faces that score >= threshold; never between two
    faces of the same group (photo or video frame) -- they are two people by construction."""
    n = len(embeddings)
    sims, nbrs = knn(embeddings, metric, k)
    rows = np.repeat(np.arange(n), sims.shape[1])
    cols, vals = nbrs.ravel(), sims.ravel()
    keep = (cols >= 0) & (vals >= threshold)
    if groups is not None:
        groups = np.asarray(groups)
        keep &= groups[rows] != groups[np.maximum(cols, 0)]
    a, b, vals = rows[keep], cols[keep], vals[keep]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * n + hi
    _, first = np.unique(key, return_index=True)
    return Graph(n, lo[first], hi[first], vals[first].astype(np.float32))
