"""The Milvus gallery: the same contract as the SQLite gallery, in a Milvus collection.

    milvus://HOST:PORT/COLLECTION        a Milvus server or cluster (token: env MILVUS_TOKEN, "user:password")
    milvus-lite:///path/to/file.db       Milvus Lite, the Milvus engine in-process, one local file
                                         (collection "facepipe"; add #NAME for another)

Both go through pymilvus' MilvusClient, so the tests on Milvus Lite exercise the code a cluster runs.
Three collections per gallery: COLLECTION (one entity per face: person, source, sha256, box, score, created,
embedding; AUTOINDEX on the embedding, inner product), COLLECTION_meta (key -> value: the model fingerprint,
embedding size, change counter, cached calibration), so the fingerprint lives with the collection and is checked
on every enroll and identify, and COLLECTION_persons, the index of persons (milvus_persons.py): each person's
embedding sum and count, so a query is scored from the persons' centroids without reading their faces.

Milvus has no transactions and no unique constraints. Enroll is idempotent by checking the content hash
before inserting, and after: two enrolls of the same new photo racing each other keep the copy with the smallest
id and delete the other (`_first_with_hash`), so the photo is stored once; import is
all-or-nothing by compensation (the faces it inserted are deleted again when it fails).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from facepipe.errors import GalleryError
from facepipe.gallery.base import GalleryBase, log
from facepipe.gallery.index import IndexTag
from facepipe.gallery.milvus_persons import BATCH, MAX_TOPK, MilvusPersons
from facepipe.gallery.npz import GalleryRecords
from facepipe.gallery.ranking import SHORTLIST_PERSONS, Match, PersonInfo, match_shortlist, shortlist_impostor_scores
from facepipe.openset.calibration import MAX_PROBES, threshold_from_impostors

FACE_FIELDS = ["id", "person", "source", "sha256", "box", "score", "created"]


def parse_spec(spec: str) -> tuple[str, str, str]:
    """(uri for MilvusClient, collection name, what to call it in messages)."""
    if spec.startswith("milvus-lite://"):
        rest = spec[len("milvus-lite://"):]
        path, _, name = rest.partition("#")
        if not path:
            raise GalleryError(f"{spec}: expected milvus-lite:///path/to/file.db")
        return str(Path(path).expanduser()), name or "facepipe", spec
    rest = spec[len("milvus://"):]
    host, _, name = rest.partition("/")
    if not host or not name or "/" in name:
        raise GalleryError(f"{spec}: expected milvus://HOST:PORT/COLLECTION")
    return f"http://{host}", name, spec


def _quote(text: str) -> str:
    """`text` as a Milvus filter string literal. Only backslash and double quote are escaped: json.dumps'
    \\uXXXX escapes (surrogate pairs for a name like "𝔄lice") are refused by Milvus' filter parser, and names
    hold no control characters (facepipe.names). Filter templating (filter_params) would be the cleaner
    road, but Milvus Lite's parser does not take it, and one quoting rule serves both."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class MilvusGallery(GalleryBase):
    def __init__(self, spec: str, create: bool = True):
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self._error = MilvusException
        uri, self.collection, self.path = parse_spec(spec)
        self.meta_collection = f"{self.collection}_meta"
        if uri.endswith(".db"):
            if not create and not Path(uri).exists():
                raise GalleryError(f"{self.path}: no gallery here (run `facepipe enroll` first)")
            Path(uri).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            self.client = MilvusClient(uri=uri, token=os.environ.get("MILVUS_TOKEN", ""))
            if not self.client.has_collection(self.meta_collection):
                if not create:
                    raise GalleryError(f"{self.path}: no gallery here (run `facepipe enroll` first)")
                self._create_meta()
            self.client.load_collection(self.meta_collection)
            if self.client.has_collection(self.collection):
                self.client.load_collection(self.collection)
            where = Path(uri).resolve() if uri.endswith(".db") else uri
            self.persons_index = MilvusPersons(self.client, f"{self.collection}_persons", f"{where}#{self.collection}")
            if self.persons_index.exists():
                self.client.load_collection(self.persons_index.collection)
        except MilvusException as exc:
            raise GalleryError(f"{self.path}: cannot open the Milvus gallery ({exc.message})") from None
        self._face_count: tuple[int, int] | None = None

    # -- collections -------------------------------------------------------------------------------
    def _create_meta(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=256)
        schema.add_field("value", DataType.VARCHAR, max_length=65535)
        schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
        index = self.client.prepare_index_params()
        index.add_index("unused", index_type="FLAT", metric_type="L2")
        self.client.create_collection(self.meta_collection, schema=schema, index_params=index,
                                      consistency_level="Strong")

    def _create_faces(self, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=True)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("person", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=4096)
        schema.add_field("sha256", DataType.VARCHAR, max_length=64)
        schema.add_field("box", DataType.VARCHAR, max_length=256)
        schema.add_field("score", DataType.DOUBLE)
        schema.add_field("created", DataType.DOUBLE)
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("embedding", index_type="AUTOINDEX", metric_type="IP")
        index.add_index("sha256", index_type="INVERTED")
        index.add_index("person", index_type="INVERTED")
        # Strong: an enroll is seen by the next query (the idempotency check, then identify), as in SQLite.
        self.client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")
        self.client.load_collection(self.collection)
        self.persons_index.drop()
        self.persons_index.create(dim, self.metric)

    def _has_faces(self) -> bool:
        return self.client.has_collection(self.collection)

    def _meta(self, key: str) -> str | None:
        rows = self.client.get(self.meta_collection, ids=[key], output_fields=["value"])
        return rows[0]["value"] if rows else None

    def _set_meta(self, key: str, value: str) -> None:
        self.client.upsert(self.meta_collection, [{"key": key, "value": value, "unused": [0.0, 0.0]}])

    def _bump(self, faces_changed: int) -> None:
        self._set_meta("changes", str(self.changes + faces_changed))
        self._set_meta("revision", str(self.revision + 1))

    def close(self) -> None:
        self.persons_index.close()
        self.client.close()

    # -- model binding -----------------------------------------------------------------------------
    def check_model(self, fingerprint: str, embedding_size: int, metric: str = "cosine") -> None:
        current = self.model
        if current is None or self.face_count() == 0:
            if self._has_faces() and self.embedding_size != embedding_size:
                self.client.drop_collection(self.collection)  # empty, and the vector field has another size
            self._set_meta("metric", metric)
            if not self._has_faces():
                self._create_faces(embedding_size)
            self._set_meta("model", fingerprint)
            self._set_meta("embedding_size", str(embedding_size))
        else:
            self.refuse_other_model(fingerprint, embedding_size)

    # -- writes ------------------------------------------------------------------------------------
    def person_of_hash(self, sha256: str) -> str | None:
        if not self._has_faces():
            return None
        rows = self.client.query(self.collection, filter=f"sha256 == {_quote(sha256)}", output_fields=["person"],
                                 limit=1)
        return rows[0]["person"] if rows else None

    def add_face(self, name: str, source: str, sha256: str, box, score: float, embedding: np.ndarray) -> str:
        emb = np.asarray(embedding, dtype=np.float32)
        size = self.embedding_size
        if size is None or not self._has_faces():
            raise GalleryError(f"{self.path}: no model bound yet (check_model first)")
        if size != emb.shape[0]:
            raise GalleryError(f"{self.path}: embedding size {emb.shape[0]} does not match the gallery's {size}")
        if self.person_of_hash(sha256) is not None:
            return "duplicate"
        mine = self.client.insert(self.collection, [{
            "person": name, "source": source, "sha256": sha256, "box": json.dumps([round(float(v), 2) for v in box]),
            "score": float(score), "created": time.time(), "embedding": emb.tolist()}])["ids"][0]
        if not self._first_with_hash(sha256, mine):
            return "duplicate"  # another writer stored this photo at the same instant; its copy stays
        self._persons().add({name: emb[None]}, self.metric)
        self._bump(1)
        return "added"

    def _first_with_hash(self, sha256: str, mine: int) -> bool:
        """After inserting: keep only the copy with the smallest id of this content hash, delete the others.
        Every writer checks after its own insert (Strong consistency: it sees every insert before its query),
        so the last check sees all copies and the smallest id, never deleted by anyone, is the one left.

        What this cannot promise is that only one writer *says* "added": Milvus hands out ids before the
        inserts become visible, so a writer can see its copy alone, answer "added", and have it deleted a
        moment later for a smaller id committed after its check. The photo is still stored once; both
        reports then say "added". Exactly-once answers would need a conditional write, which Milvus lacks."""
        ids = sorted(int(r["id"]) for r in self.client.query(
            self.collection, filter=f"sha256 == {_quote(sha256)}", output_fields=["id"], limit=MAX_TOPK))
        if len(ids) > 1:
            self.client.delete(self.collection, ids=ids[1:])
        return ids[0] == mine

    def remove_person(self, name: str) -> int:
        n = self._count(f"person == {_quote(name)}") if self._has_faces() else 0
        if n == 0:
            raise GalleryError(f"{self.path}: no person named {name!r} in the gallery")
        self.client.delete(self.collection, filter=f"person == {_quote(name)}")
        self._persons().remove(name, _quote)
        self._bump(n)
        return n

    def replace_embeddings(self, model: str, embeddings: dict[int, np.ndarray], metric: str = "cosine") -> None:
        """Swap every face's embedding for another model's (re-creates the collection: the size may change)."""
        rows = list(self._iterate(FACE_FIELDS))
        size = len(next(iter(embeddings.values()))) if embeddings else 0
        self.client.drop_collection(self.collection)
        self._create_faces(size)
        for lo in range(0, len(rows), BATCH):
            self.client.insert(self.collection, [{**{k: r[k] for k in FACE_FIELDS if k != "id"},
                                                  "embedding": np.asarray(embeddings[r["id"]], np.float32).tolist()}
                                                 for r in rows[lo:lo + BATCH]])
        self._set_meta("model", model)
        self._set_meta("metric", metric)
        self._set_meta("embedding_size", str(size))
        self.persons_index.rebuild(self._iterate(["person", "embedding"]), size, metric)
        self._bump(len(rows))

    # -- reads -------------------------------------------------------------------------------------
    def _count(self, filter: str = "") -> int:
        rows = self.client.query(self.collection, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def _iterate(self, fields: list[str], filter: str = "id >= 0"):
        if not self._has_faces():
            return
        it = self.client.query_iterator(self.collection, batch_size=BATCH, filter=filter, output_fields=fields)
        try:
            while batch := it.next():
                yield from batch
        finally:
            it.close()

    def face_count(self) -> int:
        return self._count() if self._has_faces() else 0

    def persons(self) -> list[PersonInfo]:
        out: dict[str, list] = {}
        for r in self._iterate(["person", "created"]):
            p = out.setdefault(r["person"], [0, r["created"]])
            p[0] += 1
            p[1] = min(p[1], r["created"])
        return [PersonInfo(name, n, created) for name, (n, created) in sorted(out.items())]

    def faces(self) -> list[tuple[int, str, str, str]]:
        return sorted((r["id"], r["person"], r["source"], r["sha256"]) for r in self._iterate(["person", "source",
                                                                                               "sha256"]))

    def _all(self, fields: list[str]) -> list[dict]:
        return sorted(self._iterate(fields), key=lambda r: r["id"])

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        rows = self._all(["person", "embedding"])
        names = sorted({r["person"] for r in rows})
        position = {n: i for i, n in enumerate(names)}
        matrix = np.array([r["embedding"] for r in rows], np.float32).reshape(len(rows), self.embedding_size or 0)
        return matrix, np.array([position[r["person"]] for r in rows], np.int64), names

    @property
    def search_kind(self) -> str:
        return "milvus (AUTOINDEX, inner product; persons by their stored centroids)"

    def reindex(self, full: bool = True) -> IndexTag | None:
        """Milvus builds and maintains its own vector indexes; this recomputes the index of persons from the
        faces, one row per person (milvus_persons.py). Run it while nobody enrolls."""
        if not self._has_faces():
            return None
        size = self.embedding_size or 0
        count = self.persons_index.rebuild(self._iterate(["person", "embedding"]), size, self.metric)
        return IndexTag("", self.model or "", size, self.changes, 0, count, count, self.changes)

    def _persons(self) -> MilvusPersons:
        """The index of persons, made from the faces once for a gallery written before it existed."""
        if not self.persons_index.exists():
            log.info("%s: building the index of persons from the faces (once)", self.path)
            self.reindex()
        return self.persons_index

    # -- export / import ---------------------------------------------------------------------------
    def export_records(self) -> GalleryRecords:
        if self.model is None:
            raise GalleryError(f"{self.path}: the gallery is empty, nothing to export")
        rows = self._all(FACE_FIELDS + ["embedding"])
        names = sorted({r["person"] for r in rows})
        position = {n: i for i, n in enumerate(names)}
        size = self.embedding_size or 0
        return GalleryRecords(
            self.model, size, np.array(names, dtype=str), np.array([position[r["person"]] for r in rows], np.int32),
            np.array([r["embedding"] for r in rows], np.float32).reshape(len(rows), size),
            np.array([r["source"] for r in rows], dtype=str), np.array([r["sha256"] for r in rows], dtype=str),
            np.array([json.loads(r["box"]) for r in rows], np.float64).reshape(len(rows), 4),
            np.array([r["score"] for r in rows], np.float64))

    def _present(self, hashes: list[str]) -> set[str]:
        present: set[str] = set()
        for lo in range(0, len(hashes), 1000):
            part = hashes[lo:lo + 1000]
            present |= {r["sha256"] for r in self.client.query(
                self.collection, filter=f"sha256 in [{', '.join(map(_quote, part))}]", output_fields=["sha256"],
                limit=len(part))}
        return present

    def import_records(self, records: GalleryRecords, on_progress: Callable[[int], None] | None = None,
                       chunk: int = BATCH) -> tuple[int, int]:
        """Add the faces whose hash is new; on any failure the faces inserted so far are deleted again."""
        self.check_model(records.model, records.embedding_size)
        hashes = records.sha256.tolist()
        present = self._present(hashes)
        seen: set[str] = set()
        todo = []
        for i, h in enumerate(hashes):
            if h not in present and h not in seen:
                seen.add(h)
                todo.append(i)
        inserted: list[int] = []
        before = None
        now = time.time()
        try:
            for lo in range(0, len(todo), chunk):
                part = todo[lo:lo + chunk]
                result = self.client.insert(self.collection, [{
                    "person": str(records.names[records.person[i]]), "source": str(records.source[i]),
                    "sha256": hashes[i], "box": "[" + ", ".join(map(repr, records.box[i].tolist())) + "]",
                    "score": float(records.score[i]), "created": now, "embedding": records.embeddings[i].tolist()}
                    for i in part])
                inserted += list(result["ids"])
                if on_progress:
                    on_progress(min(len(records), round((lo + len(part)) / max(len(todo), 1) * len(records))))
            if todo:
                owners = records.names[records.person[todo]]
                before = self._persons().add({str(name): records.embeddings[todo][owners == name]
                                              for name in np.unique(owners)}, self.metric)
        except BaseException:
            for lo in range(0, len(inserted), 10_000):
                self.client.delete(self.collection, ids=inserted[lo:lo + 10_000])
            if before is not None:
                self.persons_index.restore(before, self.metric)
            raise
        if on_progress:
            on_progress(len(records))
        if todo:
            self._bump(len(todo))
        return len(todo), len(records) - len(todo)

    # -- matching ----------------------------------------------------------------------------------
    def _search_persons(self, query: np.ndarray, k: int) -> list[tuple[float, str]]:
        return self._persons().search(query, k, self.metric)

    def centroids_of(self, persons: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """These persons' centroids (one row per person and writer, no face read), each one's position in
        `persons`: the centroid score of a centroid alone is the person's centroid score."""
        return self._persons().centroids_of(persons, _quote)

    def _counted_faces(self) -> int:
        """face_count() cached per revision (a count(*) costs as much as a search on Milvus Lite)."""
        revision = self.revision
        if self._face_count is None or self._face_count[0] != revision:
            self._face_count = (revision, self.face_count())
        return self._face_count[1]

    def match(self, embeddings: np.ndarray, threshold: float, top_k: int = 5) -> list[Match]:
        """Per query: the persons with the nearest centroids, scored from their sums (facepipe.gallery.ranking)."""
        if not self._has_faces() or self._counted_faces() == 0:
            return [Match(None, 0.0, []) for _ in range(len(np.atleast_2d(embeddings)))]
        return match_shortlist(self._search_persons, self.centroids_of, embeddings, threshold, top_k, self.metric,
                               shortlist=SHORTLIST_PERSONS)

    def _calibrate(self, target_fpir: float) -> float | None:
        """Strangers simulated by a sample of enrolled faces, each scored through the same shortlist as a query."""
        rows = self._all(["person", "embedding"])
        if len(rows) > MAX_PROBES:
            rows = [rows[i] for i in np.random.default_rng(0).choice(len(rows), MAX_PROBES, replace=False)]
        probes = np.array([r["embedding"] for r in rows], np.float32).reshape(len(rows), self.embedding_size or 0)
        persons = len({r["person"] for r in self._iterate(["person"])})
        owners = [r["person"] for r in rows]
        scores = shortlist_impostor_scores(probes, owners, self._search_persons, self.centroids_of, self.metric,
                                           shortlist=SHORTLIST_PERSONS)
        return threshold_from_impostors(scores, persons, target_fpir, owners)

    def _remember(self, key: str, value: str) -> None:
        self._set_meta(key, value)
