"""RecordIO round trip (without mxnet), verification sets (restricted unpickler), pairs lists, metrics, splits."""
from __future__ import annotations

import os
import pickle
import struct

import cv2
import numpy as np
import pytest
import torch

from facepipe.recognition.data import FolderSource, open_source, split_indices
from facepipe.recognition.sampler import EpochBatchSampler, IdentityBalancedBatchSampler
from facepipe.recognition.verification import (
    VerificationSetError,
    evaluate_scores,
    load_bin,
    load_pair_set,
    make_pairs,
    read_pairs_file,
    restricted_loads,
    save_bin,
    tar_at_far,
)
from facepipe.train import recordio
from facepipe.train.recordio import MAGIC, RecordIOError, RecordIOReader, RecordIOWriter


def _chips(n, size=24, seed=0):
    """Smooth random images (JPEG keeps them close to the original)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 3, 3, 3), dtype=np.uint8)
    return np.stack([cv2.resize(b, (size, size), interpolation=cv2.INTER_LINEAR) for b in base])


def test_recordio_round_trip(tmp_path):
    chips = _chips(7)
    labels = [0, 0, 1, 1, 1, 3, 3]  # identity 2 has no images
    with RecordIOWriter(tmp_path / "train") as w:
        for c, l in zip(chips, labels):
            w.write(c, l)
        png = cv2.imencode(".png", chips[0][:, :, ::-1])[1].tobytes()
        w.write(png, 4)  # already-encoded bytes are stored as they are
    r = RecordIOReader(tmp_path / "train.rec")
    assert len(r) == 8 and r.num_classes == 5
    assert r.labels().tolist() == labels + [4]
    img, lab = r[7]
    assert lab == 4 and np.array_equal(img, chips[0])  # PNG: lossless
    img, lab = r[2]
    assert lab == 1 and img.shape == (24, 24, 3) and np.abs(img.astype(int) - chips[2]).mean() < 6  # JPEG 95
    assert (tmp_path / "property").read_text() == "5,24,24"
    # the insightface header record: key 0 holds (first identity record, end of identity records)
    label, _ = recordio.unpack(r.read_record(0))
    assert label.tolist() == [9.0, 14.0]
    assert recordio.unpack(r.read_record(9 + 1))[0].tolist() == [3.0, 6.0]  # identity 1 = image keys 3..5


def test_recordio_payload_containing_magic_is_split_and_restored(tmp_path):
    payload = b"\x01\x02\x03\x04" + struct.pack("<I", MAGIC) + b"abc" + struct.pack("<I", MAGIC)
    framed = recordio.frame(payload)
    # two parts: cflag 1 then cflag 3, the aligned magic word removed from the data
    assert struct.unpack_from("<I", framed, 4)[0] >> 29 == 1
    with RecordIOWriter(tmp_path / "x") as w:
        w.write(payload, 0)
    r = RecordIOReader(tmp_path / "x")
    raw, label = r.raw(0)
    assert raw == payload and label == 0


def test_recordio_reads_mxnet_style_file_without_header(tmp_path):
    """A plain MXIndexedRecordIO file (no insightface header): labels scanned, class count = max + 1."""
    rec, idx = tmp_path / "plain.rec", tmp_path / "plain.idx"
    enc = [cv2.imencode(".jpg", c)[1].tobytes() for c in _chips(3)]
    with open(rec, "wb") as f, open(idx, "w") as fi:
        for key, (e, lab) in enumerate(zip(enc, [2.0, 0.0, 1.0])):
            fi.write(f"{key}\t{f.tell()}\n")
            f.write(recordio.frame(recordio.pack(lab, e, key)))
    r = RecordIOReader(tmp_path / "plain")
    assert len(r) == 3 and r.num_classes == 3 and r.labels().tolist() == [2, 0, 1]


def test_recordio_rejects_garbage_and_regrouped_identities(tmp_path):
    (tmp_path / "bad.rec").write_bytes(b"\0" * 64)
    (tmp_path / "bad.idx").write_text("0\t0\n")
    with pytest.raises(RecordIOError, match="bad magic"):
        RecordIOReader(tmp_path / "bad")
    w = RecordIOWriter(tmp_path / "g")
    w.write(_chips(1)[0], 0)
    w.write(_chips(1)[0], 1)
    with pytest.raises(RecordIOError, match="together"):
        w.write(_chips(1)[0], 0)
    w.close()


def test_open_source_recordio_and_folder(tmp_path):
    with RecordIOWriter(tmp_path / "rec" / "train") as w:
        for i, c in enumerate(_chips(4)):
            w.write(c, i // 2)
    src = open_source(tmp_path / "rec")
    assert len(src) == 4 and src.labels.tolist() == [0, 0, 1, 1] and src.load(0).shape == (24, 24, 3)
    for name in ("b", "a"):
        (tmp_path / "f" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "f" / name / "1.png"), _chips(1)[0])
    folder = open_source(tmp_path / "f")
    assert isinstance(folder, FolderSource) and folder.classes == ["a", "b"]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_restricted_unpickler_rejects_malicious_bin(tmp_path):
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(([b"x", b"y"], [Evil()]), protocol=2))
    with pytest.raises(VerificationSetError, match="posix.system|os.system|refusing"):
        load_bin(path)
    # any global is refused, even a harmless-looking one
    with pytest.raises(VerificationSetError, match="refusing"):
        restricted_loads(pickle.dumps([np.bool_(True)]))
    with pytest.raises(VerificationSetError):
        restricted_loads(b"not a pickle")


def test_bin_round_trip_and_structure_checks(tmp_path):
    chips = _chips(4, size=32)
    blobs = [cv2.imencode(".jpg", c[:, :, ::-1])[1].tobytes() for c in chips]
    save_bin(tmp_path / "set.bin", blobs, [True, False])
    got, same = load_bin(tmp_path / "set.bin")
    assert got == blobs and same.tolist() == [True, False]
    ps = load_pair_set(tmp_path / "set.bin", size=(16, 16))
    assert ps.images.shape == (4, 16, 16, 3) and ps.left.tolist() == [0, 2] and ps.right.tolist() == [1, 3]
    # protocol-2 pickles made by Python 3 store bytes through _codecs.encode(str, 'latin1'): allowed, only that
    (tmp_path / "p2.bin").write_bytes(pickle.dumps((blobs, [True, False]), protocol=2))
    assert load_bin(tmp_path / "p2.bin")[0] == blobs
    # Python 2 pickles (str opcodes) come out as bytes
    py2 = b"\x80\x02]q\x00(U\x03abcq\x01U\x03defq\x02e]q\x03\x88a\x86q\x04."
    assert restricted_loads(py2) == ([b"abc", b"def"], [True])
    sneaky = pickle.dumps([1], protocol=2).replace(b"]",
                                                   b"c_codecs\nencode\nX\x01\x00\x00\x00aX\x04\x00\x00\x00zlib\x86R", 1)
    with pytest.raises(VerificationSetError, match="latin1"):
        restricted_loads(sneaky)
    (tmp_path / "odd.bin").write_bytes(pickle.dumps((blobs[:3], [True, False]), protocol=2))
    with pytest.raises(VerificationSetError, match="2 images per pair"):
        load_bin(tmp_path / "odd.bin")


def test_pairs_files_lfw_and_generic(tmp_path):
    for name, n in (("Ann", 2), ("Bob", 1)):
        (tmp_path / name).mkdir()
        for i in range(1, n + 1):
            cv2.imwrite(str(tmp_path / name / f"{name}_{i:04d}.jpg"), _chips(1, seed=i)[0])
    (tmp_path / "pairs.txt").write_text("1\t2\nAnn\t1\t2\nAnn\t1\tBob\t1\n")
    pl = read_pairs_file(tmp_path / "pairs.txt")
    assert [(a.name, b.name, s) for a, b, s in pl.pairs] == [("Ann_0001.jpg", "Ann_0002.jpg", True),
                                                             ("Ann_0001.jpg", "Bob_0001.jpg", False)]
    (tmp_path / "generic.txt").write_text("Ann/Ann_0001.jpg Bob/Bob_0001.jpg 0\nAnn/Ann_0002.jpg Ann/Ann_0001.jpg 1\n")
    ps = load_pair_set(tmp_path / "generic.txt")
    assert ps.same.tolist() == [False, True] and len(ps.images) == 3
    (tmp_path / "broken.txt").write_text("just one\n")
    with pytest.raises(VerificationSetError, match="not a pairs line"):
        read_pairs_file(tmp_path / "broken.txt")


def test_verification_metrics_on_known_scores():
    order = np.random.default_rng(0).permutation(100)  # folds run in file order: mix the kinds
    same = np.array([True] * 50 + [False] * 50)[order]
    scores = np.concatenate([np.linspace(0.5, 1.0, 50), np.linspace(-0.5, 0.45, 50)])[order]
    r = evaluate_scores(scores, same)
    assert r["accuracy"] == 1.0 and 0.45 < r["threshold"] < 0.5 and r["auc"] == pytest.approx(1.0)
    flipped = evaluate_scores(-scores, same)
    assert flipped["accuracy"] < 0.6
    # 1,000 negatives: FAR 1e-3 allows one false accept; 1e-4 cannot be measured
    rng = np.random.default_rng(0)
    neg, pos = rng.normal(0, 0.1, 1000), rng.normal(0.5, 0.1, 1000)
    s, y = np.concatenate([pos, neg]), np.array([True] * 1000 + [False] * 1000)
    tar, t = tar_at_far(s, y, 1e-3)
    assert (neg > t).sum() <= 1 and tar == pytest.approx((pos > t).mean())
    assert tar_at_far(s, y, 1e-4) == (None, None)


def test_make_pairs_and_splits_are_seeded():
    labels = np.repeat(np.arange(6), 4)
    a = make_pairs(labels, 10, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, make_pairs(labels, 10, seed=1)))
    left, right, same = a
    assert same.sum() == 10 and (~same).sum() == 10 and ((labels[left] == labels[right]) == same).all()
    tr, va = split_indices(labels, "identity", 0.34, seed=3)
    assert set(labels[tr]).isdisjoint(labels[va]) and len(set(labels[va])) == 2
    assert np.array_equal(va, split_indices(labels, "identity", 0.34, seed=3)[1])
    tr, va = split_indices(labels, "image", 0.25, seed=3)
    assert set(labels[tr]) == set(labels) and len(va) == 6


def test_samplers_are_functions_of_seed_epoch_and_rank():
    s = EpochBatchSampler(20, 4, seed=5, rank=1, world_size=2)
    s.set_epoch(3)
    full = list(s)
    s.set_epoch(3, start_batch=1)
    assert list(s) == full[1:] and len(full) == 2
    other = EpochBatchSampler(20, 4, seed=5, rank=0, world_size=2)
    other.set_epoch(3)
    assert not {i for b in full for i, _ in b} & {i for b in other for i, _ in b}  # ranks see disjoint images
    labels = np.repeat(np.arange(8), 3)
    pk = IdentityBalancedBatchSampler(labels, 4, 2, seed=0)
    batch = next(iter(pk))
    assert len(batch) == 8 and len({labels[i] for i, _ in batch}) == 4


def test_online_mask_augmentation_hook(monkeypatch):
    import sys

    from facepipe.recognition.data import DataError, FaceTransform
    from facepipe.runtime.align import DLIB_TEMPLATE

    chip = np.full((112, 112, 3), 128, dtype=np.uint8)
    plain = FaceTransform(mask_prob=0.0, flip=False)(chip, seed=1)
    pytest.importorskip("facepipe.prepare.masks")
    masked = FaceTransform(mask_prob=1.0, flip=False)(chip, seed=1)
    assert masked.dtype == torch.uint8 and not np.array_equal(masked.numpy(), plain.numpy())  # a mask on the lower face
    diff = (masked.float() - plain.float()).abs().numpy()
    lower, upper = diff[:, 70:, :], diff[:, :40, :]
    assert lower.mean() > upper.mean()
    FaceTransform(mask_prob=1.0, template=DLIB_TEMPLATE)(chip, seed=2)  # other templates are passed through
    import facepipe.prepare

    monkeypatch.setitem(sys.modules, "facepipe.prepare.masks", None)  # the preparation module absent
    monkeypatch.delattr(facepipe.prepare, "masks", raising=False)
    with pytest.raises(DataError, match="mask_prob > 0 needs facepipe.prepare.masks"):
        FaceTransform(mask_prob=0.5)


@pytest.mark.parametrize("color", ["RGB", "BGR", "GRAY"])
def test_device_normalisation_equals_the_runtime_preprocessing(color):
    """Workers ship uint8; normalize_batch on the device must give exactly what the exported model sees."""
    from facepipe.recognition.data import normalize_batch
    from facepipe.runtime.preprocess import to_network_input

    chips = np.random.default_rng(0).integers(0, 256, (3, 16, 20, 3), dtype=np.uint8)
    mean, std = ([127.5], [128.0]) if color == "GRAY" else ([120.0, 110.0, 100.0], [60.0, 61.0, 62.0])
    got = normalize_batch(torch.from_numpy(chips.transpose(0, 3, 1, 2).copy()), color, mean, std)
    np.testing.assert_allclose(got.numpy(), to_network_input(chips, color, mean, std), rtol=1e-6, atol=1e-5)
