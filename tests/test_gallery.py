import hashlib
import multiprocessing as mp
import stat
import time

import numpy as np
import pytest

from facepipe.errors import GalleryError
from facepipe.gallery import SqliteGallery, best_per_person, open_gallery
from facepipe.gallery.search import EmbeddingIndex, exact_search
from facepipe.openset.calibration import open_set_threshold
from facepipe.openset.matching import person_scores


def unit(rng, n, d=16):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# The gallery contract: every test taking `spec` runs on the SQLite gallery and on Milvus (Milvus Lite, through
# the same pymilvus client code that talks to a cluster).
@pytest.fixture(params=["sqlite", "milvus-lite"])
def spec(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "sub" / "g.db")
    pytest.importorskip("milvus_lite")
    return f"milvus-lite://{tmp_path}/sub/milvus.db"


def test_duplicates_are_no_ops(spec):
    rng = np.random.default_rng(0)
    with open_gallery(spec) as g:
        g.check_model("m1", 16)
        emb = unit(rng, 2)
        assert g.add_face("ann", "/a.jpg", "h1", [0, 0, 10, 10], 1.0, emb[0]) == "added"
        assert g.add_face("ann", "/a.jpg", "h1", [0, 0, 10, 10], 1.0, emb[0]) == "duplicate"
        assert g.add_face("bob", "/b.jpg", "h1", [0, 0, 10, 10], 1.0, emb[1]) == "duplicate"
        assert [(p.name, p.faces) for p in g.persons()] == [("ann", 1)]  # no empty "bob" left behind
        assert g.person_of_hash("h1") == "ann" and g.person_of_hash("h2") is None
        assert g.face_count() == 1


def test_gallery_file_is_private(tmp_path):
    with SqliteGallery(tmp_path / "sub" / "g.db") as g:
        g.check_model("m1", 16)
    assert stat.S_IMODE((tmp_path / "sub" / "g.db").stat().st_mode) == 0o600


def test_other_model_is_refused(spec):
    with open_gallery(spec) as g:
        g.check_model("m1", 16)
        g.add_face("ann", "/a.jpg", "h1", [0, 0, 1, 1], 1.0, unit(np.random.default_rng(0), 1)[0])
        with pytest.raises(GalleryError, match="model 'm1', not 'm2'"):
            g.check_model("m2", 16)
        with pytest.raises(GalleryError, match="embedding size 8"):
            g.add_face("ann", "/b.jpg", "h2", [0, 0, 1, 1], 1.0, np.ones(8, np.float32))
    with open_gallery(spec, create=False) as g:  # the fingerprint is stored with the gallery
        assert g.model == "m1"
        with pytest.raises(GalleryError, match="model 'm1', not 'm2'"):
            g.check_model("m2", 16)


def test_missing_gallery(spec):
    with pytest.raises(GalleryError, match="no gallery here"):
        open_gallery(spec, create=False)


def test_invalid_sqlite_file(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(GalleryError, match="junk.db: not a facepipe gallery"):
        SqliteGallery(junk)
    assert junk.read_bytes() == b"not a database at all" * 100  # left as it was


def test_match_ranks_persons_and_says_unknown(spec):
    rng = np.random.default_rng(1)
    centres = unit(rng, 3)
    with open_gallery(spec) as g:
        g.check_model("m", 16)
        for i, name in enumerate(["ann", "bob", "cy"]):
            for j in range(3):
                noisy = centres[i] + 0.1 * rng.normal(size=16)
                g.add_face(name, f"/{name}{j}", f"{name}{j}", [0, 0, 1, 1], 1.0, noisy / np.linalg.norm(noisy))
        known, stranger = g.match(np.stack([centres[1], unit(rng, 1)[0]]), threshold=0.8, top_k=3)
        assert g.match(centres[:1], threshold=0.8, top_k=5)[0].candidates.__len__() == 3  # only 3 persons
    assert known.identity == "bob" and known.similarity > 0.8
    assert [c.identity for c in known.candidates][0] == "bob" and len(known.candidates) == 3
    assert stranger.identity is None and len(stranger.candidates) == 3  # candidates even when unknown
    sims = [c.similarity for c in stranger.candidates]
    assert sims == sorted(sims, reverse=True)


def test_remove_person(spec):
    rng = np.random.default_rng(5)
    with open_gallery(spec) as g:
        g.check_model("m", 16)
        faces = unit(rng, 5)
        for i, f in enumerate(faces):
            g.add_face("ann" if i < 3 else "bob", f"/{i}", f"h{i}", [0, 0, 1, 1], 1.0, f)
        assert g.remove_person("ann") == 3
        with pytest.raises(GalleryError, match="no person named 'ann'"):
            g.remove_person("ann")
        assert [(p.name, p.faces) for p in g.persons()] == [("bob", 2)]
        m = g.match(faces[:1], threshold=0.0, top_k=3)[0]
        assert [c.identity for c in m.candidates] == ["bob"]
        assert g.add_face("ann", "/0", "h0", [0, 0, 1, 1], 1.0, faces[0]) == "added"  # its photo can come back


def test_open_set_calibration_is_the_same_on_every_backend(spec):
    rng = np.random.default_rng(4)
    centres = unit(rng, 30, 16)
    matrix = np.repeat(centres, 3, axis=0) + 0.15 * rng.normal(size=(90, 16)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    labels = np.repeat(np.arange(30), 3)
    with open_gallery(spec) as g:
        g.check_model("m", 16)
        for i, (e, p) in enumerate(zip(matrix, labels)):
            g.add_face(f"p{p:02d}", f"/{i}", f"h{i}", [0, 0, 1, 1], 1.0, e)
        got = g.open_set_threshold(0.01)
    expected = open_set_threshold(matrix, labels, lambda q: person_scores(q, matrix, labels, 30), 0.01)
    assert got == pytest.approx(expected, abs=1e-5)
    with open_gallery(spec) as g:
        assert g.open_set_threshold(0.01) == got  # cached with the gallery


def test_export_import_across_backends_is_bit_exact(spec, tmp_path):
    rng = np.random.default_rng(6)
    with SqliteGallery(tmp_path / "a.db") as a:
        a.check_model("m", 16)
        for i, e in enumerate(unit(rng, 12)):
            a.add_face(f"p{i % 4}", f"/photos/{i}.jpg", hashlib.sha256(bytes([i])).hexdigest(), [i, 1.5, 9.25, 30],
                       0.97, e)
        records = a.export_records()
    with open_gallery(spec) as g:
        assert g.import_records(records) == (12, 0)
        assert g.import_records(records) == (0, 12)
        back = g.export_records()
    order, back_order = np.argsort(records.sha256), np.argsort(back.sha256)
    assert (records.sha256[order] == back.sha256[back_order]).all()
    assert (records.names[records.person[order]] == back.names[back.person[back_order]]).all()
    assert records.embeddings[order].tobytes() == back.embeddings[back_order].tobytes()
    assert (records.source[order] == back.source[back_order]).all()
    assert (records.box[order] == back.box[back_order]).all()
    assert (records.score[order] == back.score[back_order]).all() and back.model == "m"


def test_best_per_person_is_exact_when_one_person_fills_the_top():
    rng = np.random.default_rng(2)
    crowd = unit(rng, 200)
    query = crowd[0]
    # 100 near-copies of the query belong to person 0: the other persons appear only deep in the ranking.
    near = query + 0.01 * rng.normal(size=(100, 16)).astype(np.float32)
    matrix = np.vstack([near / np.linalg.norm(near, axis=1, keepdims=True), crowd[1:]])
    labels = np.array([0] * 100 + list(range(1, 200)))
    ranked = best_per_person(EmbeddingIndex(matrix), labels, query, top_k=3)
    sims = matrix @ query
    expected = sorted(((p, sims[labels == p].max()) for p in range(200)), key=lambda t: -t[1])[:3]
    assert [p for p, _ in ranked] == [p for p, _ in expected]


def test_ivf_index_finds_the_exact_neighbour_on_clustered_data():
    rng = np.random.default_rng(3)
    centres = unit(rng, 12_000, 64)
    faces = np.repeat(centres, 5, axis=0) + 0.08 * rng.normal(size=(60_000, 64)).astype(np.float32)
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    index = EmbeddingIndex(faces)
    assert index.kind == "faiss-ivf"
    _, truth = exact_search(faces, centres[:50], 1)
    assert (index.search(centres[:50], 1)[1][:, 0] == truth[:, 0]).mean() >= 0.9  # the default setting
    index.nprobe = index.nlist // 8  # probing more lists is the exactness knob
    queries = centres[:200] + 0.08 * rng.normal(size=(200, 64)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    _, got = index.search(queries, 1)
    _, truth = exact_search(faces, queries, 1)
    assert (got[:, 0] == truth[:, 0]).mean() >= 0.99


def test_open_set_threshold_tracks_the_impostor_tail():
    rng = np.random.default_rng(4)
    centres = unit(rng, 60, 32)
    matrix = np.repeat(centres, 3, axis=0) + 0.15 * rng.normal(size=(180, 32)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    labels = np.repeat(np.arange(60), 3)
    def scorer(q, m=matrix, lab=labels):
        return person_scores(q, m, lab, int(lab.max()) + 1)
    t = open_set_threshold(matrix, labels, scorer, target_fpir=0.01)
    strangers = unit(rng, 2000, 32) + 0.0
    best = scorer(strangers).max(1)
    assert 0.0 < (best >= t).mean() < 0.05  # about 1% of fresh strangers clear it
    assert open_set_threshold(matrix[:9], labels[:9], lambda q: scorer(q, matrix[:9], labels[:9])) is None  # 3 persons


def _writer(path, start, count, queue):
    rng = np.random.default_rng(start)
    with SqliteGallery(path) as g:
        g.check_model("m", 16)
        for i in range(start, start + count):
            g.add_face(f"p{i % 7}", f"/{i}", f"h{i}", [0, 0, 1, 1], 1.0, unit(rng, 1)[0])
    queue.put(count)


def _open_at(path, start_at):
    while time.time() < start_at:  # every process opens at the same instant
        pass
    with SqliteGallery(path) as g:
        g.check_model("m", 16)


def test_processes_creating_one_gallery_at_the_same_instant_all_open_it(tmp_path):
    """SQLite refuses a concurrent switch to WAL at once ("database is locked") instead of waiting: the losers of
    that race must try again, not fail. Six processes, 15 new galleries (the old code lost about 1 opener in 60)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["facepipe.gallery.sqlite"])
    failed = 0
    for k in range(15):
        start_at = time.time() + 0.3
        procs = [ctx.Process(target=_open_at, args=(tmp_path / f"g{k}.db", start_at)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        failed += sum(p.exitcode != 0 for p in procs)
    assert failed == 0, f"{failed} of {15 * 6} openers failed"


def test_two_writers_at_once_keep_the_gallery_consistent(tmp_path):
    path = tmp_path / "g.db"
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(path, s, 60, queue)) for s in (0, 1000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with SqliteGallery(path) as g:
        assert g.face_count() == 120
        assert g.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert g.embeddings()[0].shape == (120, 16)


def test_gallery_specs():
    from facepipe.gallery.milvus import parse_spec

    assert parse_spec("milvus://10.0.0.5:19530/faces") == ("http://10.0.0.5:19530", "faces",
                                                           "milvus://10.0.0.5:19530/faces")
    assert parse_spec("milvus-lite:///srv/g.db")[:2] == ("/srv/g.db", "facepipe")
    assert parse_spec("milvus-lite:///srv/g.db#event")[:2] == ("/srv/g.db", "event")
    for bad in ("milvus://host:19530", "milvus:///faces", "milvus-lite://"):
        with pytest.raises(GalleryError, match="expected milvus"):
            parse_spec(bad)
