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


def impostor_best_scores(matrix: np.ndarray, labels: np.ndarray, scorer: PersonScorer,
                         max_probes: int = MAX_PROBES, seed: int = 0, chunk: int = 256) -> np.ndarray:
    """For (a sample of) enrolled faces: the best score of any person other than the face's own."""
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
    return out[np.isfinite(out)]


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
                       target_fpir: float = TARGET_FPIR) -> float | None:
    """The score at which about `target_fpir` of strangers would be named in this gallery;
    None when the gallery has too few persons to say."""
    if len(labels) == 0 or len(np.unique(labels)) < MIN_PERSONS:
        return None
    return threshold_from_impostors(impostor_best_scores(matrix, labels, scorer), len(np.unique(labels)), target_fpir)


def threshold_from_impostors(scores: np.ndarray, n_persons: int, target_fpir: float = TARGET_FPIR) -> float | None:
    """The fitted threshold from "stranger's best scores" already computed (a large gallery computes them
    from its ANN shortlist: facepipe.gallery.ranking.shortlist_impostor_scores)."""
    scores = np.asarray(scores, dtype=np.float64)
    scores = scores[np.isfinite(scores)]
    if n_persons < MIN_PERSONS or len(scores) < MIN_PERSONS:
        return None
    return prediction_quantile(scores, 1.0 - target_fpir, n_persons)


def cached_threshold(read_meta: Callable[[str], str | None], write_meta: Callable[[str, str], None], changes: int,
                     face_count: int, target_fpir: float, calibrate: Callable[[float], float | None]) -> float | None:
    """The calibration cache every gallery backend uses: the threshold stored in the gallery's metadata with the
    change counter it was computed at, recomputed (`calibrate(target_fpir)`) once CALIBRATION_DRIFT of the faces
    have changed since."""
    key = f"calibration:{target_fpir}:changes"  # replace_embeddings drops every "calibration%" key
    cached = read_meta(key)
    if cached:
        at, value = json.loads(cached)
        if abs(changes - at) <= CALIBRATION_DRIFT * face_count:
            return value
    value = calibrate(target_fpir)
    write_meta(key, json.dumps([changes, value]))
    return value
