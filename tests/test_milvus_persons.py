"""The Milvus gallery's index of persons (milvus_persons.py): the persons' sums kept per writer, so a query is
scored from their centroids without reading faces, and the ranking equals the exact centroid ranking over every
stored face, across two writers, enroll, import, remove, reindex and a gallery made before the index existed."""
from __future__ import annotations

import numpy as np
import pytest

from facepipe.gallery.npz import GalleryRecords
from facepipe.openset.matching import person_centroids, person_scores

pytest.importorskip("milvus_lite")
from facepipe.gallery.milvus import MilvusGallery  # noqa: E402

DIM = 16


def _faces(n_persons: int, per: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_persons, DIM))
    labels = np.repeat(np.arange(n_persons), per)
    return (centers[labels] + 0.6 * rng.standard_normal((len(labels), DIM))).astype(np.float32), labels


def _filled(spec: str, vectors: np.ndarray, labels: np.ndarray) -> MilvusGallery:
    """A Milvus gallery holding these faces, person p as "pNN", through one writer."""
    g = MilvusGallery(spec)
    g.check_model("synthetic", DIM)
    for i, (v, p) in enumerate(zip(vectors, labels)):
        assert g.add_face(f"p{p:02d}", f"/x/{i}", f"{i:064x}", [0, 0, 9, 9], 1.0, v) == "added"
    return g


def _rows_per_person(g: MilvusGallery) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in g.client.query(g.persons_index.collection, filter="count >= 0", output_fields=["person"]):
        out[r["person"]] = out.get(r["person"], 0) + 1
    return out


def _assert_exact(g: MilvusGallery, queries: np.ndarray) -> None:
    """Stored centroids = the centroids of every stored face; ranking and scores = the exact centroid ranking."""
    matrix, labels, names = g.embeddings()
    expected = person_centroids(matrix, labels, len(names), g.metric)
    stored, positions = g.centroids_of(names)
    assert sorted(positions.tolist()) == list(range(len(names)))
    assert np.allclose(stored[np.argsort(positions)], expected, atol=1e-5)
    exact = person_scores(queries, matrix, labels, len(names), g.metric)
    for query, row in zip(queries, exact):
        got = g.match(query[None], threshold=-1e9, top_k=3)[0]
        assert [c.identity for c in got.candidates] == [names[i] for i in np.argsort(-row, kind="stable")[:3]]
        if g.metric == "cosine":
            assert [c.similarity for c in got.candidates] == pytest.approx(np.sort(row)[::-1][:3], abs=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_two_writers_enroll_import_remove_and_reindex_keep_the_exact_centroids(tmp_path, metric):
    spec = f"milvus-lite://{tmp_path}/m.db"
    vectors, labels = _faces(40, 4)
    queries = _faces(40, 1, seed=7)[0][:12]
    with MilvusGallery(spec) as one, MilvusGallery(spec) as two:
        one.check_model("synthetic", DIM, metric)
        for i, (v, p) in enumerate(zip(vectors, labels)):  # every person's faces come through both writers
            assert (one if i % 2 else two).add_face(f"p{p:02d}", f"/x/{i}", f"{i:064x}", [0, 0, 9, 9], 1.0,
                                                   v) == "added"
        assert one.add_face("p00", "/x/again", f"{0:064x}", [0, 0, 9, 9], 1.0, vectors[3]) == "duplicate"
        assert set(_rows_per_person(one).values()) == {2}  # one row per person and writer
        _assert_exact(two, queries)
        assert two.remove_person("p01") == 4
        assert "p01" not in _rows_per_person(one)
        more, more_labels = _faces(3, 3, seed=1)
        records = GalleryRecords("synthetic", DIM, np.array(["p00", "new-a", "new-b"]), more_labels.astype(np.int32),
                                 more, np.array([f"/y/{i}" for i in range(len(more))]),
                                 np.array([f"{i + 5000:064x}" for i in range(len(more))]),
                                 np.zeros((len(more), 4)), np.ones(len(more)))
        assert one.import_records(records) == (len(more), 0)
        assert _rows_per_person(one)["p00"] == 2 and _rows_per_person(one)["new-a"] == 1
        _assert_exact(one, np.concatenate([queries, more[:2]]))
        tag = one.reindex()
        assert tag.count == one.face_count() and set(_rows_per_person(one).values()) == {1}
        _assert_exact(two, np.concatenate([queries, more[:2]]))
    with MilvusGallery(spec) as later:  # the next run on this machine takes the first free slot, `one`'s
        assert later.add_face("p00", "/z/1", f"{9999:064x}", [0, 0, 9, 9], 1.0, vectors[1]) == "added"
        assert _rows_per_person(later)["p00"] == 1  # its row, not a new one per run
        _assert_exact(later, queries[:4])


def test_a_gallery_made_before_the_index_of_persons_gets_it_from_its_faces(tmp_path):
    spec = f"milvus-lite://{tmp_path}/m.db"
    vectors, labels = _faces(10, 3)
    with _filled(spec, vectors, labels) as g:
        g.persons_index.drop()  # as a gallery written by an older facepipe
    with MilvusGallery(spec, create=False) as g:
        assert not g.persons_index.exists()
        _assert_exact(g, vectors[::7])
        assert g.persons_index.exists() and len(_rows_per_person(g)) == 10


def test_a_failed_import_puts_the_persons_back(tmp_path):
    spec = f"milvus-lite://{tmp_path}/m.db"
    vectors, labels = _faces(4, 3)
    with _filled(spec, vectors, labels) as g:
        before = g.centroids_of([f"p{p:02d}" for p in range(4)])[0]
        more, more_labels = _faces(2, 2, seed=3)
        records = GalleryRecords("synthetic", DIM, np.array(["p00", "brand-new"]), more_labels.astype(np.int32),
                                 more, np.array([f"/y/{i}" for i in range(4)]),
                                 np.array([f"{i + 900:064x}" for i in range(4)]), np.zeros((4, 4)), np.ones(4))

        def fail_at_the_end(done):
            if done == len(records):
                raise OSError("disk gone")
        with pytest.raises(OSError, match="disk gone"):
            g.import_records(records, on_progress=fail_at_the_end)
        assert g.face_count() == 12
        assert np.allclose(g.centroids_of([f"p{p:02d}" for p in range(4)])[0], before)
        assert "brand-new" not in _rows_per_person(g)
