"""The persisted ANN index: built once, reopened without a rebuild, exact under enroll/remove, rebuilt when
stale, safe against a concurrent reader and against kill -9 in the middle of a rebuild."""
import multiprocessing as mp
import os
import signal
import time

import numpy as np
import pytest

from facepipe.gallery import SqliteGallery
from facepipe.gallery import index as ann

DIM = 16


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill(g, persons=60, per=5, seed=0, prefix="p"):
    rng = np.random.default_rng(seed)
    g.check_model("m", DIM)
    centres = unit(rng.normal(size=(persons, DIM)))
    for i, c in enumerate(centres):
        for j in range(per):
            g.add_face(f"{prefix}{i}", f"/{prefix}{i}/{j}.jpg", f"{prefix}{seed}-{i}-{j}", [0, 0, 1, 1], 1.0,
                       unit(c + 0.3 * rng.normal(size=DIM) / np.sqrt(DIM)))
    return centres


def brute_force(g, query, top_k):
    """Persons by the gallery's person score, from every stored vector (the ground truth)."""
    from facepipe.openset.matching import person_scores

    matrix, labels, names = g.embeddings()
    scores = person_scores(query[None], matrix, labels, len(names), g.metric)[0]
    return sorted(((names[p], float(scores[p])) for p in range(len(names))), key=lambda t: -t[1])[:top_k]


def assert_exact(g, queries, top_k=3):
    for q, m in zip(queries, g.match(queries, threshold=0.5, top_k=top_k)):
        want = brute_force(g, q, top_k)
        assert [c.identity for c in m.candidates] == [n for n, _ in want]
        assert np.allclose([c.similarity for c in m.candidates], [s for _, s in want], atol=1e-5)


def small_ann(path, **kw) -> SqliteGallery:
    g = SqliteGallery(path, ann_min_faces=50, **kw)
    g.nprobe = 10_000  # probe every list: the IVF answers exactly, so any bookkeeping error shows
    return g


def test_index_is_built_once_and_reopened_without_a_rebuild(tmp_path, monkeypatch):
    path = tmp_path / "g.db"
    with small_ann(path) as g:
        centres = fill(g)
        assert g.search_kind == "faiss-ivf (persisted)"
        first = g.match(centres[:5], 0.5, 3)
        assert g.index_builds == 1
        tag = g.index_tag()
        assert tag.count == 300 and tag.model == "m" and (g.index_folder / tag.file).is_file()
        assert oct((g.index_folder / tag.file).stat().st_mode & 0o777) == "0o600"

    def no_rebuild(*a, **k):
        raise AssertionError("the rebuild path was taken")
    monkeypatch.setattr(SqliteGallery, "_build_index", no_rebuild)
    monkeypatch.setattr(SqliteGallery, "_fold_locked", no_rebuild)
    with small_ann(path) as g:
        again = g.match(centres[:5], 0.5, 3)
        assert g.index_tag() == tag
    assert [[(c.identity, round(c.similarity, 5)) for c in m.candidates] for m in first] == \
           [[(c.identity, round(c.similarity, 5)) for c in m.candidates] for m in again]


def test_enroll_and_remove_keep_search_exact_then_fold_into_the_file(tmp_path):
    with small_ann(tmp_path / "g.db") as g:
        centres = fill(g)
        assert_exact(g, centres[:10])
        built = g.index_tag()
        # Faces added after the file was written are searched exactly beside it; removed ones drop out.
        new = fill(g, persons=4, per=3, seed=7, prefix="new")
        g.remove_person("p0")
        g.remove_person("p3")
        queries = np.vstack([centres[:10], new])
        assert_exact(g, queries)
        assert g.index_tag() == built and g.index_builds == 1  # nothing rewritten for a handful of changes
        assert all(m.candidates[0].identity not in ("p0", "p3") for m in g.match(centres[[0, 3]], 0.5, 3))
        # Fold: IVF add/remove on the trained index, written as a new file; no retraining.
        tag = g.reindex(full=False)
        assert g.index_folds == 1 and g.index_builds == 1
        assert tag.count == 300 - 10 + 12 and tag.trained_count == 300 and tag.file != built.file
        assert not (g.index_folder / built.file).exists()  # old file swept
        assert_exact(g, queries)


def test_many_changes_fold_automatically(tmp_path):
    with small_ann(tmp_path / "g.db") as g:
        g.fold_limit_min = 5
        centres = fill(g)
        g.match(centres[:1], 0.5, 1)
        fill(g, persons=3, per=3, seed=9, prefix="more")  # 9 faces outside the file > 5
        assert g.index_state() == "fold"
        assert_exact(g, centres[:5])
        assert g.index_folds == 1 and g.index_builds == 1 and g.index_state() == "fresh"


def test_stale_index_is_detected_and_rebuilt(tmp_path):
    path = tmp_path / "g.db"
    with small_ann(path) as g:
        centres = fill(g)
        g.match(centres[:1], 0.5, 1)
        # Drift past retrain_drift: the centroids were trained on a different gallery -> full rebuild.
        g.retrain_drift = 0.1
        fill(g, persons=8, per=5, seed=3, prefix="q")  # 40 changes > 10% of 300
        assert g.index_state() == "stale"
        assert_exact(g, centres[:5])
        assert g.index_builds == 2 and g.index_tag().trained_count == 340
        # Another model's embeddings: stale by model.
        g.replace_embeddings("m2", {fid: unit(np.ones(DIM)) for fid, *_ in g.faces()})
        assert g.index_state() == "stale"
        g.match(centres[:1], 0.5, 1)
        assert g.index_builds == 3 and g.index_tag().model == "m2"
    # A damaged file (truncated by a disk problem, or copied half) is rebuilt, not trusted.
    with small_ann(path) as g:
        f = g.index_folder / g.index_tag().file
        f.write_bytes(f.read_bytes()[:100])
        assert g.search_kind == "faiss-ivf (persisted)"
        assert g.index_builds == 1 and g.index_tag().file != f.name


def _writer(path, stop_after, ready):
    g = small_ann(path)
    g.fold_limit_min = 3  # fold (rewrite the file) every few faces: the reader races the swaps
    rng = np.random.default_rng(11)
    ready.wait(30)
    for i in range(stop_after):
        g.add_face(f"w{i % 4}", f"/w/{i}", f"w-{i}", [0, 0, 1, 1], 1.0, unit(rng.normal(size=DIM)))
        if i % 4 == 3:
            g.match(unit(rng.normal(size=(1, DIM))), 0.5, 1)  # triggers the fold
    g.close()


def test_concurrent_writer_and_reader(tmp_path):
    path = tmp_path / "g.db"
    with small_ann(path) as g:
        centres = fill(g)
        g.match(centres[:1], 0.5, 1)
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    writer = ctx.Process(target=_writer, args=(path, 40, ready))
    writer.start()
    ready.set()
    reads = 0
    try:
        while writer.is_alive() or reads == 0:
            with small_ann(path) as r:
                m = r.match(centres[:4], 0.5, 1)
                assert [c.candidates[0].identity for c in m] == ["p0", "p1", "p2", "p3"]
                reads += 1
    finally:
        writer.join(60)
    assert writer.exitcode == 0 and reads > 1
    with small_ann(path) as g:
        assert g.face_count() == 340
        assert_exact(g, centres[:5])


def _rebuild_then_hang(path, marker):
    import faiss

    real = faiss.write_index

    def write_then_hang(index, name):
        real(index, name)
        open(marker, "w").close()  # the new file is on disk under its temporary name: kill me now
        time.sleep(120)
    faiss.write_index = write_then_hang
    small_ann(path).reindex(full=True)


def test_kill_during_rebuild_leaves_the_old_index_in_use(tmp_path, monkeypatch):
    path, marker = tmp_path / "g.db", tmp_path / "writing"
    with small_ann(path) as g:
        centres = fill(g)
        expected = g.match(centres[:5], 0.5, 3)
        tag = g.index_tag()
    proc = mp.get_context("spawn").Process(target=_rebuild_then_hang, args=(path, marker))
    proc.start()
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert any(p.name.endswith(".tmp") for p in ann.index_folder(path).iterdir())  # it died mid-write

    monkeypatch.setattr(SqliteGallery, "_build_index", lambda *a: pytest.fail("rebuilt after the crash"))
    with small_ann(path) as g:
        assert g.index_tag() == tag and g.index_state() == "fresh"
        got = g.match(centres[:5], 0.5, 3)
    assert [m.identity for m in got] == [m.identity for m in expected]
    monkeypatch.undo()
    with small_ann(path) as g:
        g.reindex()
        assert [p.name for p in g.index_folder.glob("ivf-*")] == [g.index_tag().file]  # leftover swept


def test_reindex_command(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "g.db"
    with small_ann(path) as g:
        fill(g)
    env = {**os.environ, "FACEPIPE_ANN_MIN": "50"}
    out = subprocess.run([sys.executable, "-m", "facepipe.cli", "gallery", "reindex", "--gallery", str(path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "index rebuilt" in out.stdout and "300 faces" in out.stdout
    with small_ann(path) as g:
        assert g.index_state() == "fresh" and g.index_tag().count == 300
