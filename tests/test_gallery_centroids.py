"""The index of persons (per-person embedding sums and counts kept with the faces): right after enroll, remove,
import, re-embedding and reopening, and a large gallery's ranking from it equals the exact centroid ranking."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from facepipe.gallery.centroids import centroids
from facepipe.gallery.npz import GalleryRecords
from facepipe.gallery.sqlite import SqliteGallery
from facepipe.openset.matching import person_centroids, person_scores

DIM = 32


def _faces(n_persons: int, per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_persons, DIM))
    labels = np.repeat(np.arange(n_persons), per)
    vectors = centers[labels] + 0.6 * rng.standard_normal((len(labels), DIM))
    return vectors.astype(np.float32), labels


def _fill(g: SqliteGallery, vectors: np.ndarray, labels: np.ndarray) -> None:
    for i, (v, p) in enumerate(zip(vectors, labels)):
        assert g.add_face(f"p{p:03d}", f"/x/{i}.jpg", f"{i:064x}", [0, 0, 9, 9], 1.0, v) == "added"


def _stored(g: SqliteGallery) -> dict[str, np.ndarray]:
    rows = g.db.execute("SELECT name, face_count, embedding_sum FROM persons ORDER BY name").fetchall()
    return dict(zip([r[0] for r in rows], centroids([r[2] for r in rows], [r[1] for r in rows])))


def _expected(g: SqliteGallery) -> dict[str, np.ndarray]:
    matrix, labels, names = g.embeddings()
    return dict(zip(names, person_centroids(matrix, labels, len(names), g.metric)))


def _assert_index_right(g: SqliteGallery) -> None:
    stored, expected = _stored(g), _expected(g)
    assert stored.keys() == expected.keys()
    for name in expected:
        assert np.allclose(stored[name], expected[name], atol=1e-5), name


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_index_of_persons_follows_enroll_remove_import_and_reopen(tmp_path, metric):
    path = tmp_path / "g.db"
    vectors, labels = _faces(12, 6)
    with SqliteGallery(path) as g:
        g.check_model("synthetic", DIM, metric)
        _fill(g, vectors, labels)
        assert g.add_face("p000", "/x/again.jpg", f"{0:064x}", [0, 0, 9, 9], 1.0, vectors[5]) == "duplicate"
        _assert_index_right(g)
        assert g.remove_person("p003") == 6
        _assert_index_right(g)
        more, more_labels = _faces(3, 4, seed=1)
        records = GalleryRecords("synthetic", DIM, np.array(["p000", "p100", "p101"]), more_labels.astype(np.int32),
                                 more, np.array([f"/y/{i}" for i in range(len(more))]),
                                 np.array([f"{i + 5000:064x}" for i in range(len(more))]),
                                 np.zeros((len(more), 4)), np.ones(len(more)))
        assert g.import_records(records) == (len(more), 0)
        _assert_index_right(g)
    with SqliteGallery(path) as g:  # reopened: the sums are in the file
        _assert_index_right(g)
        g.replace_embeddings("other", {fid: v[::-1].copy() for (fid, *_), v in zip(g.faces(), g.embeddings()[0])},
                             metric)
        _assert_index_right(g)


def test_a_format_1_gallery_is_upgraded_on_open(tmp_path):
    path = tmp_path / "old.db"
    vectors, labels = _faces(5, 4)
    with SqliteGallery(path) as g:
        g.check_model("synthetic", DIM)
        _fill(g, vectors, labels)
    db = sqlite3.connect(path)  # what facepipe 0.1 wrote: no sums, format 1
    db.execute("ALTER TABLE persons DROP COLUMN face_count")
    db.execute("ALTER TABLE persons DROP COLUMN embedding_sum")
    db.execute("UPDATE meta SET value = '1' WHERE key = 'format'")
    db.commit()
    db.close()
    with SqliteGallery(path) as g:
        assert g._meta("format") == "2"
        _assert_index_right(g)


def test_a_large_gallery_ranks_from_the_index_of_persons_like_the_exact_centroids(tmp_path):
    vectors, labels = _faces(40, 8)
    with SqliteGallery(tmp_path / "big.db", ann_min_faces=50) as g:  # the persisted-index path from 50 faces
        g.check_model("synthetic", DIM)
        _fill(g, vectors, labels)
        g.remove_person("p007")
        assert g.search_kind.startswith("faiss")
        matrix, face_labels, names = g.embeddings()
        queries, truth = _faces(40, 1, seed=2)
        exact = person_scores(queries, matrix, face_labels, len(names))
        matches = g.match(queries, threshold=-1.0, top_k=3)
        for row, match in zip(exact, matches):
            best = np.argsort(-row)[:3]
            assert [c.identity for c in match.candidates] == [names[i] for i in best]
            assert np.allclose([c.similarity for c in match.candidates], row[best], atol=1e-4)


# -- the persisted index of persons (person_index.py): a faiss IVF over the centroids, shortlisting large galleries --
def _ranks_like_the_exact_centroids(g: SqliteGallery, queries: np.ndarray) -> None:
    matrix, face_labels, names = g.embeddings()
    exact = person_scores(queries, matrix, face_labels, len(names), g.metric)
    for row, match in zip(exact, g.match(queries, threshold=-1.0, top_k=3)):
        best = np.argsort(-row, kind="stable")[:3]
        assert [c.identity for c in match.candidates] == [names[i] for i in best]
        assert np.allclose([c.similarity for c in match.candidates], row[best], atol=1e-4)


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_the_index_of_persons_stays_right_across_enroll_remove_reopen_fold_and_rebuild(tmp_path, monkeypatch, metric):
    from facepipe.gallery import index as ann
    from facepipe.gallery import person_index

    path = tmp_path / "g.db"
    rng = np.random.default_rng(5)
    vectors, labels = _faces(200, 2)  # 200 persons: far more than the 32 a query shortlists
    v, w = _unit(rng.standard_normal(DIM)), _unit(rng.standard_normal(DIM))
    with SqliteGallery(path, ann_min_faces=50) as g:
        g.nprobe = 10_000  # every list probed: the IVF is exact, so only bookkeeping can go wrong
        g.check_model("synthetic", DIM, metric)
        _fill(g, vectors, labels)
        # p-trim: one face at v, nine at -v (centroid -0.8 v); p-grow: two faces at -w
        for i in range(10):
            g.add_face("p-trim", f"/t/{i}", f"{i + 9000:064x}", [0, 0, 9, 9], 1.0, v if i == 0 else -v)
        for i in range(2):
            g.add_face("p-grow", f"/g/{i}", f"{i + 9100:064x}", [0, 0, 9, 9], 1.0, -w)
        queries = vectors[::7] + 0.3 * rng.standard_normal((len(vectors[::7]), DIM)).astype(np.float32)
        _ranks_like_the_exact_centroids(g, queries)
        tag = g.person_index_tag()
        assert g.person_index_builds == 1 and tag.count == 202
        assert oct((g.index_folder / tag.file).stat().st_mode & 0o777) == "0o600"
        assert g.match(v[None], -1.0, 1)[0].identity != "p-trim"

        # Changes after the file was written: searched beside it from the current sums, no rewrite.
        g._write(lambda: g._delete_faces_of("p-trim", [f"{i + 9000:064x}" for i in range(1, 10)]))  # -> v
        for i in range(10):  # -> centroid along w
            g.add_face("p-grow", f"/g/{i + 2}", f"{i + 9200:064x}", [0, 0, 9, 9], 1.0, w)
        g.add_face("p-new", "/n/0", f"{9300:064x}", [0, 0, 9, 9], 1.0, -v)
        g.remove_person("p000")
        assert g.match(v[None], -1.0, 1)[0].identity == "p-trim"
        assert g.match(w[None], -1.0, 1)[0].identity == "p-grow"
        assert g.match(-v[None], -1.0, 1)[0].identity == "p-new"
        _ranks_like_the_exact_centroids(g, queries)
        assert g.person_index_builds == 1 and g.person_index_folds == 0 and g.person_index_tag() == tag

    def no_rebuild(*a, **k):
        raise AssertionError("the index of persons was rewritten")
    with monkeypatch.context() as m:  # reopened: the same file, the changes still searched beside it
        m.setattr(SqliteGallery, "_build_person_index", no_rebuild)
        m.setattr(SqliteGallery, "_fold_person_index", no_rebuild)
        with SqliteGallery(path, ann_min_faces=50) as g:
            g.nprobe = 10_000
            assert g.match(v[None], -1.0, 1)[0].identity == "p-trim"
            _ranks_like_the_exact_centroids(g, queries)

    with SqliteGallery(path, ann_min_faces=50) as g:  # past the fold limit: remove_ids + add, no retraining
        g.nprobe, g.fold_limit_min, g.fold_limit_share = 10_000, 0, 0.0
        assert g.person_index_state() == "fold"
        _ranks_like_the_exact_centroids(g, queries)
        assert g.person_index_folds == 1 and g.person_index_builds == 0
        folded = g.person_index_tag()
        assert folded.count == 202 and g.person_index_state() == "fresh" and g._meta(person_index.TRIMMED) == "{}"
        assert [p.name for p in (g.index_folder).glob("persons-*")] == [folded.file]  # the old file swept
        assert g.match(v[None], -1.0, 1)[0].identity == "p-trim"

        g.retrain_drift = 0.0  # stale: any change since training means a full rebuild
        g.add_face("p-new", "/n/1", f"{9301:064x}", [0, 0, 9, 9], 1.0, -v)
        assert g.person_index_state() == "stale"
        _ranks_like_the_exact_centroids(g, queries)
        assert g.person_index_builds == 1

        # A file that cannot be written: one warning, the index kept in memory, the answers unchanged.
        def full_disk(*a, **k):
            raise OSError("No space left on device")
        monkeypatch.setattr(ann, "write_index", full_disk)
        g.add_face("p-new", "/n/2", f"{9302:064x}", [0, 0, 9, 9], 1.0, -v)
        _ranks_like_the_exact_centroids(g, queries)
        assert g.person_index_builds == 2 and "person_index" in g._warned
        assert g.match(-v[None], -1.0, 1)[0].identity == "p-new"
