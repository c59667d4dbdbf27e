"""Grouping faces nobody has named yet by person: pure functions on embeddings (no gallery, no models).

    embeddings ──kNN (faiss)──▶ graph of pairs above the model's same-person score ──communities──▶ clusters
                                   (never an edge inside one photo)            (then: never two faces of one photo)

- `graph`: the kNN graph, its edge threshold taken from the recognizer's own verification threshold, so it
  holds for every model facepipe supports (cosine or distance);
- `method`: the community detection (the method chosen by benchmarks/cluster.py) and the same-photo constraint;
- `assign`: incremental runs: new faces join the existing clusters they belong to, the rest are clustered
  among themselves, so a cluster nobody added to keeps its id.
"""
from __future__ import annotations

from facepipe.cluster.assign import assign_to_clusters, cluster_incremental
from facepipe.cluster.graph import Graph, knn_graph
from facepipe.cluster.method import DEFAULT, ClusterSettings, cluster_embeddings, enforce_one_face_per_group

__all__ = ["DEFAULT", "ClusterSettings", "Graph", "assign_to_clusters", "cluster_embeddings", "cluster_incremental",
           "enforce_one_face_per_group", "knn_graph"]
