"""The tracker and the identity vote, on hand-made boxes and similarities (no models, no video)."""
import numpy as np
import pytest

from facepipe.openset.policy import track_identity
from facepipe.video.quality import CutDetector, frontality
from facepipe.video.tracker import Tracker, greedy_match, iou_matrix, jump_matrix


def test_iou_matrix_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = iou_matrix(a, b)
    assert iou.shape == (2, 3)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(50 / 150)
    assert iou[0, 2] == 0.0
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


def test_greedy_match_takes_the_best_pairs_once():
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    # Row 0 takes column 0 (0.9); row 1 cannot have column 0 again and 0.1 is under the minimum.
    assert greedy_match(iou, 0.3) == [(0, 0)]
    assert sorted(greedy_match(iou, 0.05)) == [(0, 0), (1, 1)]


def _run(tracker, rounds):
    """rounds: list of (t, boxes, scores). Returns every ended track."""
    ended = []
    for t, boxes, scores in rounds:
        _, done = tracker.update(np.array(boxes, dtype=float).reshape(-1, 4), np.array(scores, dtype=float), t)
        ended += done
    return ended


def test_fast_box_keeps_its_id():
    # 50 px wide, 30 px per round: consecutive boxes overlap only IoU 0.25 < min_iou 0.3. The centre-distance
    # stage links the first two rounds (no velocity yet), then the velocity prediction keeps IoU at 1.
    assert iou_matrix([[0, 0, 50, 50]], [[30, 0, 80, 50]])[0, 0] < 0.3
    tracker = Tracker(min_iou=0.3, max_jump=0.8)
    ids = []
    for k in range(8):
        matched, _ = tracker.update(np.array([[30.0 * k, 0, 30.0 * k + 50, 50]]), np.array([1.0]), k * 0.1)
        ids.append(matched[0][0].id)
        assert len(tracker.tracks) == 1
    assert set(ids) == {1}
    # Far faster than max_jump face widths per round: a new face, not the same one.
    matched, _ = tracker.update(np.array([[900.0, 0, 950, 50]]), np.array([1.0]), 0.8)
    assert matched[0][0].id != 1


def test_jump_matrix_refuses_a_different_size():
    jumps = jump_matrix([[0, 0, 50, 50]], [[10, 0, 60, 50], [0, 0, 100, 100]])
    assert jumps[0, 0] == pytest.approx(0.2) and np.isinf(jumps[0, 1])


def test_two_faces_side_by_side_keep_their_ids():
    tracker = Tracker()
    seen = {}
    for k in range(6):
        boxes = np.array([[10 + 2 * k, 10, 60 + 2 * k, 60], [200 - 2 * k, 10, 250 - 2 * k, 60]], dtype=float)
        matched, _ = tracker.update(boxes, np.array([1.0, 1.0]), k * 0.12)
        for track, d in matched:
            seen.setdefault(d, set()).add(track.id)
    assert seen[0] != seen[1] and len(seen[0]) == 1 and len(seen[1]) == 1


def test_one_frame_false_detection_never_becomes_a_track():
    tracker = Tracker(min_hits=2)
    ended = _run(tracker, [(0.0, [[0, 0, 40, 40]], [1.0]), (0.1, [], []), (0.2, [], [])])
    assert ended == [] and tracker.finish() == []


def test_track_ends_after_max_misses_with_the_time_of_its_last_detection():
    tracker = Tracker(min_hits=2, max_misses=3)
    seen = [(0.1 * k, [[0, 0, 40, 40]], [1.0]) for k in range(5)]  # last detection at t=0.4
    gone = [(0.5 + 0.1 * k, [], []) for k in range(4)]
    ended = _run(tracker, seen + gone[:3])
    assert ended == []  # three misses: still waiting
    ended = _run(tracker, gone[3:])
    assert len(ended) == 1
    assert ended[0].start == 0.0 and ended[0].end == pytest.approx(0.4)
    assert len(ended[0].history) == 5


def test_weak_detections_continue_tracks_but_never_start_one():
    tracker = Tracker(high_score=0.5, min_hits=2)
    _run(tracker, [(0.0, [[0, 0, 40, 40]], [0.9]), (0.1, [[1, 0, 41, 40]], [0.9])])
    matched, _ = tracker.update(np.array([[2, 0, 42, 40], [300, 300, 340, 340]], dtype=float),
                                np.array([0.2, 0.2]), 0.2)  # both weak: a blurred face and clutter
    assert [d for _, d in matched] == [0]  # the blurred face kept its track; the clutter started nothing
    assert len(tracker.tracks) == 1 and tracker.tracks[0].hits == 3


def test_decide_names_only_over_threshold_and_follows_the_evidence():
    votes = [{"ann": 0.95, "bob": 0.80}]
    assert track_identity(votes, 0.9, 3)[0] == "ann"
    assert track_identity(votes, 0.96, 3)[0] is None  # best is ann, but not similar enough
    # Later embeddings disagree: the track is revised to bob (mean over all its embeddings).
    votes += [{"bob": 0.97, "ann": 0.70}, {"bob": 0.96, "ann": 0.72}]
    identity, similarity, candidates = track_identity(votes, 0.9, 2)
    assert identity == "bob" and similarity == pytest.approx((0.80 + 0.97 + 0.96) / 3)
    assert [c.identity for c in candidates] == ["bob", "ann"]
    # A person missing from an embedding's candidates counts that embedding's lowest listed similarity.
    assert track_identity([{"ann": 0.9, "bob": 0.5}, {"cid": 0.95, "ann": 0.6}], 0.5, 3)[2][0].identity == "ann"
    assert track_identity([], 0.5, 3) == (None, None, [])


def test_frontality_is_high_for_a_frontal_tilted_face_and_low_for_a_turned_one():
    frontal = np.array([[30, 40], [70, 40], [50, 60], [35, 80], [65, 80]], dtype=float)
    theta = np.radians(25)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    tilted = frontal @ rot.T
    turned = frontal.copy()
    turned[2, 0] = 68  # the nose almost under the right eye
    assert frontality(frontal) == pytest.approx(1.0)
    assert frontality(tilted) == pytest.approx(1.0)
    assert frontality(turned) < 0.2


def test_cut_detector_fires_on_a_cut_not_on_motion():
    rng = np.random.default_rng(0)
    scene = np.zeros((120, 160, 3), dtype=np.uint8)
    scene[:, :80] = (200, 40, 40)
    scene[:, 80:] = (40, 40, 200)
    other = np.full((120, 160, 3), (30, 200, 60), dtype=np.uint8)
    cuts = CutDetector()
    results = [cuts.update(np.roll(scene, 4 * k, axis=1) + rng.integers(0, 8, scene.shape, dtype=np.uint8))
               for k in range(5)]
    results.append(cuts.update(other))
    assert results == [False] * 5 + [True]
