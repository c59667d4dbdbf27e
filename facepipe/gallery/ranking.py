"""Persons for a query: the one place that turns a gallery's faces into ranked persons (every backend calls it).

The scoring rule is facepipe.openset.matching.person_scores (each person's centroid, under the model's metric). A small
gallery scores every person exactly over its in-memory matrix. A large one (persisted ANN index, Milvus) first
takes a shortlist, the persons owning one of the query's SHORTLIST_FACES nearest faces (or, SQLite, the persons whose
centroids are among the query's SHORTLIST_PERSONS nearest in the index of persons), then scores those persons
exactly: the same numbers a small gallery would give, for the persons that can win.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np

from facepipe.openset.matching import candidate, person_scores, rank_persons
from facepipe.types import Candidate

SHORTLIST_MIN = 20_000  # in-memory galleries up to this many faces score every person exactly
SHORTLIST_FACES = 256  # beyond: only persons owning one of the query's nearest faces
SHORTLIST_PERSONS = 32  # or, from the index of persons (SQLite): the query's nearest centroids

# (query, k) -> up to k (similarity, person) face hits, best first
FaceSearch = Callable[[np.ndarray, int], Sequence[tuple[float, Hashable]]]
# persons -> (their faces N x D, each face's position in the given list)
FacesOf = Callable[[list], tuple[np.ndarray, np.ndarray]]


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
    distance: float | None = None  # for a distance metric: the distance behind `similarity`


def exact_scorer(matrix: np.ndarray, labels: np.ndarray, n_persons: int, metric: str, index=None):
    """queries -> Q x P person scores over an in-memory gallery (shortlisted through `index` when large)."""
    def score(queries: np.ndarray) -> np.ndarray:
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if index is None or len(matrix) < SHORTLIST_MIN:
            return person_scores(queries, matrix, labels, n_persons, metric)
        out = np.full((len(queries), n_persons), -np.inf, dtype=np.float32)
        _, hits = index.search(queries, SHORTLIST_FACES)
        for row, (query, idx) in enumerate(zip(queries, hits)):
            persons = np.unique(labels[idx[idx >= 0]])
            faces = np.flatnonzero(np.isin(labels, persons))
            out[row, persons] = person_scores(query[None], matrix[faces], np.searchsorted(persons, labels[faces]),
                                              len(persons), metric)[0]
        return out
    return score


def shortlist_scores(query: np.ndarray, search: FaceSearch, faces_of: FacesOf, metric: str,
                     exclude: Hashable | None = None, shortlist: int = SHORTLIST_FACES) -> list[tuple[Hashable, float]]:
    """(person, score) for the persons among the query's `shortlist` nearest hits (faces, or persons' centroids),
    best first."""
    persons = list(dict.fromkeys(p for _, p in search(query, shortlist) if p != exclude))
    if not persons:
        return []
    faces, positions = faces_of(persons)
    scores = person_scores(np.asarray(query, np.float32)[None], faces, positions, len(persons), metric)[0]
    return [(persons[i], float(scores[i])) for i in np.argsort(-scores, kind="stable") if np.isfinite(scores[i])]


def to_matches(ranked: list[list[tuple[str, float]]], threshold: float, metric: str) -> list[Match]:
    """Ranked (name, similarity) lists -> Matches: the best name, or None below the threshold."""
    out = []
    for row in ranked:
        if not row:
            out.append(Match(None, 0.0, []))
            continue
        candidates = [candidate(name, s, metric) for name, s in row]
        best = candidates[0]
        out.append(Match(best.identity if best.similarity >= threshold else None, best.similarity, candidates,
                         best.distance))
    return out


def match_exact(scorer, names: list[str], embeddings, threshold: float, top_k: int, metric: str) -> list[Match]:
    queries = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if not names:
        return [Match(None, 0.0, []) for _ in range(len(queries))]
    ranked = [[(names[p], s) for p, s in row] for row in rank_persons(scorer(queries), top_k)]
    return to_matches(ranked, threshold, metric)


def match_shortlist(search: FaceSearch, faces_of: FacesOf, embeddings, threshold: float, top_k: int,
                    metric: str, name_of: Callable[[Hashable], str] = str,
                    shortlist: int = SHORTLIST_FACES) -> list[Match]:
    queries = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    ranked = [[(name_of(p), s) for p, s in shortlist_scores(q, search, faces_of, metric, shortlist=shortlist)[:top_k]]
              for q in queries]
    return to_matches(ranked, threshold, metric)


def shortlist_impostor_scores(probes: np.ndarray, owners: Sequence[Hashable], search: FaceSearch, faces_of: FacesOf,
                              metric: str, shortlist: int = SHORTLIST_FACES) -> np.ndarray:
    """For enrolled faces: the best score of any *other* person, by the same shortlist scoring as queries."""
    out = np.full(len(probes), -np.inf)
    for i, (probe, owner) in enumerate(zip(probes, owners)):
        scored = shortlist_scores(probe, search, faces_of, metric, exclude=owner, shortlist=shortlist)
        if scored:
            out[i] = scored[0][1]
    return out


def best_per_person(index, labels: np.ndarray, query: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """The top_k persons by their best face over an in-memory EmbeddingIndex (rows belong to persons `labels`).
    Exact: the first k distinct persons in the face ranking are the k best by max similarity, so fetch more
    faces only until k distinct persons appear."""
    want = min(top_k, int(labels.max()) + 1 if len(labels) else 0)
    fetch = min(index.size, max(32, 16 * top_k))
    while True:
        sims, idx = index.search(query[None], fetch)
        ranked: dict[int, float] = {}
        for s, i in zip(sims[0], idx[0]):
            if i >= 0 and int(labels[i]) not in ranked:
                ranked[int(labels[i])] = float(s)
        if len(ranked) >= want or fetch >= index.size:
            return list(ranked.items())[:top_k]
        fetch = min(index.size, fetch * 4)
