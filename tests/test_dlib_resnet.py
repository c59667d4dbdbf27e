"""dlib's face descriptor ResNet converted to ONNX must give dlib's own descriptors, much faster.

Real-photo tests read $FACEPIPE_DATA (default: ../shared/data next to the repository) and skip
when it is absent.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from facepipe.errors import ModelError
from facepipe.openset.matching import pairwise_similarity
from facepipe.runtime.align import DLIB_TEMPLATE
from facepipe.runtime.dlib_files import LANDMARKS_5, RESNET, dlib_model_path
from facepipe.runtime.recognizers.dlib_resnet import CONVERTER_VERSION, build_onnx, ensure_dlib_resnet_onnx
from facepipe.runtime.recognizers.onnx_recognizer import OnnxRecognizer

dlib = pytest.importorskip("dlib")

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACEPIPE_DATA", REPO.parent / "shared" / "data"))
MIN_COSINE = 0.999
PEOPLE_FACES = 8  # faces detected in $FACEPIPE_DATA/people, on top of the 55 aligned "johns" chips


def _rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"cannot read {path}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory) -> Path:
    """Convert through the default cache location, pointed at a temporary folder."""
    cache = tmp_path_factory.mktemp("facepipe-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACEPIPE_CACHE", str(cache))
        path = ensure_dlib_resnet_onnx()
    assert path.parent == cache
    return path


@pytest.fixture(scope="module")
def recognizer(onnx_path) -> OnnxRecognizer:
    return OnnxRecognizer(onnx_path, threads=2)


@pytest.fixture(scope="module")
def real_chips() -> np.ndarray:
    """Aligned 150x150 RGB chips: dlib's "johns" chips, plus faces found and aligned by dlib."""
    johns = sorted((DATA / "johns").glob("*/*.jpg"))
    people = sorted((DATA / "people").glob("*/*.jpg"))
    if not johns or not people:
        pytest.skip(f"real face data not found under {DATA} (set FACEPIPE_DATA to the shared data folder)")
    chips = [_rgb(p) for p in johns]
    assert all(c.shape == (150, 150, 3) for c in chips)

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_5)))
    found = 0
    for path in people[::3]:  # spread over the identities; photos are up to 4352 px, so shrink first
        image = _rgb(path)
        scale = 800 / max(image.shape[:2])
        if scale < 1:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for box in detector(image, 0)[:1]:
            chips.append(dlib.get_face_chip(image, predictor(image, box), size=150, padding=0.25))
            found += 1
        if found == PEOPLE_FACES:
            break
    assert found >= 4, "the HOG detector found almost no faces in people/"
    return np.stack(chips)


def _dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    model = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    # The overload for aligned 150x150 chips, as a batch; num_jitters 0 is the default.
    out = np.array([np.asarray(d) for d in model.compute_face_descriptor(list(chips))], dtype=np.float64)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_descriptors_match_dlib(recognizer, real_chips):
    # dlib (built without BLAS here) needs ~0.15 s a face: every other johns chip + the people faces
    johns = len(sorted((DATA / "johns").glob("*/*.jpg")))
    chips = np.concatenate([real_chips[:johns:2], real_chips[johns:]])
    ours = recognizer.embed(chips).astype(np.float64)
    ours /= np.linalg.norm(ours, axis=1, keepdims=True)  # raw descriptors (metric "euclidean"): compare directions
    theirs = _dlib_descriptors(chips)
    cosine = (ours * theirs).sum(axis=1)
    assert len(cosine) >= 20
    assert cosine.min() >= MIN_COSINE, f"worst cosine {cosine.min():.6f} (mean {cosine.mean():.6f})"


def test_same_identity_closer_than_others(recognizer, real_chips):
    """A sanity check of the embedding space itself on the 5 x 11 johns chips."""
    johns = sorted((DATA / "johns").glob("*/*.jpg"))
    labels = np.array([p.parent.name for p in johns])
    emb = recognizer.embed(real_chips[:len(johns)])
    sim = pairwise_similarity(emb, emb, recognizer.metric)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~np.eye(len(labels), dtype=bool)
    assert sim[same & off_diagonal].mean() > sim[~same].mean() + 0.1


def test_metadata_and_dynamic_batch(recognizer):
    assert recognizer.name == "dlib_resnet_v1"
    assert recognizer.fingerprint == "dlib_resnet_v1/euclidean"
    assert recognizer.metric == "euclidean"
    assert recognizer.embedding_size == 128
    assert recognizer.template.size == (150, 150)
    np.testing.assert_allclose(recognizer.template.points, DLIB_TEMPLATE.points, atol=1e-4)
    np.testing.assert_allclose(recognizer.meta["mean"], [122.782, 117.001, 104.298], atol=1e-3)
    assert recognizer.meta["std"] == [256.0, 256.0, 256.0]
    assert recognizer.meta["color"] == "RGB" and recognizer.meta["metric"] == "euclidean"

    chips = np.random.default_rng(0).integers(0, 256, size=(3, 150, 150, 3), dtype=np.uint8)
    together = recognizer.embed(chips)
    one_by_one = np.concatenate([recognizer.embed(chips[i:i + 1]) for i in range(3)])
    assert together.shape == (3, 128)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    # raw descriptors, as dlib gives them (length about 1.5), not unit vectors
    assert (np.linalg.norm(together, axis=1) > 1.1).all()


def test_cache_is_reused_and_named_by_hash(onnx_path, tmp_path):
    assert re.fullmatch(rf"dlib_resnet_v1-[0-9a-f]{{12}}-c{CONVERTER_VERSION}\.onnx", onnx_path.name)
    stamp = onnx_path.stat().st_mtime_ns
    assert ensure_dlib_resnet_onnx(onnx_path.parent) == onnx_path
    assert onnx_path.stat().st_mtime_ns == stamp, "a cached conversion was redone"

    # cache_dir wins over FACEPIPE_CACHE; concurrent conversions leave one complete file, no temp files
    folder = tmp_path / "concurrent"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_dlib_resnet_onnx(folder))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [folder / onnx_path.name] * 2
    assert [p.name for p in folder.iterdir()] == [onnx_path.name]
    assert (folder / onnx_path.name).read_bytes() == onnx_path.read_bytes()


@pytest.mark.parametrize("kind", ["garbage", "truncated", "other_dlib_model"])
def test_bad_dat_file_is_a_model_error(kind, tmp_path):
    real = dlib_model_path(RESNET)
    bad = tmp_path / f"broken_{kind}.dat"
    if kind == "garbage":
        bad.write_bytes(np.random.default_rng(1).bytes(4096))
    elif kind == "truncated":
        bad.write_bytes(real.read_bytes()[:1_000_000])
    else:  # a dlib file of another kind: the 5-point shape predictor
        bad.write_bytes(dlib_model_path(LANDMARKS_5).read_bytes())
    with pytest.raises(ModelError, match=re.escape(bad.name)):
        build_onnx(bad)
    with pytest.raises(ModelError, match=re.escape(bad.name)):
        ensure_dlib_resnet_onnx(tmp_path / "cache", dat_path=bad)
    assert list((tmp_path / "cache").glob("*")) == [], "a failed conversion left a file in the cache"
