"""The index of persons beside the index of faces: each person's embedding sum and face count, stored with the
person (SQLite: two columns of `persons`, written in the same transaction as the face), so ranking a person by its
centroid (facepipe.openset.matching.person_scores, "centroid") reads one row per person instead of all its faces.
A person with a million faces then costs a query what a person with five costs.

The sum is of what the centroid averages under the gallery's metric: unit vectors for cosine, raw vectors for a
distance metric; float64, so a million additions and removals do not drift.
"""
from __future__ import annotations

import numpy as np


def contribution(embeddings: np.ndarray, metric: str) -> np.ndarray:
    """What faces add to their person's sum (N x D float64)."""
    f = np.atleast_2d(np.asarray(embeddings, dtype=np.float64))
    if metric == "cosine":
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    return f


def add_to(blob: bytes | None, embeddings: np.ndarray, metric: str) -> bytes:
    """A stored sum (None: no face yet) with these faces added, as stored."""
    add = contribution(embeddings, metric).sum(0)
    return (add if blob is None else np.frombuffer(blob, np.float64) + add).tobytes()


def centroids(sums: list[bytes], counts: list[int]) -> np.ndarray:
    """P x D float32 centroids from stored sums and counts."""
    if not sums:
        return np.zeros((0, 0), np.float32)
    matrix = np.frombuffer(b"".join(sums), np.float64).reshape(len(sums), -1)
    return (matrix / np.maximum(np.asarray(counts, np.float64), 1)[:, None]).astype(np.float32)
