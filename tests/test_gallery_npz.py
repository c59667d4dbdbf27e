"""gallery export -> import: bit-exact round trip, de-duplication by hash, foreign models and hostile files refused."""
import hashlib
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from facepipe.errors import GalleryError
from facepipe.gallery import SqliteGallery
from facepipe.gallery.npz import read_npz, write_npz

DIM = 16


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def filled(path, n_persons=5, per=4, model="m", seed=0, names=None):
    rng = np.random.default_rng(seed)
    g = SqliteGallery(path)
    g.check_model(model, DIM)
    for i in range(n_persons):
        name = (names or [f"p{k}" for k in range(n_persons)])[i]
        for j in range(per):
            e = rng.normal(size=DIM).astype(np.float32)
            g.add_face(name, f"/photos/{name}/{j}.jpg", sha(f"{seed}{name}{j}"), [j, 2.5, 10 + j, 20.25], 0.9 + j / 100,
                       e / np.linalg.norm(e))
    return g


def cli(*args):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "facepipe.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def snapshot(g):
    rows = g.db.execute("SELECT p.name, f.source, f.sha256, f.box, f.score, f.embedding FROM faces f "
                        "JOIN persons p ON p.id = f.person_id ORDER BY f.sha256").fetchall()
    return rows, g.model, g.embedding_size


def test_export_import_round_trip_is_bit_exact_and_idempotent(tmp_path):
    with filled(tmp_path / "a.db", names=["张伟", "ann", "bob", "cy", "dee"]) as a:
        before = snapshot(a)
    out = cli("gallery", "export", tmp_path / "g.npz", "--gallery", tmp_path / "a.db")
    assert out.returncode == 0, out.stderr
    assert "exported 20 faces of 5 persons" in out.stdout
    assert oct((tmp_path / "g.npz").stat().st_mode & 0o777) == "0o600"
    out = cli("gallery", "import", tmp_path / "g.npz", "--gallery", tmp_path / "b.db")
    assert out.returncode == 0, out.stderr
    assert "imported 20 faces" in out.stdout
    with SqliteGallery(tmp_path / "b.db") as b:
        assert snapshot(b) == before  # names, sources, hashes, boxes, scores, embedding bytes, model, size
        revision = b.revision
    out = cli("gallery", "import", tmp_path / "g.npz", "--gallery", tmp_path / "b.db")
    assert "imported 0 faces" in out.stdout and "20 already present" in out.stdout
    with SqliteGallery(tmp_path / "b.db") as b:
        assert b.face_count() == 20 and b.revision == revision


def test_import_skips_faces_already_present(tmp_path):
    with filled(tmp_path / "a.db", n_persons=4) as a:
        records = a.export_records()
    with filled(tmp_path / "b.db", n_persons=2) as b:  # the same photos (hashes) of p0 and p1
        assert b.import_records(records) == (8, 8)
        assert sorted((p.name, p.faces) for p in b.persons()) == [("p0", 4), ("p1", 4), ("p2", 4), ("p3", 4)]
        ids = [r[0] for r in b.db.execute("SELECT id FROM faces ORDER BY id")]
        assert ids == sorted(set(ids)) and len(ids) == 16


def test_foreign_model_is_refused_and_nothing_changes(tmp_path):
    with filled(tmp_path / "a.db", model="other-model:1234") as a:
        write_npz(tmp_path / "x.npz", a.export_records())
    with filled(tmp_path / "b.db", n_persons=1) as b:
        before = snapshot(b)
    out = cli("gallery", "import", tmp_path / "x.npz", "--gallery", tmp_path / "b.db")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "model 'm', not 'other-model:1234'" in out.stderr
    with SqliteGallery(tmp_path / "b.db") as b:
        assert snapshot(b) == before


def test_import_is_all_or_nothing(tmp_path):
    with filled(tmp_path / "a.db") as a:
        records = a.export_records()
    with SqliteGallery(tmp_path / "b.db") as b:
        def crash(done):
            raise KeyboardInterrupt  # the user presses ^C in the middle
        with pytest.raises(KeyboardInterrupt):
            b.import_records(records, on_progress=crash, chunk=5)
        assert b.face_count() == 0 and b.persons() == [] and b.model is None


def _arrays(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


HOSTILE = {
    "truncated": None,
    "not a zip": None,
    "pickle": None,
    "object names": lambda a: {**a, "names": np.array(list(a["names"]), dtype=object)},
    "wrong embedding shape": lambda a: {**a, "embeddings": a["embeddings"][:, :8]},
    "fewer embeddings": lambda a: {**a, "embeddings": a["embeddings"][:-1]},
    "float64 embeddings": lambda a: {**a, "embeddings": a["embeddings"].astype(np.float64)},
    "person out of range": lambda a: {**a, "person": a["person"] + 100},
    "nan embedding": lambda a: {**a, "embeddings": np.where(np.arange(DIM) == 3, np.nan,
                                                            a["embeddings"]).astype(np.float32)},
    "bad hash": lambda a: {**a, "sha256": np.array(["../../etc/passwd"] * len(a["sha256"]))},
    "missing box": lambda a: {k: v for k, v in a.items() if k != "box"},
    "wrong format": lambda a: {**a, "format": np.array("something-else/9")},
}


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_or_damaged_files_are_one_line_and_change_nothing(tmp_path, kind):
    with filled(tmp_path / "a.db") as a:
        write_npz(tmp_path / "good.npz", a.export_records())
    bad = tmp_path / "bad.npz"
    good = (tmp_path / "good.npz").read_bytes()
    if kind == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif kind == "not a zip":
        bad.write_bytes(b"\x89PNG this is no archive" * 10)
    elif kind == "pickle":
        bad.write_bytes(pickle.dumps({"embeddings": np.zeros((2, DIM))}))
    else:
        arrays = HOSTILE[kind](_arrays(tmp_path / "good.npz"))
        np.savez(bad, **arrays)  # allow_pickle defaults to True when writing: object arrays get pickled in
    if kind == "object names":
        with zipfile.ZipFile(bad) as z:
            assert any(b"\x80" in z.read(n) for n in z.namelist() if n.startswith("names"))  # really a pickle inside
    with pytest.raises(GalleryError) as info:
        read_npz(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    if kind not in ("truncated", "pickle", "object names", "wrong embedding shape"):
        return  # the CLI path below is the same for every kind: run it for a few
    with filled(tmp_path / "b.db", n_persons=1) as b:
        before = snapshot(b)
    out = cli("gallery", "import", bad, "--gallery", tmp_path / "b.db")
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and "error:" in out.stderr
    assert "Traceback" not in out.stderr
    with SqliteGallery(tmp_path / "b.db") as b:
        assert snapshot(b) == before
