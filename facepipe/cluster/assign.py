"""Incremental clustering with stable ids: faces already in a cluster stay there (a person's corrections --
merge, split, reject -- are never undone by a later run); a new face joins the existing cluster whose mean
face it matches at the edge threshold (never a cluster that already holds a face of its photo, nor one it
was taken out of); the faces left are clustered among themselves and their clusters get fresh ids. So a
cluster that gained no face keeps its id and its members, run after run.
"""
from __future__ import annotations

import numpy as np

from facepipe.cluster.method import DEFAULT, ClusterSettings, cluster_embeddings
from facepipe.openset.matching import pairwise_similarity, person_centroids

CHUNK = 4096  # new faces scored against every cluster mean per block (bounded memory at 100k clusters)


def assign_to_clusters(queries: np.ndarray, query_groups: np.ndarray, members: np.ndarray,
                       member_clusters: np.ndarray, member_groups: np.ndarray, metric: str, threshold: float,
                       forbidden: set[tuple[int, int]] = frozenset()) -> np.ndarray:
    """For each query face: the existing cluster it joins, or -1. forbidden: (query index, cluster id)
    pairs a person ruled out."""
    out = np.full(len(queries), -1, np.int64)
    member_clusters = np.asarray(member_clusters, np.int64)
    if len(queries) == 0 or len(member_clusters) == 0:
        return out
    ids, position = np.unique(member_clusters, return_inverse=True)
    centroids = person_centroids(members, position, len(ids), metric)
    taken: dict[int, set] = {}
    for c, g in zip(position.tolist(), np.asarray(member_groups).tolist()):
        taken.setdefault(c, set()).add(g)
    candidates = []  # (score, query, cluster position)
    for lo in range(0, len(queries), CHUNK):
        sims = pairwise_similarity(queries[lo:lo + CHUNK], centroids, metric)
        rows, cols = np.nonzero(sims >= threshold)
        candidates += zip(sims[rows, cols].tolist(), (rows + lo).tolist(), cols.tolist())
    candidates.sort(key=lambda c: -c[0])
    query_groups = np.asarray(query_groups).tolist()
    for _, q, c in candidates:
        group = query_groups[q]
        if out[q] >= 0 or group in taken[c] or (q, int(ids[c])) in forbidden:
            continue
        out[q] = ids[c]
        taken[c].add(group)
    return out


def cluster_incremental(embeddings: np.ndarray, clusters: np.ndarray, groups: np.ndarray, metric: str,
                        recognizer_threshold: float, next_id: int, settings: ClusterSettings = DEFAULT,
                        forbidden: set[tuple[int, int]] = frozenset()) -> np.ndarray:
    """Cluster ids for every face: those with an id (>= 0) keep it, the others (-1) join an existing
    cluster or form new ones numbered from next_id (largest first); a face alone stays -1."""
    clusters = np.array(clusters, np.int64, copy=True)
    groups = np.asarray(groups)
    todo = np.flatnonzero(clusters < 0)
    done = np.flatnonzero(clusters >= 0)
    if len(todo) == 0:
        return clusters
    threshold = settings.edge_threshold(recognizer_threshold)
    local_forbidden = {(int(np.searchsorted(todo, f)), c) for f, c in forbidden if clusters[f] < 0}
    joined = assign_to_clusters(embeddings[todo], groups[todo], embeddings[done], clusters[done], groups[done],
                                metric, threshold, local_forbidden)
    clusters[todo] = joined
    rest = todo[joined < 0]
    fresh = cluster_embeddings(embeddings[rest], metric, recognizer_threshold, groups[rest], settings)
    clusters[rest] = np.where(fresh >= 0, fresh + next_id, -1)
    return clusters
