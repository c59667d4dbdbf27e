"""The index of persons of a Milvus gallery: each person's embedding sum and face count (centroids.py) in a third
collection, COLLECTION_persons, so a query ranks persons from a few rows each instead of all their faces (a person
with a million faces costs a query what a person with five costs): the scoring SQLite's index of persons gives.

Milvus has no transactions, so no two writers ever update one row: each writer (one open MilvusGallery) keeps its
own row per person, keyed by person and writer, and a person's sum is the sum of its rows. A writer is a slot on
its machine, held with an exclusive file lock while the gallery is open (`writer_slot`), so the enroll runs of one
machine, one after another, share one row per person; a person gets one row per machine and concurrent writer,
not one per run. `facepipe gallery reindex` recomputes every sum from the faces into one row per person. That
also mends the two cases that leave a sum off by one photo: a writer that died between storing a face and adding
it to its row, and a photo two writers stored at the same instant whose extra copy was deleted after both had
counted it (milvus.py, `_first_with_hash`). Every row carries its own centroid, searched to shortlist persons.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import socket
import threading
import uuid
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from facepipe.gallery.base import facepipe_home
from facepipe.gallery.centroids import centroids, contribution
from facepipe.gallery.person_index import index_vectors

MAX_TOPK = 16384  # Milvus' bound on limit for one search
BATCH = 2000      # entities per insert / upsert / iterator page


def _encode(total: np.ndarray) -> str:
    """A float64 sum as text (Milvus has no double vectors; float32 would drift over a million additions)."""
    return base64.b64encode(np.asarray(total, np.float64).tobytes()).decode("ascii")


def _decode(text: str) -> bytes:
    return base64.b64decode(text)


SLOTS = 64  # concurrent writers per machine and gallery before falling back to a one-off id


def writer_slot(gallery: str) -> tuple[str, IO | None]:
    """This writer's id and the open lock file that holds it: the first slot of this machine for this gallery
    that no open gallery holds (flock, released when the file closes or the process dies). The id mixes the
    host name and /etc/machine-id with the slot, so two machines never share one; without a writable
    folder, a one-off random id (and a row per run)."""
    cache = facepipe_home() / "milvus-writers"
    machine = socket.gethostname()
    try:
        machine += " " + Path("/etc/machine-id").read_text().strip()
    except OSError:
        pass
    prefix = hashlib.sha256(gallery.encode()).hexdigest()[:16]
    try:
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        for slot in range(SLOTS):
            lock = open(cache / f"{prefix}-{slot}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()
                continue
            return hashlib.sha256(f"{machine} {gallery} {slot}".encode()).hexdigest()[:32], lock
    except OSError:
        pass
    return uuid.uuid4().hex, None


class MilvusPersons:
    """The persons collection of one Milvus gallery, as one writer sees it."""

    def __init__(self, client, collection: str, gallery: str):
        self.client, self.collection = client, collection
        self.writer, self._slot = writer_slot(gallery)  # this writer's rows; no other writer touches them
        self._lock = threading.Lock()  # one gallery object shared by threads (the service) is still one writer

    def close(self) -> None:
        if self._slot is not None:
            self._slot.close()  # the slot is free for the next run
            self._slot = None

    def exists(self) -> bool:
        return self.client.has_collection(self.collection)

    def create(self, dim: int, metric: str) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=96)  # sha256(person) + writer
        schema.add_field("person", DataType.VARCHAR, max_length=1024)
        schema.add_field("count", DataType.INT64)
        schema.add_field("total", DataType.VARCHAR, max_length=65535)  # base64 float64: up to 6,000 dimensions
        schema.add_field("centroid", DataType.FLOAT_VECTOR, dim=dim)
        index = self.client.prepare_index_params()
        index.add_index("centroid", index_type="AUTOINDEX", metric_type=self._milvus_metric(metric))
        index.add_index("person", index_type="INVERTED")
        self.client.create_collection(self.collection, schema=schema, index_params=index, consistency_level="Strong")
        self.client.load_collection(self.collection)

    def drop(self) -> None:
        if self.exists():
            self.client.drop_collection(self.collection)

    @staticmethod
    def _milvus_metric(metric: str) -> str:
        return "IP" if metric == "cosine" else "L2"  # index_vectors: unit centroids for cosine, raw ones otherwise

    def _key(self, person: str) -> str:
        # Hex only: pymilvus writes `get`'s keys into a filter unescaped, and a name may hold quotes or backslashes.
        return hashlib.sha256(person.encode()).hexdigest() + self.writer

    def _row(self, person: str, total: np.ndarray, count: int, metric: str) -> dict:
        return {"key": self._key(person), "person": person, "count": int(count), "total": _encode(total),
                "centroid": index_vectors((total / max(count, 1))[None], metric)[0].tolist()}

    # -- writes ------------------------------------------------------------------------------------
    def add(self, faces: dict[str, np.ndarray], metric: str) -> dict[str, dict | None]:
        """Add faces (person -> N x D embeddings) to this writer's rows. Returns the rows as they were (None: no
        row), for `restore` when the write they belong to fails."""
        with self._lock:
            persons = list(faces)
            before: dict[str, dict | None] = dict.fromkeys(persons)
            for lo in range(0, len(persons), BATCH):
                keys = [self._key(p) for p in persons[lo:lo + BATCH]]
                for r in self.client.get(self.collection, ids=keys, output_fields=["person", "count", "total"]):
                    before[r["person"]] = r
            rows = []
            for person, embeddings in faces.items():
                old = before[person]
                total = contribution(embeddings, metric).sum(0)
                count = len(embeddings)
                if old is not None:
                    total = total + np.frombuffer(_decode(old["total"]), np.float64)
                    count += int(old["count"])
                rows.append(self._row(person, total, count, metric))
            for lo in range(0, len(rows), BATCH):
                self.client.upsert(self.collection, rows[lo:lo + BATCH])
            return before

    def restore(self, before: dict[str, dict | None], metric: str) -> None:
        """Put this writer's rows back as `add` found them."""
        with self._lock:
            gone = [self._key(p) for p, r in before.items() if r is None]
            if gone:
                self.client.delete(self.collection, ids=gone)
            back = [self._row(p, np.frombuffer(_decode(r["total"]), np.float64), int(r["count"]), metric)
                    for p, r in before.items() if r is not None]
            if back:
                self.client.upsert(self.collection, back)

    def remove(self, person: str, quote) -> None:
        self.client.delete(self.collection, filter=f"person == {quote(person)}")

    def rebuild(self, faces: Iterable[dict], dim: int, metric: str) -> int:
        """Recompute every person's sum from the faces ({"person", "embedding"} rows), one row each (this
        writer's). Run while nobody else enrolls: rows another writer adds meanwhile would be lost."""
        totals: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        for r in faces:
            add = contribution(np.asarray(r["embedding"], np.float32), metric)[0]
            totals[r["person"]] = totals.get(r["person"], 0) + add
            counts[r["person"]] = counts.get(r["person"], 0) + 1
        with self._lock:
            self.drop()
            self.create(dim, metric)
            rows = [self._row(p, totals[p], counts[p], metric) for p in sorted(totals)]
            for lo in range(0, len(rows), BATCH):
                self.client.insert(self.collection, rows[lo:lo + BATCH])
        return sum(counts.values())

    # -- reads -------------------------------------------------------------------------------------
    def search(self, query: np.ndarray, k: int, metric: str) -> list[tuple[float, str]]:
        """Up to k (closeness, person), nearest centroid first (closeness orders only; not the person score):
        k distinct persons, each by its nearest row (Milvus' grouping search)."""
        vector = index_vectors(np.asarray(query, np.float32)[None], metric)[0]
        res = self.client.search(self.collection, [vector.tolist()], limit=min(k, MAX_TOPK), anns_field="centroid",
                                 output_fields=["person"], group_by_field="person",
                                 search_params={"metric_type": self._milvus_metric(metric)})
        return [(float(h["distance"]) if metric == "cosine" else -float(h["distance"]), h["entity"]["person"])
                for h in res[0]]

    def centroids_of(self, persons: list[str], quote) -> tuple[np.ndarray, np.ndarray]:
        """The persons' centroids from the sums of their rows, each one's position in `persons`; persons
        without a face drop out."""
        totals: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        rows = self.client.query(self.collection, filter=f"person in [{', '.join(quote(p) for p in persons)}]",
                                 output_fields=["person", "count", "total"])
        for r in rows:
            totals[r["person"]] = totals.get(r["person"], 0) + np.frombuffer(_decode(r["total"]), np.float64)
            counts[r["person"]] = counts.get(r["person"], 0) + int(r["count"])
        present = [p for p in persons if counts.get(p, 0) > 0]
        position = {p: i for i, p in enumerate(persons)}
        if not present:
            return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
        matrix = centroids([totals[p].tobytes() for p in present], [counts[p] for p in present])
        return matrix, np.array([position[p] for p in present], np.int64)
