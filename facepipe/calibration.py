"""Open-set thresholds from a gallery's own impostor scores.

A stranger is wrongly named when their best match in the gallery clears the threshold. How high a
stranger's best score goes grows with the gallery (more people, more chances of a look-alike), so a
fixed threshold that works for 10 people names strangers in a gallery of 1,000. We simulate strangers
with the enrolled people themselves: each enrolled face, searched against everyone *else*, gives one
"stranger's best score". The (1 - target) quantile of those is the threshold at which about `target`
of real strangers would be named.
"""
from __future__ import annotations

import numpy as np

from facepipe.search import EmbeddingIndex

MIN_PERSONS = 10  # fewer than this and the quantile says little: the model's default applies
MAX_PROBES = 4000  # enough faces for a stable 99th percentile; bounds the cost for huge galleries


def impostor_best_scores(matrix: np.ndarray, labels: np.ndarray, index: EmbeddingIndex,
                         max_probes: int = MAX_PROBES, seed: int = 0) -> np.ndarray:
    """For (a sample of) enrolled faces: the best similarity to any face of another person."""
    rng = np.random.default_rng(seed)
    probes = np.arange(len(matrix)) if len(matrix) <= max_probes else rng.choice(len(matrix), max_probes, replace=False)
    out = np.empty(len(probes), dtype=np.float32)
    depth = 64
    for j, i in enumerate(probes):
        while True:
            sims, idx = index.search(matrix[i][None], min(depth, len(matrix)))
            others = idx[0] >= 0
            others &= labels[np.maximum(idx[0], 0)] != labels[i]
            if others.any() or depth >= len(matrix):
                out[j] = sims[0][others][0] if others.any() else -1.0
                break
            depth *= 4  # this person has more than `depth` faces close to the probe: look deeper
    return out


def open_set_threshold(matrix: np.ndarray, labels: np.ndarray, index: EmbeddingIndex,
                       target_fpir: float = 0.01) -> float | None:
    if len(labels) == 0 or len(np.unique(labels)) < MIN_PERSONS:
        return None
    scores = impostor_best_scores(matrix, labels, index)
    return float(np.quantile(scores, 1.0 - target_fpir))
