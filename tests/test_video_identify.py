"""Identify people in clips written here from people/ photos, with the real default models and a real gallery."""
import io
import json

import cv2
import numpy as np
import pytest
from conftest import enroll_from_other_photos, shown_faces
from rich.console import Console

import facepipe
from facepipe.cli.video import identify_videos
from facepipe.video import VideoOptions, identify_video
from facepipe.video.synthetic import Shot, make_clip

FPS = 15.0
SIZE = (320, 240)
EVERY = 3
CLIP_PHOTO = {"person01": "img1.jpg", "person02": "img12.jpg", "person03": "img13.jpg"}
ENROLLED = ("person01", "person02")  # person03 stays a stranger


@pytest.fixture(scope="module")
def engine(data_dir, tmp_path_factory):
    fp = facepipe.open(gallery=tmp_path_factory.mktemp("video-gallery") / "g.db")
    enroll_from_other_photos(fp, data_dir / "people", {name: CLIP_PHOTO[name] for name in ENROLLED})
    yield fp
    fp.close()


@pytest.fixture(scope="module")
def shots(engine, data_dir):
    return {name: Shot(2.4, image, box, name, face_width=0.32)
            for name, (image, box) in shown_faces(engine, data_dir / "people", CLIP_PHOTO).items()}


@pytest.fixture(scope="module")
def two_people(shots, tmp_path_factory):
    path = tmp_path_factory.mktemp("clips") / "two.mp4"
    truth = make_clip(path, [shots["person01"], Shot(0.4), shots["person02"]], SIZE, FPS)
    return path, truth


def _spans(truth):
    """label -> (first, last) time it is on screen."""
    spans = {}
    for frame in truth:
        if frame.label:
            first, _ = spans.get(frame.label, (frame.t, frame.t))
            spans[frame.label] = (first, frame.t)
    return spans


def test_two_people_in_sequence_give_two_named_tracks_in_order(engine, two_people):
    path, truth = two_people
    with identify_video(engine, path, VideoOptions(every=EVERY)) as run:
        records = list(run)
    assert [r.identity for r in records] == ["person01", "person02"]
    assert [r.track for r in records] == [1, 2]
    interval = EVERY / FPS
    for record in records:
        first, last = _spans(truth)[record.identity]
        assert first - 1e-6 <= record.start <= first + interval + 1e-6
        assert last - interval - 1e-6 <= record.end <= last + 1e-6
        assert record.similarity >= run.threshold.value
        assert 1 <= record.embedded <= 5  # a few embeddings per track, not one per frame
        assert record.boxes[0][0] == pytest.approx(record.start) and record.boxes[-1][0] == pytest.approx(record.end)
    assert run.frames == len(truth)


def test_a_stranger_stays_unknown(engine, shots, tmp_path):
    path = tmp_path / "stranger.mp4"
    make_clip(path, [shots["person03"]], SIZE, FPS)
    with identify_video(engine, path, VideoOptions(every=EVERY)) as run:
        records = list(run)
    assert len(records) == 1
    assert records[0].identity is None
    assert records[0].candidates and records[0].similarity < run.threshold.value


def test_cli_json_and_annotated_video(engine, two_people, data_dir, tmp_path, capsys):
    path, truth = two_people
    out_dir = tmp_path / "annotated"
    errors = identify_videos(engine, [str(path)], VideoOptions(every=EVERY), True, out_dir,
                             Console(file=io.StringIO()), Console(file=io.StringIO()))
    assert errors == []
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["identity"] for r in lines] == ["person01", "person02"]
    # dlib's recognizer compares by distance: the record adds "distance", as a photo's face does
    assert set(lines[0]) == {"video", "track", "start", "end", "identity", "similarity", "distance", "candidates",
                             "boxes"}
    # A track's candidates are written like a photo's (one writer): the same fields, distance included.
    photo = engine.identify(data_dir / "people" / "person01" / CLIP_PHOTO["person01"])[0].to_json()
    track_fields = {key for c in lines[0]["candidates"] for key in c}
    assert track_fields == {key for c in photo["candidates"] for key in c} == {"identity", "similarity", "distance"}
    assert lines[0]["video"] == str(path) and len(lines[0]["boxes"][0]) == 5
    # The annotated copy: readable, every frame, and nothing else left in the folder.
    assert [p.name for p in out_dir.iterdir()] == ["two.mp4"]
    cap = cv2.VideoCapture(str(out_dir / "two.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == len(truth)


def test_cli_table_names_the_people(engine, two_people):
    out = io.StringIO()
    errors = identify_videos(engine, [str(two_people[0])], VideoOptions(every=EVERY), False, None,
                             Console(file=out, width=200), Console(file=io.StringIO()))
    text = out.getvalue()
    assert errors == [] and "person01" in text and "person02" in text and "two.mp4" in text


def test_bad_sources_are_one_line_each_and_leave_nothing(engine, two_people, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(two_people[0].read_bytes()[:50_000])
    out_dir = tmp_path / "annotated"
    errors = identify_videos(engine, [str(corrupt), str(truncated), 97], VideoOptions(every=EVERY), True, out_dir,
                             Console(file=io.StringIO()), Console(file=io.StringIO()))
    assert len(errors) == 3 and all("\n" not in e for e in errors)
    assert str(corrupt) in errors[0] and str(truncated) in errors[1] and "camera 97" in errors[2]
    assert capsys.readouterr().out == ""
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_truncated_avi_deletes_its_half_written_annotation(engine, shots, tmp_path):
    path = tmp_path / "cut.avi"
    make_clip(path, [shots["person01"]], SIZE, FPS, fourcc="MJPG")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # header still announces every frame
    out_dir = tmp_path / "annotated"
    errors = identify_videos(engine, [str(path)], VideoOptions(every=EVERY), True, out_dir,
                             Console(file=io.StringIO()), Console(file=io.StringIO()))
    assert len(errors) == 1 and "truncated" in errors[0]
    assert list(out_dir.iterdir()) == []


def test_ctrl_c_ends_cleanly_with_open_tracks_flushed_and_video_kept(engine, two_people, tmp_path):
    path, _ = two_people
    stop_at = 20  # frames: person01 is on screen, her track is open

    def press_ctrl_c(frames, t, shown):
        if frames == stop_at:
            raise KeyboardInterrupt

    target = tmp_path / "live.mp4"
    with identify_video(engine, path, VideoOptions(every=EVERY), annotate_to=target, on_frame=press_ctrl_c) as run:
        records = list(run)
    assert run.interrupted
    assert [r.identity for r in records] == ["person01"] and records[0].end <= stop_at / FPS
    cap = cv2.VideoCapture(str(target))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == stop_at  # every frame up to the Ctrl-C
    cap.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mp4"]


def test_max_fps_and_start_end(engine, two_people):
    path, truth = two_people
    options = VideoOptions(every=1, max_fps=5.0, start=3.0, end=4.5)  # person02 only, 5 frames a second
    with identify_video(engine, path, options) as run:
        records = list(run)
    assert run.frames == pytest.approx(1.5 * 5, abs=1)
    assert [r.identity for r in records] == ["person02"]
    assert 3.0 <= records[0].start and records[0].end < 4.5
    assert np.all(np.diff([b[0] for b in records[0].boxes]) >= 0.2 - 1e-6)


def test_facepipe_identify_takes_a_video_through_the_entry_point(engine, two_people):
    """`facepipe identify clip.mp4 --json` as a user runs it: one JSON object per track, named in order."""
    import subprocess
    import sys

    engine.close()  # the subprocess opens the same gallery file
    path, _ = two_people
    result = subprocess.run([sys.executable, "-m", "facepipe.cli", "identify", str(path), "--json", "--every",
                             str(EVERY),
                             "--gallery", str(engine.gallery_spec)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    tracks = [json.loads(line) for line in result.stdout.splitlines()]
    assert [t["identity"] for t in tracks] == ["person01", "person02"]
    assert all(t["video"] == str(path) and t["boxes"] for t in tracks)
