"""Open-set thresholds from a gallery's own impostor scores.

A stranger is wrongly named when their best person score in the gallery clears the threshold. How high
a stranger's best score goes grows with the gallery (more people, more chances of a look-alike), so a
fixed threshold that works for 10 people names strangers in a gallery of 1,000. We simulate strangers
with the enrolled people themselves: each enrolled face, scored against every *other* person (with the
same person scoring the gallery uses for queries), gives one "stranger's best score".

The threshold is a high quantile of those scores. A raw 99th percentile of 300 scores rests on the top 3
and swings from 0 % to 9 % strangers named between galleries (issue 8). Fitting a two-parameter law to
*all* the scores (their mean and spread) and reading the quantile off the fit is far steadier (the
threshold's spread between CelebA galleries drops from 0.026 to 0.009). Of the two laws tried, a normal
law matches what real strangers do; a Gumbel (extreme-value) law over-states the tail at this size
(aim 1 %: 0.85 % named, and 25 % fewer enrolled people named).

Small galleries: the mean and spread come from few persons (a person's faces score alike), so the
quantile is read as a prediction bound, mean + t(n-1, q) * sd * sqrt(1 + 1/n) with n = persons (Student's
t), which widens it for 10 persons and leaves 100 nearly as is. Measured on CelebA-dev (20 random
galleries each, 48 stranger identities): strangers named 1.2 % / 0.9 % / 0.7 % / 1.2 % / 0.9 % / 0.9 % for
10 / 15 / 20 / 30 / 50 / 90 persons, where the plain normal fit gave 3.7 % / 2.0 % / 1.5 % / 1.7 % / 1.2 % / 1.1 %
and the raw percentile 9.9 % / 6.4 % / 5.9 % / 3.6 % / 2.5 % / 1.6 %. benchmarks/open_set.py measures the
100-person case; tests/test_calibration_real.py holds a 40-person gallery to <= 2 %.

Fewer than MIN_PERSONS persons (a gallery right after its first clusters are named): one law fitted to every
stranger's best score is wrong there. Against one or two persons, how high a stranger scores depends mostly on
*who* the stranger is (in one CelebA folder: a look-alike at 0.85-0.91, the others 0.55-0.85), and a law over
that mixture is at once too wide for most people and blind to the look-alike's own photos. So each person known
not to be the others gets a bound of their own (`small_gallery_threshold`): the enrolled persons (their faces
against the other persons) and, in a SQLite gallery, each cluster nobody has named yet (its faces against every
person: `stranger_scores`, facepipe.gallery.clusters.unnamed_cluster_faces). A person's bound is where a new face
of theirs stays below with probability 1 - target_fpir (their mean + t * pooled within-person spread *
sqrt(1 + 1/n)); the threshold is the highest bound, so no known person's photos are named more often than that.
A cluster that is a named person's second look makes it stricter, until it too is named. Measured with
benchmarks/cluster_naming.py (docs/cluster.md).
"""
from __future__ import annotations

import json
import math
from typing import Callable

import numpy as np

from facepipe.openset.policy import MIN_PERSONS, TARGET_FPIR

MAX_PROBES = 2000  # plenty for a two-parameter fit; bounds the cost for huge galleries
CALIBRATION_DRIFT = 0.01  # a cached threshold stays valid until 1% of the gallery's faces have changed

# queries (Q x D) -> person scores (Q x P), higher = more alike: the gallery's own scoring
PersonScorer = Callable[[np.ndarray], np.ndarray]
# () -> (embeddings of faces known to be nobody enrolled, the person each is: e.g. their cluster id)
StrangerFaces = Callable[[], tuple[np.ndarray, np.ndarray]]
# (best person score of each such face, the person each is)
StrangerScores = tuple[np.ndarray, np.ndarray]


def impostor_best_scores(matrix: np.ndarray, labels: np.ndarray, scorer: PersonScorer,
                         max_probes: int = MAX_PROBES, seed: int = 0, chunk: int = 256) -> np.ndarray:
    """For (a sample of) enrolled faces: the best score of any person other than the face's own."""
    scores, _ = impostor_scores_of_persons(matrix, labels, scorer, max_probes, seed, chunk)
    return scores


def impostor_scores_of_persons(matrix: np.ndarray, labels: np.ndarray, scorer: PersonScorer,
                               max_probes: int = MAX_PROBES, seed: int = 0,
                               chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """impostor_best_scores, and the person (label) of each face they come from."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    probes = np.arange(len(matrix)) if len(matrix) <= max_probes else np.sort(rng.choice(len(matrix), max_probes,
                                                                                         replace=False))
    out = np.empty(len(probes), dtype=np.float64)
    for start in range(0, len(probes), chunk):
        rows = probes[start:start + chunk]
        scores = np.array(scorer(matrix[rows]), dtype=np.float64, copy=True)
        scores[np.arange(len(rows)), labels[rows]] = -np.inf
        out[start:start + len(rows)] = scores.max(1)
    keep = np.isfinite(out)
    return out[keep], labels[probes][keep]


def student_t_quantile(q: float, dof: int) -> float:
    """Student's t quantile from the normal one (Cornish-Fisher / Hill expansion; at q = 0.99 within 0.001
    of the exact value for dof >= 9, i.e. MIN_PERSONS), so the runtime needs no scipy."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(q)
    v = float(max(dof, 1))
    return (z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3))


def prediction_quantile(samples: np.ndarray, q: float, n: int) -> float:
    """Where a new score falls below with probability q, for a normal law whose mean and spread were
    estimated from n independent units (here: persons)."""
    n = max(int(n), 2)
    return float(np.mean(samples) + student_t_quantile(q, n - 1) * np.std(samples, ddof=1) * math.sqrt(1 + 1 / n))


def open_set_threshold(matrix: np.ndarray, labels: np.ndarray, scorer: PersonScorer,
                       target_fpir: float = TARGET_FPIR, strangers: StrangerScores | None = None) -> float | None:
    """The score at which about `target_fpir` of strangers would be named in this gallery;
    None when the gallery has too few persons (and strangers) to say."""
    if len(labels) == 0:
        return None
    scores, owners = impostor_scores_of_persons(matrix, labels, scorer)
    return threshold_from_impostors(scores, len(np.unique(labels)), target_fpir, owners, strangers)


def stranger_scores(n_persons: int, faces: StrangerFaces | None, match) -> StrangerScores | None:
    """Below MIN_PERSONS persons: each face known to be nobody enrolled (a sample of MAX_PROBES), scored by the
    gallery's own `match(embeddings, threshold, top_k)` (its best person score, as a query), with the person each
    is; None where the gallery can speak for itself, or knows no such face."""
    if faces is None or not 0 < n_persons < MIN_PERSONS:
        return None
    embeddings, people = faces()
    if len(embeddings) > MAX_PROBES:
        keep = np.sort(np.random.default_rng(0).choice(len(embeddings), MAX_PROBES, replace=False))
        embeddings, people = embeddings[keep], np.asarray(people)[keep]
    if not len(embeddings):
        return None
    best = [m.similarity if m.candidates else -np.inf for m in match(embeddings, np.inf, 1)]
    return np.asarray(best, dtype=np.float64), np.asarray(people)


def threshold_from_impostors(scores: np.ndarray, n_persons: int, target_fpir: float = TARGET_FPIR,
                             owners=None, strangers: StrangerScores | None = None) -> float | None:
    """The fitted threshold from "stranger's best scores" already computed (a large gallery computes them
    from its ANN shortlist: facepipe.gallery.ranking.shortlist_impostor_scores). Below MIN_PERSONS persons:
    `small_gallery_threshold` over the persons the scores come from (`owners`, one per score) and the
    `strangers` (stranger_scores); None without them."""
    scores = np.asarray(scores, dtype=np.float64)
    if n_persons < MIN_PERSONS:
        if owners is None:
            return None
        groups = [np.array([f"person {o}" for o in owners], dtype=object)]
        if strangers is not None:
            scores = np.concatenate([scores, np.asarray(strangers[0], dtype=np.float64)])
            groups.append(np.array([f"stranger {p}" for p in strangers[1]], dtype=object))
        return small_gallery_threshold(scores, np.concatenate(groups), target_fpir)
    scores = scores[np.isfinite(scores)]
    if len(scores) < MIN_PERSONS:
        return None
    return prediction_quantile(scores, 1.0 - target_fpir, n_persons)


def small_gallery_threshold(scores: np.ndarray, persons: np.ndarray, target_fpir: float = TARGET_FPIR
                            ) -> float | None:
    """The highest of the persons' own bounds: for each person p (the one whose face gave each score), where a
    new face of p's best score stays below with probability 1 - target_fpir, for normal laws with p's own mean
    and a spread pooled over all persons (a face's scores vary about as much for anyone): mean_p + t(dof) * sd *
    sqrt(1 + 1/n_p). None with fewer than MIN_PERSONS degrees of freedom for the spread."""
    scores = np.asarray(scores, dtype=np.float64)
    keep = np.isfinite(scores)
    scores, persons = scores[keep], np.asarray(persons)[keep]
    _, person, counts = np.unique(persons, return_inverse=True, return_counts=True)
    dof = len(scores) - len(counts)
    if dof < MIN_PERSONS:
        return None
    means = np.bincount(person, scores) / counts
    spread = math.sqrt(float(((scores - means[person]) ** 2).sum()) / dof)
    return float(np.max(means + student_t_quantile(1.0 - target_fpir, dof) * spread * np.sqrt(1 + 1 / counts)))


def cached_threshold(read_meta: Callable[[str], str | None], write_meta: Callable[[str, str], None], changes: int,
                     face_count: int, target_fpir: float, calibrate: Callable[[float], float | None],
                     strangers_version: str = "") -> float | None:
    """The calibration cache every gallery backend uses: the threshold stored in the gallery's metadata with the
    change counter it was computed at, recomputed (`calibrate(target_fpir)`) once CALIBRATION_DRIFT of the faces
    have changed since, or at once when the strangers changed (`strangers_version`: a SQLite gallery's cluster
    revision, bumped whenever its unnamed clusters change)."""
    key = f"calibration:{target_fpir}:changes"  # replace_embeddings drops every "calibration%" key
    cached = read_meta(key)
    if cached:
        at, value, *version = json.loads(cached)
        if (version[0] if version else "") == strangers_version and abs(changes - at) <= CALIBRATION_DRIFT * face_count:
            return value
    value = calibrate(target_fpir)
    write_meta(key, json.dumps([changes, value, strangers_version]))
    return value
