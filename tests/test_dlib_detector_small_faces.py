"""The HOG detector's policy finds small faces in small crowded images that a single pass without
upsampling misses, while portraits and large photos keep one pass."""
import numpy as np
import pytest

from facepipe.detection.data import parse_retinaface
from facepipe.detection.evaluate import match_image
from facepipe.runtime.detectors.dlib_detector import DlibDetector
from facepipe.runtime.image import read_image

# widerface-dev images where a pass without upsampling finds a face (so the old "nothing found: try
# again upsampled" rule never fired) but misses smaller ones.
CROWDS = ("3_Riot_Riot_3_689.jpg", "4_Dancing_Dancing_4_1026.jpg")


def _found(detector, image, sample):
    dets = detector.detect(image)
    boxes = np.array([d.box for d in dets], np.float32).reshape(-1, 4)
    small = (sample.boxes[:, 3] - sample.boxes[:, 1]) < 16
    tp, _, _ = match_image(boxes, np.array([d.score for d in dets], np.float32), sample.boxes,
                           sample.ignore | small, 0.5, None)
    return len(dets), int(tp.sum())


def test_small_faces_in_widerface_crowds_are_found(data_dir):
    root = data_dir / "widerface-dev"
    samples = {s.image.name: s for s in parse_retinaface(root / "label.txt", root)}
    if not all(name in samples for name in CROWDS):
        pytest.skip("widerface-dev lacks the images this test uses")
    policy, single = DlibDetector(), DlibDetector(upsample=0)
    found_policy = found_single = 0
    for name in CROWDS:
        image = read_image(samples[name].image)
        n_single, hits_single = _found(single, image, samples[name])
        assert n_single >= 1  # the old second chance would not have run
        found_single += hits_single
        found_policy += _found(policy, image, samples[name])[1]
    assert found_single == 3 and found_policy == 6, (found_single, found_policy)


def test_portraits_and_large_photos_keep_one_pass(data_dir, monkeypatch):
    detector = DlibDetector()
    calls = []
    real_run = detector._hog.run

    class Spy:
        def run(self, image, upsample, threshold):
            calls.append(upsample)
            return real_run(image, upsample, threshold)
    monkeypatch.setattr(detector, "_hog", Spy())
    portrait = sorted((data_dir / "celeba-dev").glob("*/*.jpg"))[0]
    large = data_dir / "scenes" / "couple.jpg"
    for path in (portrait, large):
        calls.clear()
        assert detector.detect(read_image(path))
        assert calls == [0], (path.name, calls)
