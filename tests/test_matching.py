"""Person scoring and the model's metric, on hand-made vectors."""
import numpy as np
import pytest

from facepipe.openset.matching import (
    distance_from_similarity,
    pairwise_similarity,
    person_scores,
    rank_persons,
    similarity_from_distance,
)

# Query q; person 0's face points the same way but is twice as long; person 1's face is nearby but turned.
Q = np.array([[1.0, 0.0]], np.float32)
FACES = np.array([[2.0, 0.3], [0.8, 0.3]], np.float32)
LABELS = np.array([0, 1])


def test_cosine_and_euclidean_disagree_and_the_models_metric_decides():
    by_cosine = rank_persons(person_scores(Q, FACES, LABELS, 2, "cosine", "best"), 1)
    by_distance = rank_persons(person_scores(Q, FACES, LABELS, 2, "euclidean", "best"), 1)
    assert by_cosine[0][0][0] == 0  # angle: person 0 (cosine 0.99 vs 0.94)
    assert by_distance[0][0][0] == 1  # distance: person 1 (0.36 vs 1.04)


def test_distance_maps_to_a_similarity_and_back():
    d = np.array([0.0, 0.36, 0.6, 1.2])
    s = similarity_from_distance(d)
    assert np.all(np.diff(s) < 0)  # higher similarity = smaller distance
    assert s[2] == pytest.approx(0.82)
    assert np.allclose(distance_from_similarity(s), d, atol=1e-6)
    sims = pairwise_similarity(Q, FACES, "euclidean")
    assert np.allclose(distance_from_similarity(sims)[0], np.linalg.norm(FACES - Q, axis=1), atol=1e-5)


def test_aggregations_on_a_hand_made_gallery():
    q = np.array([[1.0, 0.0]], np.float32)
    angles = np.radians([0, 60, 20, 25])  # person 0: one perfect face and a poor one; person 1: two good ones
    faces = np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32)
    labels = np.array([0, 0, 1, 1])
    cos = np.cos(angles)
    best = person_scores(q, faces, labels, 3, "cosine", "best")[0]
    assert np.allclose(best[:2], [cos[0], cos[2]]) and best[2] == -np.inf  # person 2 has no face
    best_two = person_scores(q, faces, labels, 3, "cosine", "best_two")[0]
    assert np.allclose(best_two[:2], [(cos[0] + cos[1]) / 2, (cos[2] + cos[3]) / 2])
    centroid = person_scores(q, faces, labels, 3, "cosine", "centroid")[0]
    assert np.allclose(centroid[:2], [np.cos(np.radians(30)), np.cos(np.radians(22.5))], atol=1e-6)
    assert rank_persons(best[None], 1)[0][0][0] == 0 and rank_persons(centroid[None], 1)[0][0][0] == 1
    blend = person_scores(q, faces, labels, 3, "cosine", "blend")[0]
    assert np.allclose(blend[:2], 0.5 * best[:2] + 0.5 * centroid[:2])
    assert len(rank_persons(blend[None], 5)[0]) == 2  # persons without faces are never candidates


def test_student_t_quantile_matches_the_tables():
    from facepipe.openset.calibration import prediction_quantile, student_t_quantile

    assert student_t_quantile(0.99, 9) == pytest.approx(2.821, abs=1e-3)  # t tables
    assert student_t_quantile(0.99, 99) == pytest.approx(2.365, abs=1e-3)
    samples = np.array([0.0, 1.0] * 5)  # mean 0.5, sd 0.527
    wide, narrow = prediction_quantile(samples, 0.99, 5), prediction_quantile(samples, 0.99, 500)
    assert wide > narrow > 0.5 + 2.3 * np.std(samples, ddof=1)  # fewer persons: a wider bound
