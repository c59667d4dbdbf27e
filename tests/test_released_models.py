"""facepipe's released detector and recognizer: they ship in the package, load by name, work on real photos, and
their card tells the truth about them (its figures are checked against each file's own metadata, not typed twice)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from facepipe.runtime.hashing import file_sha256
from facepipe.runtime.loader import RELEASED, load_detector, released_file

REPO = Path(__file__).resolve().parents[1]
CARD = REPO / "models" / "MODEL_CARD.md"


def _metadata(path: Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: json.loads(p.value) for p in model.metadata_props}


def test_released_detector_is_package_data_and_loads_by_name():
    path = released_file("facepipe")
    assert path.is_file() and path.stat().st_size <= 3 * 1024 * 1024, f"{path}: over 3 MB"
    assert RELEASED["facepipe"][0] == "detector"
    detector = load_detector("facepipe")
    assert detector.spec.name == "centerface_mnet025"
    image = np.zeros((480, 640, 3), np.uint8)
    assert detector.detect(image) == []  # nothing in a black frame


def test_released_detector_finds_the_faces_of_a_real_photo(data_dir):
    from facepipe.detection.data import parse_imglab
    from facepipe.runtime.boxes import box_iou
    from facepipe.runtime.image import read_image

    detector = load_detector("facepipe")
    found = total = 0
    for sample in parse_imglab(data_dir / "dlib-faces" / "testing.xml", data_dir / "dlib-faces"):
        faces = detector.detect(read_image(sample.image))
        total += len(sample.boxes)
        if faces:
            found += int((box_iou(sample.boxes, np.stack([f.box for f in faces])).max(axis=1) >= 0.4).sum())
            assert all(f.landmarks is not None and f.landmarks.shape == (5, 2) for f in faces)
    assert found >= 0.8 * total, f"found {found} of {total} hand-labelled faces at the default threshold"


def test_the_card_matches_the_file():
    path = released_file("facepipe")
    meta = _metadata(path)
    card = CARD.read_text(encoding="utf-8")
    assert file_sha256(path) in card, "the card names another file (sha256)"
    training = meta["training"]
    assert training["data_sha256"] in card, "the card's data hash is not the file's"
    assert f"`{training['run']}`" in card and training["arch"] in card
    assert re.search(rf"score threshold[^\n]*{meta['score_threshold']}", card), "default threshold differs"
    assert re.search(rf"max_side[^\n]*{meta['input_rule']['max_side']}", card), "input rule differs"
    assert f"{training['epochs']} epochs" in card
    config = REPO / "configs" / "detector" / f"{training['run']}.yaml"
    assert config.is_file(), f"the recipe {config} that made the release is missing"



def test_released_recognizer_is_package_data_and_loads_by_name():
    from facepipe.runtime.loader import load_recognizer

    path = released_file("facepipe-mbf")
    assert path.is_file() and path.stat().st_size <= 5 * 1024 * 1024, f"{path}: over 5 MB"
    assert RELEASED["facepipe-mbf"][0] == "recognizer"
    recognizer = load_recognizer("facepipe-mbf")
    assert (recognizer.name, recognizer.metric, recognizer.embedding_size) == ("mobilefacenet", "cosine", 128)
    chips = np.random.default_rng(0).integers(0, 256, (2, 112, 112, 3), dtype=np.uint8)
    emb = recognizer.embed(chips)
    assert emb.shape == (2, 128) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_released_recognizer_tells_johns_apart(data_dir):
    """The default detector, then the released recognizer, over the johns photos (5 people, none of them in LFW):
    each photo's nearest other photo is the same person."""
    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.image import read_image

    paths = sorted((data_dir / "johns").glob("*/*.jpg"))
    if not paths:
        pytest.skip(f"no johns photos under {data_dir}")
    pipeline = build_pipeline(ModelSpec(recognizer="facepipe-mbf", threads=2))
    people, embeddings = [], []
    for path in paths:
        faces = pipeline.analyze(read_image(path))
        if faces:
            people.append(path.parent.name)
            embeddings.append(max(faces, key=lambda f: f.area).embedding)
    assert len(people) >= 0.9 * len(paths), f"faces found in {len(people)} of {len(paths)} photos"
    emb, people = np.stack(embeddings), np.array(people)
    similarity = emb @ emb.T
    np.fill_diagonal(similarity, -np.inf)
    accuracy = float((people[similarity.argmax(1)] == people).mean())
    assert accuracy >= 0.8, f"leave-one-out accuracy {accuracy:.3f} over {len(people)} photos"


def test_the_recognizer_card_matches_the_file():
    path = released_file("facepipe-mbf")
    meta = _metadata(path)
    card = CARD.read_text(encoding="utf-8")
    section = card[card.index("## `facepipe_recognizer.onnx`"):]
    assert file_sha256(path) in section, "the card names another file (sha256)"
    training = meta["training"]
    assert training["data_sha256"] in section, "the card's data hash is not the file's"
    assert f"`{training['name']}`" in section and training["backbone"] in section
    assert f"{training['epochs']:g} epochs" in section and f"{training['steps']:,} steps" in section
    assert re.search(rf"threshold[^\n]*{meta['threshold']:.3f}", section), "verify threshold differs"
    assert f"color {meta['color']}" in section, "input colour differs"
    assert (REPO / "configs" / "recognizer" / "release.yaml").is_file(), "the recipe that made the release is missing"



_IDENTIFY_ONE = """
import sys
from facepipe.pipeline.batch import ModelSpec, build_pipeline
from facepipe.runtime.image import read_image

faces = build_pipeline(ModelSpec(detector=sys.argv[1] or None, threads=1)).analyze(read_image(sys.argv[2]))
assert faces and faces[0].embedding is not None
"""


def _files_opened_to_identify(detector: str, photo: Path, tmp_path: Path) -> set[str]:
    """Every file the process (and its threads) opened, seen by strace: it watches dlib's C++ reads too."""
    import subprocess
    import sys

    trace = tmp_path / f"trace-{detector or 'default'}.txt"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=openat", "-o", str(trace), sys.executable, "-c",
                    _IDENTIFY_ONE, detector, str(photo)], capture_output=True, timeout=120, check=True)
    return set(re.findall(r'openat\([^,]*, "([^"]+)"', trace.read_text()))


def test_the_facepipe_detector_chain_never_opens_the_68_point_file(data_dir, tmp_path):
    """dlib's 68-point model is 100 MB, 0.6 s to load, and trained on non-commercial data (iBUG 300-W): behind
    facepipe's detector the chip comes from the 5-point predictor, so that chain never opens it; the default
    chain (dlib HOG + 68 points) does."""
    import shutil

    from facepipe.runtime.dlib_files import LANDMARKS_68, dlib_model_path

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace; .ci/install-system.sh does)")
    file68 = str(dlib_model_path(LANDMARKS_68))
    photo = sorted((data_dir / "people").glob("*/*.jpg"))[0]
    assert file68 in _files_opened_to_identify("", photo, tmp_path)
    opened = _files_opened_to_identify("facepipe", photo, tmp_path)
    assert any(path.endswith("facepipe_detector.onnx") for path in opened)
    assert file68 not in opened
