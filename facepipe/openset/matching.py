"""How a query is scored against the gallery's persons (the threshold that says "unknown": policy.py).

Pure functions over (query embeddings, the gallery's face matrix, the face labels), so any gallery
backend can call them. Every score here is a *similarity*: higher = more alike, whatever the model's
metric (see `similarity_from_distance` for a distance metric).
"""
from __future__ import annotations

import numpy as np

from facepipe.types import Candidate

METRICS = ("cosine", "euclidean")
AGGREGATIONS = ("best", "best_two", "centroid", "blend")
DEFAULT_AGGREGATION = "centroid"  # chosen by benchmarks/open_set.py --variants (docs/open_set.md)
BLEND = 0.5  # weight of the best face in "blend"; the rest goes to the person's centroid


def similarity_from_distance(distance: np.ndarray) -> np.ndarray:
    """Euclidean distance -> the `similarity` of the JSON contract: 1 - d**2 / 2.

    Decreasing in d, so rankings and thresholds mean the same in either form; for unit vectors it is
    exactly their cosine. For dlib's raw descriptors face_recognition's tolerance d = 0.6 maps to 0.82.
    The distance itself is reported next to it as "distance" (`distance_from_similarity`)."""
    d = np.asarray(distance, dtype=np.float64)
    return (1.0 - d * d / 2.0).astype(np.float32)


def distance_from_similarity(similarity: np.ndarray) -> np.ndarray:
    """The inverse of `similarity_from_distance`."""
    s = np.asarray(similarity, dtype=np.float64)
    return np.sqrt(np.maximum(0.0, 2.0 * (1.0 - s))).astype(np.float32)


def candidate(identity: str, similarity: float, metric: str) -> Candidate:
    """A ranked person under the model's metric: a distance metric also carries the distance (the JSON's
    optional "distance")."""
    distance = float(distance_from_similarity(similarity)) if metric != "cosine" else None
    return Candidate(identity, float(similarity), distance)


def pairwise_similarity(queries: np.ndarray, faces: np.ndarray, metric: str) -> np.ndarray:
    """Q x N similarities under the model's metric: cosine of the vectors, or the mapped Euclidean distance."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    f = np.atleast_2d(np.asarray(faces, dtype=np.float32))
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        fn = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
        return qn @ fn.T
    if metric == "euclidean":
        sq = (q * q).sum(1)[:, None] + (f * f).sum(1)[None] - 2.0 * q @ f.T
        return similarity_from_distance(np.sqrt(np.maximum(sq, 0.0)))
    raise ValueError(f"unknown metric {metric!r} (expected one of {METRICS})")


def person_centroids(faces: np.ndarray, labels: np.ndarray, n_persons: int, metric: str) -> np.ndarray:
    """Each person's mean face (of unit vectors for cosine, of raw vectors for a distance)."""
    f = np.asarray(faces, dtype=np.float64)
    if metric == "cosine":
        f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    labels = np.asarray(labels, dtype=np.int64)
    sums = np.zeros((n_persons, f.shape[1]))
    if len(labels):  # each person's faces summed as one run (np.add.at is ~10x slower on many small groups)
        order = np.argsort(labels, kind="stable")
        grouped = labels[order]
        starts = np.flatnonzero(np.r_[True, grouped[1:] != grouped[:-1]])
        sums[grouped[starts]] = np.add.reduceat(f[order], starts, axis=0)
    counts = np.bincount(labels, minlength=n_persons)[:, None]
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def person_scores(queries: np.ndarray, faces: np.ndarray, labels: np.ndarray, n_persons: int,
                  metric: str = "cosine", aggregation: str = DEFAULT_AGGREGATION) -> np.ndarray:
    """Q x P: how alike each query is to each person, from all of that person's faces.

    best      the person's most similar face (face_recognition's rule)
    best_two  the mean of the person's two most similar faces (the one face when there is one)
    centroid  the similarity to the person's mean face
    blend     BLEND * best + (1 - BLEND) * centroid
    A person with no face scores -inf."""
    labels = np.asarray(labels, dtype=np.int64)
    queries = np.atleast_2d(queries)
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r} (expected one of {AGGREGATIONS})")
    out = np.full((len(queries), n_persons), -np.inf, dtype=np.float32)
    if len(labels) == 0:
        return out
    if aggregation in ("best", "best_two", "blend"):
        sims = pairwise_similarity(queries, faces, metric)
        order = np.argsort(labels, kind="stable")
        sorted_labels = labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        persons = sorted_labels[starts]
        grouped = sims[:, order]
        best = np.maximum.reduceat(grouped, starts, axis=1)
        if aggregation == "best_two":
            counts = np.diff(np.r_[starts, len(labels)])
            second = np.full_like(best, -np.inf)
            for j, (s, c) in enumerate(zip(starts, counts)):
                if c >= 2:
                    second[:, j] = np.partition(grouped[:, s:s + c], c - 2, axis=1)[:, c - 2]
            best = np.where(np.isfinite(second), (best + second) / 2, best)
        out[:, persons] = best
        if aggregation != "blend":
            return out
    centroid = pairwise_similarity(queries, person_centroids(faces, labels, n_persons, metric), metric)
    present = np.bincount(labels, minlength=n_persons) > 0
    centroid[:, ~present] = -np.inf
    if aggregation == "centroid":
        return centroid.astype(np.float32)
    return np.where(present, BLEND * out + (1 - BLEND) * centroid, -np.inf).astype(np.float32)


def rank_persons(scores: np.ndarray, top_k: int) -> list[list[tuple[int, float]]]:
    """Per query row of `person_scores`: the top_k (person, similarity), best first."""
    out = []
    for row in np.atleast_2d(scores):
        k = min(top_k, int(np.isfinite(row).sum()))
        top = np.argsort(-row, kind="stable")[:k]
        out.append([(int(p), float(row[p])) for p in top])
    return out
