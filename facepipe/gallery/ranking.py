"""Persons from face hits: the one place that turns a face ranking into a person ranking (both backends call it).

A backend answers `search(query, k)` with up to k (similarity, person) face hits, best first. The person
ranking is the best face per person; the scoring rule lives here alone so that it can change in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from facepipe.types import Candidate

FaceSearch = Callable[[np.ndarray, int], Sequence[tuple[float, Hashable]]]


@dataclass
class PersonInfo:
    name: str
    faces: int
    created: float


@dataclass
class Match:
    identity: str | None  # None: unknown
    similarity: float
    candidates: list[Candidate]


def rank_persons(search: FaceSearch, query: np.ndarray, top_k: int, n_persons: int, n_faces: int
                 ) -> list[tuple[Hashable, float]]:
    """The top_k persons by their best face. Exact: the first k distinct persons in the face ranking
    are the k best by max similarity, so fetch more faces only until k distinct persons appear."""
    want = min(top_k, n_persons)
    fetch = min(n_faces, max(32, 16 * top_k))
    while True:
        ranked: dict[Hashable, float] = {}
        for s, person in search(query, fetch):
            if person not in ranked:
                ranked[person] = float(s)
        if len(ranked) >= want or fetch >= n_faces:
            return list(ranked.items())[:top_k]
        fetch = min(n_faces, fetch * 4)


def match_all(search: FaceSearch, embeddings, threshold: float, top_k: int, n_persons: int, n_faces: int,
              name_of: Callable[[Hashable], str] = str) -> list[Match]:
    """Gallery.match for any backend: per query, ranked candidates and the name or None (unknown)."""
    queries = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if n_faces == 0 or queries.size == 0:
        return [Match(None, 0.0, []) for _ in range(len(embeddings))]
    out = []
    for query in queries:
        ranked = rank_persons(search, query, top_k, n_persons, n_faces)
        candidates = [Candidate(name_of(p), s) for p, s in ranked]
        best = candidates[0]
        out.append(Match(best.identity if best.similarity >= threshold else None, best.similarity, candidates))
    return out


def best_per_person(index, labels: np.ndarray, query: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """rank_persons over an in-memory EmbeddingIndex whose rows belong to persons `labels` (0..P-1)."""
    def search(q, k):
        sims, idx = index.search(q[None], k)
        return [(s, int(labels[i])) for s, i in zip(sims[0], idx[0]) if i >= 0]
    n_persons = int(labels.max()) + 1 if len(labels) else 0
    return rank_persons(search, query, top_k, n_persons, index.size)
