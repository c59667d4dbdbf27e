"""Community detection on the kNN graph, and the rule that two faces of one photo are two people.

The method and its settings were chosen by measurement (benchmarks/cluster.py, docs/cluster.md): the
edge threshold is the recognizer's own 1:1 verification threshold plus `threshold_offset`, so a model with
another similarity scale (cosine ArcFace at ~0.3, dlib's distance at ~0.85) needs no new number.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facepipe.cluster.graph import Graph, knn_graph
from facepipe.errors import FacepipeError

METHODS = ("leiden", "infomap", "components", "whispers")


@dataclass(frozen=True)
class ClusterSettings:
    """Chosen on CelebA-dev (benchmarks/cluster.py --sweep, docs/cluster.md): Infomap on the 20-NN graph with
    edges at the recognizer's own threshold was among the best of 4 methods x 3 k x 5 offsets (Leiden CPM at
    resolution 0.05 with the threshold 0.04 lower ties it) and needs no resolution to tune."""

    method: str = "infomap"
    k: int = 20  # neighbours per face in the graph
    threshold_offset: float = 0.0  # added to the recognizer's verification threshold for the edges
    resolution: float = 0.05  # Leiden only: CPM resolution, in the units of the edge weights
    seed: int = 0

    def edge_threshold(self, recognizer_threshold: float) -> float:
        return float(recognizer_threshold) + self.threshold_offset


DEFAULT = ClusterSettings()


def _weights(graph: Graph, threshold: float) -> np.ndarray:
    """Edge weight: how far above the threshold the pair scores, in (0, 1] (a pair at the threshold
    counts little, a near-duplicate fully)."""
    return np.clip((graph.similarity - threshold) / max(1e-6, 1.0 - threshold), 1e-3, 1.0)


def communities(graph: Graph, threshold: float, settings: ClusterSettings = DEFAULT) -> np.ndarray:
    """A community label per node (every node gets one; singletons their own)."""
    n = graph.n
    if settings.method not in METHODS:
        raise ValueError(f"unknown clustering method {settings.method!r} (expected one of {METHODS})")
    if n == 0:
        return np.zeros(0, np.int64)
    weights = _weights(graph, threshold)
    if settings.method == "components":
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        adjacency = coo_matrix((np.ones(len(weights)), (graph.source, graph.target)), shape=(n, n))
        return connected_components(adjacency, directed=False)[1].astype(np.int64)
    if settings.method == "whispers":
        import dlib

        # dlib numbers the vertices it saw in an edge; add a self-loop per node so that every node is seen
        edges = [(i, i, 1e-6) for i in range(n)]
        edges += [(int(a), int(b), float(w)) for a, b, w in zip(graph.source, graph.target, weights)]
        out = np.array(dlib.chinese_whispers(edges), np.int64)
        return out
    if settings.method == "infomap":
        from infomap import Infomap

        im = Infomap(two_level=True, silent=True, seed=settings.seed + 1)
        im.add_nodes(range(n))
        for a, b, w in zip(graph.source.tolist(), graph.target.tolist(), weights.tolist()):
            im.add_link(a, b, w)
        modules = im.run().modules()
        out = np.empty(n, np.int64)
        for node, module in modules.items():
            out[node] = module
        return out
    try:
        import igraph
        import leidenalg
    except ImportError:
        raise FacepipeError('the Leiden method needs igraph and leidenalg: pip install "facepipe[leiden]" '
                            "(or use the default, Infomap)") from None

    g = igraph.Graph(n=n, edges=np.column_stack([graph.source, graph.target]), directed=False)
    g.es["weight"] = weights.tolist()
    partition = leidenalg.find_partition(g, leidenalg.CPMVertexPartition, weights="weight",
                                         resolution_parameter=settings.resolution, seed=settings.seed,
                                         n_iterations=-1)
    return np.array(partition.membership, np.int64)


def enforce_one_face_per_group(labels: np.ndarray, groups: np.ndarray, graph: Graph,
                               threshold: float) -> np.ndarray:
    """No cluster holds two faces of one group (photo, video frame): in each cluster, faces are kept in
    order of how strongly they are tied to the rest of it, and a face whose photo is already represented
    leaves (it becomes a cluster of its own). Returns new labels; the input is not changed."""
    labels = np.array(labels, np.int64, copy=True)
    groups = np.asarray(groups)
    same = labels[graph.source] == labels[graph.target]
    strength = np.zeros(len(labels))
    w = _weights(graph, threshold)[same]
    np.add.at(strength, graph.source[same], w)
    np.add.at(strength, graph.target[same], w)
    next_label = labels.max() + 1 if len(labels) else 0
    order = np.lexsort((-strength, labels))  # by cluster, the strongest first
    seen: set = set()
    current = None
    for i in order:
        if labels[i] != current:
            current, seen = labels[i], set()
        if groups[i] in seen:
            labels[i] = next_label
            next_label += 1
        else:
            seen.add(groups[i])
    return labels


def compact(labels: np.ndarray, min_size: int = 2) -> np.ndarray:
    """Clusters of at least min_size renumbered 0, 1, ... by size (largest first), ties by first face;
    every other face -1 (it belongs to no cluster)."""
    labels = np.asarray(labels, np.int64)
    out = np.full(len(labels), -1, np.int64)
    if len(labels) == 0:
        return out
    values, first, counts = np.unique(labels, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    big = order[counts[order] >= min_size]
    new_id = np.full(len(values), -1, np.int64)
    new_id[big] = np.arange(len(big))
    out = new_id[np.searchsorted(values, labels)]
    return out


def cluster_embeddings(embeddings: np.ndarray, metric: str, recognizer_threshold: float,
                       groups: np.ndarray | None = None, settings: ClusterSettings = DEFAULT) -> np.ndarray:
    """A cluster id per face (0 = the largest cluster), -1 for a face that shares its cluster with nobody.

    embeddings: N x D as the recognizer gives them; metric: "cosine" or "euclidean"; recognizer_threshold:
    the recognizer's 1:1 threshold on the similarity scale (facepipe.openset.matching); groups: one key per face
    (its photo): two faces with the same key never end in one cluster."""
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, np.int64)
    groups = np.arange(n) if groups is None else np.asarray(groups)
    threshold = settings.edge_threshold(recognizer_threshold)
    graph = knn_graph(embeddings, metric, threshold, settings.k, groups)
    labels = communities(graph, threshold, settings)
    return compact(enforce_one_face_per_group(labels, groups, graph, threshold))
