"""Tracks never span two people: hand-made cases for the appearance rules, and real clips of enrolled people
(a hard cut at the same place, one leaving a doorway as the other steps in, two crossing) through the real
default models and a real gallery."""
import numpy as np
import pytest
from conftest import enroll_from_other_photos, shown_faces

import facepipe
from facepipe.types import Face
from facepipe.video import VideoOptions, identify_video
from facepipe.video.appearance import face_signature, pairs_in_doubt, same_person, signature_similarity, track_reference
from facepipe.video.detect import shifted, track_regions
from facepipe.video.quality import CutDetector
from facepipe.video.synthetic import Actor, Shot, make_clip, make_scene_clip
from facepipe.video.tracker import Tracker

FPS = 15.0
EVERY = 3
PHOTOS = {"person01": "img1.jpg", "person02": "img12.jpg"}


# -- pure functions, hand-made cases ---------------------------------------------------------------------
def test_forbidden_pairs_are_never_associated_and_start_a_new_track():
    tracker = Tracker(min_hits=1, max_misses=2)
    box = np.array([[100, 100, 200, 200]], dtype=float)
    first, _ = tracker.update(box, np.array([1.0]), 0.0)
    # The same place, a different person: motion alone would continue track 1.
    matched, ended = tracker.update(box, np.array([1.0]), 0.2, forbidden=np.array([[True]]))
    assert [tr.id for tr, _ in matched] == [2] and ended == []
    assert tracker.tracks[0].misses == 1  # track 1 waits for its own face...
    for t in (0.4, 0.6):
        matched, ended = tracker.update(box, np.array([1.0]), t, forbidden=np.array([[True], [False]]))
        assert [tr.id for tr, _ in matched] == [2]
    assert [tr.id for tr in ended] == [1] and ended[0].end == 0.0  # ...and ends at its last own box


def test_forbidden_pair_makes_crossing_faces_keep_their_tracks():
    tracker = Tracker(min_hits=1)
    a, b = np.array([100, 0, 200, 100.0]), np.array([160, 0, 260, 100.0])
    tracker.update(np.array([a, b]), np.array([1.0, 1.0]), 0.0)
    # They pass each other: each detection sits where the other track was (motion alone swaps them).
    swapped = np.array([[100, 0, 200, 100], [160, 0, 260, 100.0]])  # 0 is B now, 1 is A
    assert sorted((tr.id, d) for tr, d in Tracker(min_hits=1).update(np.array([a, b]), np.ones(2), 0.0)[0]) \
        == [(1, 0), (2, 1)]
    forbidden = np.array([[True, False], [False, True]])  # track 1 (A) is not detection 0, track 2 not 1
    matched, _ = tracker.update(swapped, np.array([1.0, 1.0]), 0.2, forbidden=forbidden)
    assert sorted((tr.id, d) for tr, d in matched) == [(1, 1), (2, 0)]


def test_pairs_in_doubt():
    candidates = np.array([[True, False, False], [False, True, True], [False, False, True]])
    nothing = np.zeros(3, bool)
    unchanged = np.zeros((3, 3), bool)
    references = np.ones(3, bool)
    doubt = pairs_in_doubt(candidates, [0, 0, 0], nothing, unchanged, references)
    # track 1 could take two detections, detection 2 could go to two tracks: those pairs are checked
    assert doubt.tolist() == [[False, False, False], [False, True, True], [False, False, True]]
    missed = pairs_in_doubt(candidates, [1, 0, 0], nothing, unchanged, references)
    assert missed[0, 0]  # a face that came back after a miss is checked
    changed = unchanged.copy()
    changed[0, 0] = True
    assert pairs_in_doubt(candidates, [0, 0, 0], nothing, changed, references)[0, 0]
    assert pairs_in_doubt(candidates, [0, 0, 0], np.array([True, False, False]), unchanged, references)[0, 0]
    # a track without an embedding of its own cannot be checked; a pair motion rules out never is
    assert not pairs_in_doubt(candidates, [1, 1, 1], nothing, unchanged, np.zeros(3, bool)).any()
    assert not pairs_in_doubt(candidates, [1, 1, 1], nothing, unchanged, references)[0, 1]


def test_same_person_under_each_metric():
    a = np.array([1.0, 0.0, 0.0], np.float32)
    near = np.array([0.9, 0.1, 0.0], np.float32)
    far = np.array([0.0, 1.0, 0.0], np.float32)
    reference = track_reference([a, near], "cosine")
    assert same_person(near, reference, "cosine", 0.5) and not same_person(far, reference, "cosine", 0.5)
    # euclidean: similarity 1 - d^2/2; d(a, far) = sqrt(2) -> 0
    assert not same_person(far, a, "euclidean", 0.5) and same_person(a, a, "euclidean", 0.99)


def test_signature_ignores_motion_not_identity():
    rng = np.random.default_rng(0)
    frame = cv2_blur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    landmarks = np.array([[135, 140], [165, 140], [150, 155], [138, 170], [162, 170]], np.float32)
    face = Face(box=np.array([125, 125, 175, 185], np.float32), score=1.0, landmarks=landmarks)
    moved = Face(box=face.box + 20, score=1.0, landmarks=landmarks + 20)
    signature = face_signature(frame, face)
    assert np.linalg.norm(signature) == pytest.approx(1.0, abs=1e-5)
    assert signature_similarity(signature, face_signature(np.roll(frame, (20, 20), axis=(0, 1)), moved)) > 0.99
    other = cv2_blur(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8))
    assert signature_similarity(signature, face_signature(other, face)) < 0.5
    assert signature_similarity(None, signature) == 1.0


def cv2_blur(image):
    import cv2

    return cv2.GaussianBlur(image, (0, 0), 3)


def test_track_regions_merge_and_clip_and_detections_shift_back():
    regions = track_regions([np.array([10, 10, 60, 60]), np.array([70, 10, 120, 60]), np.array([500, 300, 550, 350])],
                            (560, 400), margin=0.5)
    assert regions == [(0, 0, 145, 85), (475, 275, 560, 375)]
    face = Face(box=np.array([1, 2, 3, 4], np.float32), score=1.0, landmarks=np.zeros((5, 2), np.float32))
    moved = shifted(face, 10, 20)
    assert moved.box.tolist() == [11, 22, 13, 24] and moved.landmarks[0].tolist() == [10, 20]


def test_cut_detector_sees_a_cut_between_faces_of_the_same_colours():
    a = np.zeros((120, 160, 3), np.uint8)
    a[:] = np.linspace(40, 220, 160, dtype=np.uint8)[None, :, None]  # dark to bright, left to right
    b = a[:, ::-1].copy()  # the same colours (histogram), another picture
    cuts = CutDetector()
    assert [cuts.update(x) for x in (a, a, b)] == [False, False, True]


# -- real clips, real models -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(data_dir, tmp_path_factory):
    fp = facepipe.open(gallery=tmp_path_factory.mktemp("appearance-gallery") / "g.db")
    enroll_from_other_photos(fp, data_dir / "people", PHOTOS)  # not from the photos the clips show
    yield fp
    fp.close()


@pytest.fixture(scope="module")
def faces(engine, data_dir):
    return shown_faces(engine, data_dir / "people", PHOTOS)


def _identities(engine, path, **options):
    with identify_video(engine, path, VideoOptions(every=EVERY, **options)) as run:
        return [(r.identity, r.start, r.end) for r in run], run


@pytest.mark.parametrize("cuts", [True, False], ids=["cut-detector", "appearance-only"])
def test_hard_cut_at_the_same_place_gives_two_named_tracks(engine, faces, tmp_path, cuts):
    path = tmp_path / "cut.mp4"
    shots = [Shot(2.0, *faces[name], name, face_width=0.45) for name in ("person01", "person02")]
    make_clip(path, shots, (320, 240), FPS)
    tracks, run = _identities(engine, path, cuts=cuts)
    assert [name for name, _, _ in tracks] == ["person01", "person02"], tracks
    assert tracks[0][2] < 2.0 <= tracks[1][1] + EVERY / FPS  # the first ends before the cut
    if not cuts:
        assert run.refused >= 1  # the recognizer, not the cut detector, separated them
    # motion alone (the tracker before appearance) made one track of the two people
    if not cuts:
        assert len(_identities(engine, path, cuts=False, appearance=False)[0]) == 1


def _scene(engine, faces, path, paths, seconds):
    actors = [Actor(*faces[name], name, route, face_width=0.3) for name, route in paths.items()]
    return make_scene_clip(path, actors, seconds, (480, 360), FPS)


def test_doorway_one_leaves_another_steps_in_within_a_second(engine, faces, tmp_path):
    path = tmp_path / "door.mp4"
    _scene(engine, faces, path, {
        "person01": [(0.0, 0.6, 0.45), (1.4, 0.6, 0.45), (1.9, 1.15, 0.45)],   # leaves through the right
        "person02": [(2.3, 1.15, 0.45), (2.8, 0.6, 0.45), (4.0, 0.6, 0.45)],  # steps in there 0.4 s later
    }, 4.0)
    tracks, _ = _identities(engine, path)
    assert [name for name, _, _ in tracks] == ["person01", "person02"], tracks


def test_crossing_faces_keep_their_identities(engine, faces, tmp_path):
    path = tmp_path / "cross.mp4"
    _scene(engine, faces, path, {
        "person01": [(0.0, 0.2, 0.42), (4.0, 0.8, 0.42)],
        "person02": [(0.0, 0.8, 0.48), (4.0, 0.2, 0.48)],  # passes in front
    }, 4.0)
    with identify_video(engine, path, VideoOptions(every=EVERY)) as run:
        records = list(run)
    for record in records:  # every track is one person, named right: left-to-right is person01
        xs = [(x1 + x2) / 2 for _, x1, _, x2, _ in record.boxes]
        walked = "person01" if xs[-1] > xs[0] else "person02"
        assert record.identity == walked, [(r.identity, r.start, r.end) for r in records]
    assert {r.identity for r in records} == {"person01", "person02"}
