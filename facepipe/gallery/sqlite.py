"""The SQLite gallery's storage: one file of persons and their face embeddings (the persisted ANN index beside it
and its life cycle: sqlite_index.py).

- one row per enrolled face: person, embedding (float32 blob), source path, content hash, box, score;
- the fingerprint of the model that made the embeddings, so another model's faces are never mixed in;
- every write is its own short transaction (WAL journal, busy timeout), so two enrolls can run at once
  and a killed process loses only the face it was writing;
- the file is created readable by its owner only: embeddings are biometric data;
- face ids only grow (a high-water mark in `meta`), so an id in the persisted index never names another face.

Search: below `ann_min()` faces, exact numpy over an in-memory matrix. From there on, the faiss IVF index in
`<gallery>.index/` (index.py), memory-mapped, plus the faces enrolled since it was written (searched exactly)
minus the faces removed since (dropped when their id no longer resolves). The index file is rewritten only
when that difference grows past `fold_limit` (IVF add/remove on the trained index) or the gallery has changed
by more than `retrain_drift` of its size since the IVF centroids were trained (a full rebuild), when the model
changed, when the file is missing or broken, or on `reindex()`. Persons are shortlisted through the persisted index
of persons beside it (person_index.py: a faiss IVF over the centroids, with the same life cycle) and scored from
their stored sums (centroids.py).
"""
from __future__ import annotations

import itertools
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

import numpy as np

from facepipe.errors import GalleryError
from facepipe.gallery import centroids as centroid_math
from facepipe.gallery import person_index
from facepipe.gallery.base import GalleryBase, facepipe_home
from facepipe.gallery.npz import GalleryRecords
from facepipe.gallery.person_index import PersonIndexLifecycle, note_trimmed
from facepipe.gallery.ranking import Match, PersonInfo, exact_scorer, match_exact
from facepipe.gallery.search import EmbeddingIndex, ann_min
from facepipe.gallery.sqlite_index import IndexLifecycle
from facepipe.openset.calibration import StrangerScores, open_set_threshold, stranger_scores

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    face_count INTEGER NOT NULL DEFAULT 0,  -- the index of persons (centroids.py): kept with every face write
    embedding_sum BLOB
);
CREATE TABLE IF NOT EXISTS faces (
    id INTEGER PRIMARY KEY,
    person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    box TEXT NOT NULL,
    score REAL NOT NULL,
    embedding BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS faces_person ON faces(person_id);
"""
FORMAT = "2"  # 2: persons carry face_count and embedding_sum (format 1 files are upgraded on open)
PAGE_SIZE = 16384
READ_CHUNK = 20_000  # rows read from SQLite at a time


def default_gallery_path() -> Path:
    return facepipe_home() / "gallery.db"


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 before SQLite opens it (SQLite copies it to -wal/-shm)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


class SqliteGallery(PersonIndexLifecycle, IndexLifecycle, GalleryBase):
    """One SQLite file; its index policy (fold_limit_*, retrain_drift, nprobe) is IndexLifecycle's, and the index of
    persons (PersonIndexLifecycle) follows the same."""

    def __init__(self, path: str | Path | None = None, create: bool = True, ann_min_faces: int | None = None):
        self.path = Path(path) if path else default_gallery_path()
        self.ann_min = ann_min() if ann_min_faces is None else ann_min_faces
        if self.path.is_dir():
            raise GalleryError(f"{self.path}: is a folder; --gallery needs a file path")
        if not self.path.exists():
            if not create:
                raise GalleryError(f"{self.path}: no gallery here (run `facepipe enroll` first)")
            try:
                _create_private(self.path)
            except OSError as exc:
                raise GalleryError(f"{self.path}: cannot create gallery ({exc.strerror})") from None
        deadline = time.monotonic() + 60
        while True:
            try:
                self._connect_and_set_up()
                break
            except sqlite3.OperationalError as exc:
                # Two processes creating one gallery at once: SQLite answers "locked" to the loser's switch to
                # WAL at once, without waiting its busy timeout. The winner is done in milliseconds: try again.
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise GalleryError(f"{self.path}: not a facepipe gallery ({exc})") from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise GalleryError(f"{self.path}: not a facepipe gallery ({exc})") from None
        self._cache: tuple[int, object] | None = None
        self.index_builds = 0
        self.index_folds = 0

    def _connect_and_set_up(self) -> None:
        # One connection may serve several threads (the engine serialises the calls).
        self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            self.db.execute("PRAGMA busy_timeout = 60000")
            if os.path.getsize(self.path) == 0:
                # A face row is ~2.2 kB (512 floats): 16 kB pages hold 7 of them, 4 kB pages one (half empty).
                self.db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            if not self._has_schema():
                self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            found = self._meta("format")
            if found is None:
                self._write(lambda: self._set_meta("format", FORMAT))
            elif not found.isdigit() or int(found) > int(FORMAT):
                raise GalleryError(f"{self.path}: gallery format {found!r} is newer than this facepipe reads "
                                   f"({FORMAT}); upgrade facepipe")
            elif int(found) < int(FORMAT):
                self._upgrade()
        except BaseException:
            self.db.close()  # the next try, or the caller's error, starts from no connection
            raise

    # -- low level ---------------------------------------------------------------------------------
    def _upgrade(self) -> None:
        """Format 1 -> 2: add the persons' centroid columns and fill them from the faces (once, one transaction;
        a read-only file is searched as format 1 would be: from the faces)."""
        def upgrade():
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(persons)")}
            if "face_count" not in columns:
                self.db.execute("ALTER TABLE persons ADD COLUMN face_count INTEGER NOT NULL DEFAULT 0")
                self.db.execute("ALTER TABLE persons ADD COLUMN embedding_sum BLOB")
            self._recompute_sums()
            self._set_meta("format", FORMAT)
        try:
            self._write(upgrade)
        except sqlite3.OperationalError as exc:
            if not _read_only(exc):
                raise

    def _recompute_sums(self, person_ids: list[int] | None = None) -> None:
        """Rebuild persons' face_count and embedding_sum from their faces (inside a write transaction)."""
        metric, size = self.metric, self.embedding_size or 0
        where = "" if person_ids is None else f"WHERE id IN ({','.join(map(str, person_ids))})"
        self.db.execute(f"UPDATE persons SET face_count = 0, embedding_sum = NULL {where}")
        totals: dict[int, list] = {}
        cur = self.db.execute("SELECT person_id, embedding FROM faces" +
                              ("" if person_ids is None else f" WHERE person_id IN ({','.join(map(str, person_ids))})"))
        while rows := cur.fetchmany(READ_CHUNK):
            pids = np.array([r[0] for r in rows], np.int64)
            vectors = centroid_math.contribution(
                np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), size), metric)
            order = np.argsort(pids, kind="stable")
            pids, vectors = pids[order], vectors[order]
            starts = np.flatnonzero(np.r_[True, pids[1:] != pids[:-1]])
            for pid, n, total in zip(pids[starts], np.diff(np.r_[starts, len(pids)]),
                                     np.add.reduceat(vectors, starts, axis=0)):
                entry = totals.setdefault(int(pid), [0, np.zeros(size)])
                entry[0] += int(n)
                entry[1] += total
        self.db.executemany("UPDATE persons SET face_count = ?, embedding_sum = ? WHERE id = ?",
                            ((n, total.tobytes(), pid) for pid, (n, total) in totals.items()))

    def _has_schema(self) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name='faces'").fetchone() is not None

    def _write(self, fn):
        """Run fn in one IMMEDIATE transaction (takes the write lock up front: no deadlocks)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
            self.db.execute("COMMIT")
            return result
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = "
                        "excluded.value",
                        (key, value))

    def _bump_revision(self, faces_changed: int = 1) -> None:
        self._set_meta("revision", str(self.revision + 1))
        self._set_meta("changes", str(self.changes + faces_changed))

    def _next_face_ids(self, n: int) -> int:
        """First of n fresh face ids (inside a write transaction): above every id ever used."""
        high = max(int(self._meta("last_face_id") or 0),
                   self.db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0])
        self._set_meta("last_face_id", str(high + n))
        return high + 1

    def close(self) -> None:
        self._cache = None
        self.db.close()

    # -- model binding -----------------------------------------------------------------------------
    def _bind(self, fingerprint: str, embedding_size: int, metric: str = "cosine") -> None:
        current = self._meta("model")
        if current is None or self.face_count() == 0:
            self._set_meta("model", fingerprint)
            self._set_meta("embedding_size", str(embedding_size))
            self._set_meta("metric", metric)
        else:
            self.refuse_other_model(fingerprint, embedding_size)

    def check_model(self, fingerprint: str, embedding_size: int, metric: str = "cosine") -> None:
        """Bind an empty gallery to this model (and its metric), or refuse a model other than the one that filled it."""
        self._write(lambda: self._bind(fingerprint, embedding_size, metric))

    # -- writes ------------------------------------------------------------------------------------
    def person_of_hash(self, sha256: str) -> str | None:
        row = self.db.execute(
            "SELECT p.name FROM faces f JOIN persons p ON p.id = f.person_id WHERE f.sha256 = ?", (sha256,)).fetchone()
        return row[0] if row else None

    def add_face(self, name: str, source: str, sha256: str, box, score: float, embedding: np.ndarray) -> str:
        """Add one face. Returns "added", or "duplicate" when this file content is already enrolled."""
        emb = np.asarray(embedding, dtype=np.float32)
        size = self._meta("embedding_size")
        if size is not None and int(size) != emb.shape[0]:
            raise GalleryError(f"{self.path}: embedding size {emb.shape[0]} does not match the gallery's {size}")

        return self._write(lambda: self._insert_face(name, source, sha256, box, score, emb))

    def _insert_face(self, name: str, source: str, sha256: str, box, score: float, emb: np.ndarray) -> str:
        """add_face inside a write transaction the caller holds (naming a cluster enrolls many faces at once)."""
        if self.db.execute("SELECT 1 FROM faces WHERE sha256 = ?", (sha256,)).fetchone():
            return "duplicate"
        self.db.execute("INSERT OR IGNORE INTO persons(name, created) VALUES (?, ?)", (name, time.time()))
        person_id, total = self.db.execute("SELECT id, embedding_sum FROM persons WHERE name = ?",
                                           (name,)).fetchone()
        self.db.execute(
            "INSERT INTO faces(id, person_id, source, sha256, box, score, embedding, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self._next_face_ids(1), person_id, source, sha256, json.dumps([round(float(v), 2) for v in box]),
             float(score), np.asarray(emb, np.float32).tobytes(), time.time()))
        self.db.execute("UPDATE persons SET face_count = face_count + 1, embedding_sum = ? WHERE id = ?",
                        (centroid_math.add_to(total, emb, self.metric), person_id))
        self._bump_revision()
        return "added"

    def _delete_faces_of(self, name: str, keys: list[str], pattern: str | None = None) -> int:
        """Inside a write transaction: remove the person's faces with these content keys (or keys LIKE
        pattern); a person left with no face goes too. Returns faces removed."""
        row = self.db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
        if row is None:
            return 0
        where = f"person_id = ? AND (sha256 IN ({','.join('?' * len(keys))})"
        where += " OR sha256 LIKE ?)" if pattern else ")"
        params = (row[0], *keys, *([pattern] if pattern else []))
        self._next_face_ids(0)  # remember the high-water mark before its face may go
        going = [r[0] for r in self.db.execute(f"SELECT embedding FROM faces WHERE {where}", params)]
        removed = self.db.execute(f"DELETE FROM faces WHERE {where}", params).rowcount
        if not self.db.execute("SELECT 1 FROM faces WHERE person_id = ?", (row[0],)).fetchone():
            self.db.execute("DELETE FROM persons WHERE id = ?", (row[0],))
        elif going:  # the index of persons: take the removed faces out of the person's sum
            total = self.db.execute("SELECT embedding_sum FROM persons WHERE id = ?", (row[0],)).fetchone()[0]
            vectors = np.frombuffer(b"".join(going), np.float32).reshape(len(going), -1)
            self.db.execute("UPDATE persons SET face_count = face_count - ?, embedding_sum = ? WHERE id = ?",
                            (len(going), centroid_math.add_to(total, -vectors, self.metric), row[0]))
        if removed:
            self._bump_revision(removed)
            if going and self.db.execute("SELECT 1 FROM persons WHERE id = ?", (row[0],)).fetchone():
                note_trimmed(self, row[0])  # the index of persons holds their old centroid
        return removed

    def remove_person(self, name: str) -> int:
        def delete():
            row = self.db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"{self.path}: no person named {name!r} in the gallery")
            n = self.db.execute("SELECT COUNT(*) FROM faces WHERE person_id = ?", (row[0],)).fetchone()[0]
            self._next_face_ids(0)  # remember the high-water mark before its face may go
            self.db.execute("DELETE FROM persons WHERE id = ?", (row[0],))
            self._bump_revision(n)
            return n
        return self._write(delete)

    def replace_embeddings(self, model: str, embeddings: dict[int, np.ndarray], metric: str = "cosine") -> None:
        """Swap every face's embedding for one from another model, in a single transaction."""
        def swap():
            for face_id, emb in embeddings.items():
                self.db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (np.asarray(emb, np.float32).tobytes(),
                                                                                face_id))
            self._set_meta("model", model)
            self._set_meta("metric", metric)
            self._set_meta("embedding_size", str(len(next(iter(embeddings.values()))) if embeddings else 0))
            self.db.execute("DELETE FROM meta WHERE key LIKE 'calibration%' OR key IN (?, ?)",
                            (person_index.TAG, person_index.TRIMMED))  # every centroid changes: rebuild that index
            self._recompute_sums()  # new vectors, maybe a new metric: every centroid anew
            self._bump_revision(len(embeddings))
        self._write(swap)  # the index tag names the old model: the next search rebuilds it

    # -- export / import ---------------------------------------------------------------------------
    def export_records(self) -> GalleryRecords:
        """Every face, in id order, as the arrays of the export file."""
        if self.model is None:
            raise GalleryError(f"{self.path}: the gallery is empty, nothing to export")
        size = self.embedding_size or 0
        n = self.face_count()
        names = [r[0] for r in self.db.execute("SELECT name FROM persons ORDER BY id")]
        position = {pid: i for i, (pid,) in enumerate(self.db.execute("SELECT id FROM persons ORDER BY id"))}
        person = np.empty(n, np.int32)
        embeddings = np.empty((n, size), np.float32)
        box = np.empty((n, 4), np.float64)
        score = np.empty(n, np.float64)
        source, sha = [], []
        cur = self.db.execute("SELECT person_id, source, sha256, box, score, embedding FROM faces ORDER BY id")
        i = 0
        while rows := cur.fetchmany(READ_CHUNK):
            j = i + len(rows)
            person[i:j] = [position[r[0]] for r in rows]
            source += [r[1] for r in rows]
            sha += [r[2] for r in rows]
            box[i:j] = [json.loads(r[3]) for r in rows]
            score[i:j] = [r[4] for r in rows]
            embeddings[i:j] = np.frombuffer(b"".join(r[5] for r in rows), np.float32).reshape(-1, size)
            i = j
        return GalleryRecords(self.model, size, np.array(names, dtype=str), person, embeddings,
                              np.array(source, dtype=str), np.array(sha, dtype=str), box, score)

    def import_records(self, records: GalleryRecords, on_progress: Callable[[int], None] | None = None,
                       chunk: int = 50_000) -> tuple[int, int]:
        """Add every face whose content hash is new, all in one transaction (all or nothing).
        Returns (added, skipped as already present). `on_progress(faces done)` after each chunk."""
        def insert():
            self._bind(records.model, records.embedding_size)
            # A large page cache for this connection: the sha256 index takes random inserts, and with the
            # default 2 MB cache SQLite would spill and rewrite its pages many times over.
            self.db.execute("PRAGMA cache_size = -1000000")
            now = time.time()
            self.db.executemany("INSERT OR IGNORE INTO persons(name, created) VALUES (?, ?)",
                                ((str(name), now) for name in records.names))
            ids = dict(self.db.execute("SELECT name, id FROM persons"))
            person_ids = [ids[str(name)] for name in records.names]
            before = self.face_count()
            n = len(records.person)
            start = self._next_face_ids(n)
            face_person = np.asarray(person_ids, np.int64)[records.person].tolist() if n else []
            for lo in range(0, n, chunk):
                hi = min(n, lo + chunk)
                boxes = ["[" + ", ".join(map(repr, b)) + "]" for b in records.box[lo:hi].tolist()]  # = json.dumps
                self.db.executemany(
                    "INSERT OR IGNORE INTO faces(id, person_id, source, sha256, box, score, embedding, created) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    zip(range(start + lo, start + hi), face_person[lo:hi], records.source[lo:hi].tolist(),
                        records.sha256[lo:hi].tolist(), boxes, records.score[lo:hi].tolist(),
                        map(np.ndarray.tobytes, records.embeddings[lo:hi]), itertools.repeat(now)))
                if on_progress:
                    on_progress(hi)
            added = self.face_count() - before
            # Persons that got no face (all theirs were already present under another name) are not kept.
            self.db.execute("DELETE FROM persons WHERE NOT EXISTS (SELECT 1 FROM faces WHERE person_id = persons.id)")
            if added:  # the persons this import touched, or all when it touched many
                touched = sorted(set(person_ids))
                self._recompute_sums(touched if len(touched) <= 10_000 else None)
            if added:
                self._bump_revision(added)
            return added, n - added
        return self._write(insert)

    # -- reads -------------------------------------------------------------------------------------
    def face_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]

    def persons(self) -> list[PersonInfo]:
        rows = self.db.execute(
            "SELECT p.name, COUNT(f.id), p.created FROM persons p LEFT JOIN faces f ON f.person_id = p.id "
            "GROUP BY p.id ORDER BY p.name").fetchall()
        return [PersonInfo(*r) for r in rows]

    def faces(self) -> list[tuple[int, str, str, str]]:
        """(face id, person, source path, sha256) for every face."""
        return self.db.execute(
            "SELECT f.id, p.name, f.source, f.sha256 FROM faces f JOIN persons p ON p.id = f.person_id ORDER BY "
            "f.id").fetchall()

    def _read_embeddings(self, where: str = "", params: tuple = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face ids, person ids, N x D matrix) of the faces matching `where`, in id order, read in chunks."""
        size = self.embedding_size or 0
        ids, pids, blocks = [], [], []
        cur = self.db.execute(f"SELECT id, person_id, embedding FROM faces {where} ORDER BY id", params)
        while rows := cur.fetchmany(READ_CHUNK):
            ids += [r[0] for r in rows]
            pids += [r[1] for r in rows]
            blocks.append(np.frombuffer(b"".join(r[2] for r in rows), np.float32).reshape(-1, size))
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, size), np.float32)
        return np.array(ids, np.int64), np.array(pids, np.int64), matrix

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All embeddings (N x D), their person index (N), and the person names (a full copy: small galleries)."""
        _, pids, matrix = self._read_embeddings()
        names = dict(self.db.execute("SELECT id, name FROM persons").fetchall())
        order = sorted(names)
        position = {pid: i for i, pid in enumerate(order)}
        return matrix, np.array([position[p] for p in pids], np.int64), [names[p] for p in order]

    def _searcher(self):
        """The search structure for the gallery as it is now (rebuilt only when the gallery changed)."""
        revision = self.revision
        if self._cache is None or self._cache[0] != revision:
            self._cache = None  # let go of the old one first (memory)
            count = self.face_count()
            searcher = ExactSearch(*self.embeddings(), self.metric) if count < self.ann_min else self._ann_search(count)
            self._cache = (revision, searcher)
        return self._cache[1]

    @property
    def search_kind(self) -> str:
        """How this gallery is searched now: "numpy" (exact) or "faiss-ivf (persisted)"."""
        return self._searcher().kind

    # -- matching ----------------------------------------------------------------------------------
    def _calibrate(self, target_fpir: float) -> float | None:
        """The threshold from the gallery's own impostors and, below MIN_PERSONS persons, the faces of its unnamed
        clusters as strangers (facepipe.openset.calibration.stranger_scores)."""
        searcher = self._searcher()
        strangers = stranger_scores(searcher.n_persons, self._stranger_faces, searcher.match)
        return searcher.calibrate(target_fpir, strangers)

    def _stranger_faces(self) -> tuple[np.ndarray, np.ndarray]:
        from facepipe.gallery.clusters import unnamed_cluster_faces  # the cluster tables build on this gallery

        return unnamed_cluster_faces(self)

    def _strangers_version(self) -> str:
        return f"clusters:{self._meta('cluster_revision') or 0}"

    def _remember(self, key: str, value: str) -> None:
        try:
            self._write(lambda: self._set_meta(key, value))
        except sqlite3.OperationalError as exc:
            if not _read_only(exc):  # a read-only gallery is a choice: say nothing; the rest is said once
                raise

    def match(self, embeddings: np.ndarray, threshold: float, top_k: int = 5) -> list[Match]:
        """Per query: persons ranked by their person score (facepipe.gallery.ranking); unknown below threshold."""
        return self._searcher().match(embeddings, threshold, top_k)


def _read_only(exc: sqlite3.OperationalError) -> bool:
    """A write refused because the file or its folder is read-only (the only error we may pass over)."""
    return "readonly" in str(exc).lower() or "read-only" in str(exc).lower()


class ExactSearch:
    """Small galleries: every embedding in memory, exact numpy search."""
    kind = "numpy"

    def __init__(self, matrix: np.ndarray, labels: np.ndarray, names: list[str], metric: str = "cosine"):
        self.matrix, self.labels, self.names, self.metric = matrix, labels, names, metric
        self.index = EmbeddingIndex(matrix)
        self.kind = self.index.kind
        self.n_faces, self.n_persons = len(matrix), len(names)
        self.scorer = exact_scorer(matrix, labels, len(names), metric, self.index)

    def match(self, embeddings, threshold: float, top_k: int) -> list[Match]:
        return match_exact(self.scorer, self.names, embeddings, threshold, top_k, self.metric)

    def calibrate(self, target_fpir: float, strangers: StrangerScores | None = None) -> float | None:
        return open_set_threshold(self.matrix, self.labels, self.scorer, target_fpir, strangers)

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, str]]:
        sims, idx = self.index.search(query[None], k)
        return [(float(s), self.names[self.labels[i]]) for s, i in zip(sims[0], idx[0]) if i >= 0]
