"""The dlib detector's second chance: CelebA-dev photos where the HOG passes find no face get one (a weak HOG
box the CNN confirms, or a face found in a rotated copy), a photo with no face stays without one at a bounded
number of detector calls, a photo with a face pays nothing extra, and the JSON only adds "detector_pass"."""
import numpy as np
import pytest

from facepipe.pipeline.face_pipeline import FacePipeline
from facepipe.runtime.detectors import dlib_detector
from facepipe.runtime.detectors.dlib_detector import HOG_CONFIRMED, HOG_ROTATED, DlibDetector
from facepipe.runtime.image import read_image

# celeba-dev photos where the HOG passes (without the second chance) find no face, found again on
# 2026-12-04 with the second chance, by the pass named.
RESCUED = {
    "07422/066737.jpg": HOG_CONFIRMED, "07245/192689.jpg": HOG_CONFIRMED, "07273/191365.jpg": HOG_CONFIRMED,
    "07285/079016.jpg": HOG_CONFIRMED, "07377/115596.jpg": HOG_CONFIRMED,
    "07266/196363.jpg": HOG_ROTATED, "07476/022470.jpg": HOG_ROTATED, "07245/185156.jpg": HOG_ROTATED,
    "07438/190364.jpg": HOG_ROTATED,
}


@pytest.fixture(scope="module")
def detector():
    return DlibDetector()


class CallCounter:
    """Stands in for one of the detector's dlib models, counting its calls and the pixels it was given."""

    def __init__(self, model, method: str | None = None):
        self.model, self.method, self.sizes = model, method, []

    def _call(self, image, *args):
        self.sizes.append(image.shape[:2])
        return (getattr(self.model, self.method) if self.method else self.model)(image, *args)

    def run(self, image, *args):
        return self._call(image, *args)

    def __call__(self, image, *args):
        return self._call(image, *args)


def _counted(detector, monkeypatch):
    hog, cnn = CallCounter(detector._hog, "run"), CallCounter(detector._cnn)
    monkeypatch.setattr(detector, "_hog", hog)
    monkeypatch.setattr(detector, "_cnn", cnn)
    return hog, cnn


def test_photos_the_hog_passes_miss_get_a_face(detector, data_dir):
    root = data_dir / "celeba-dev"
    if not all((root / name).is_file() for name in RESCUED):
        pytest.skip("celeba-dev lacks the photos this test uses")
    without = detector.with_passes(second_chance=False)
    found = {}
    for name, expected_pass in RESCUED.items():
        image = read_image(root / name)
        assert without.detect(image) == [], name  # today's default without the second chance: no face
        faces = detector.detect(image)
        found[name] = [f.detector_pass for f in faces]
        for face in faces:
            # the landmarks (mapped back from a rotated copy too) sit inside the face's box, eyes above mouth
            x1, y1, x2, y2 = face.box
            assert (face.landmarks[:, 0] > x1).all() and (face.landmarks[:, 0] < x2).all(), name
            assert (face.landmarks[:, 1] > y1).all() and (face.landmarks[:, 1] < y2).all(), name
            assert face.landmarks[:2, 1].mean() < face.landmarks[3:, 1].mean(), name  # tilted, not upside down
            assert face.landmarks68.shape == (68, 2)
    assert sum(len(p) == 1 for p in found.values()) == len(RESCUED), found
    assert {name: p[0] for name, p in found.items() if p} == RESCUED


def test_no_face_photo_stays_empty_at_bounded_cost(detector, data_dir, monkeypatch):
    hog, cnn = _counted(detector, monkeypatch)
    assert detector.detect(read_image(data_dir / "dlib-faces" / "dogs.jpg")) == []
    # two HOG passes, two rotated HOG passes, at most MAX_CONFIRM CNN crops for each kind of candidate
    assert len(hog.sizes) == 4 and 1 <= len(cnn.sizes) <= 2 * dlib_detector.MAX_CONFIRM
    assert len(hog.sizes) + len(cnn.sizes) <= dlib_detector.DETECTOR_CALLS_AT_MOST
    # the rotated copies hold at most ROTATED_SIZE px on the long side (before rotation), the crops are small
    assert all(max(s) <= dlib_detector.ROTATED_SIZE * 1.4 for s in hog.sizes[2:])
    assert all(max(s) <= 2.5 * dlib_detector.CONFIRM_FACE for s in cnn.sizes)


def test_a_photo_with_a_face_pays_nothing_extra(detector, data_dir, monkeypatch):
    hog, cnn = _counted(detector, monkeypatch)
    portrait = sorted((data_dir / "celeba-dev").glob("*/*.jpg"))[0]
    faces = detector.detect(read_image(portrait))
    assert [f.detector_pass for f in faces] == ["hog"]
    assert len(hog.sizes) == 1 and cnn.sizes == []


def test_json_adds_only_the_detector_pass(detector, data_dir):
    name = next(n for n, p in RESCUED.items() if p == HOG_ROTATED)
    faces = FacePipeline(detector).detect(read_image(data_dir / "celeba-dev" / name))
    assert faces
    record = faces[0].to_json(with_identity=False)
    assert set(record) == {"box", "score", "landmarks", "detector_pass"}
    assert record["detector_pass"] == HOG_ROTATED and len(record["box"]) == 4 and len(record["landmarks"]) == 5
    assert np.isfinite(record["score"])
    faces[0].detector_pass = None  # a detector with one pass (an ONNX model) writes the JSON as before
    assert set(faces[0].to_json(with_identity=False)) == {"box", "score", "landmarks"}


def test_detect_reports_the_pass_and_the_photos_still_without_a_face(data_dir):
    import json

    from typer.testing import CliRunner

    from facepipe.cli import app

    rescued = data_dir / "celeba-dev" / next(n for n, p in RESCUED.items() if p == HOG_ROTATED)
    dogs = data_dir / "dlib-faces" / "dogs.jpg"

    def run(*args):
        result = CliRunner().invoke(app, ["detect", *map(str, args)])
        assert result.exit_code == 0, result.output
        return result.stdout
    table = run(rescued, dogs)
    assert f"({HOG_ROTATED})" in table  # the table says which pass found the rescued face
    assert "no face found in 1 of 2 photo(s)" in table and "dogs.jpg" in table.split("no face found in")[1]
    records = [json.loads(line) for line in run(rescued, dogs, "--json").splitlines()]
    assert [len(r["faces"]) for r in records] == [1, 0]
    assert records[0]["faces"][0]["detector_pass"] == HOG_ROTATED
    without = [json.loads(line) for line in run(rescued, "--json", "--no-second-chance").splitlines()]
    assert [len(r["faces"]) for r in without] == [0]  # the user turned it off (crowds of tiny faces)


def test_the_api_can_turn_the_second_chance_off(data_dir):
    import facepipe

    rescued = data_dir / "celeba-dev" / next(n for n, p in RESCUED.items() if p == HOG_CONFIRMED)
    with facepipe.open(second_chance=False) as engine:
        assert engine.detect(rescued) == []
    with facepipe.open() as engine:
        assert [f.detector_pass for f in engine.detect(rescued)] == [HOG_CONFIRMED]


def test_video_frames_skip_the_second_chance_unless_asked(data_dir, monkeypatch):
    from facepipe.cli.video import video_options
    from facepipe.engine import Engine
    from facepipe.video.detect import FrameDetector

    engine = Engine()
    hog, cnn = _counted(engine.detector, monkeypatch)
    frame = read_image(data_dir / "dlib-faces" / "dogs.jpg")
    assert FrameDetector(engine).detect(frame, []) == []
    assert len(hog.sizes) == 1 and cnn.sizes == []  # one pass without upsampling, nothing more
    hog.sizes.clear()
    asked = video_options(second_chance=True)  # identify --video-second-chance
    assert FrameDetector(engine, second_chance=asked.second_chance).detect(frame, []) == []
    assert len(hog.sizes) == 3 and cnn.sizes  # the pass, then the rotated passes; weak boxes shown to the CNN
