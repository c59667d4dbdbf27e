"""The SQLite gallery: one file of persons and their face embeddings, with a persisted ANN index beside it.

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
changed, when the file is missing or broken, or on `reindex()`.
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
import platformdirs

from facepipe.errors import GalleryError
from facepipe.gallery import index as ann
from facepipe.gallery.base import GalleryBase
from facepipe.gallery.npz import GalleryRecords
from facepipe.gallery.ranking import (
    Match,
    PersonInfo,
    exact_scorer,
    match_exact,
    match_shortlist,
    shortlist_impostor_scores,
)
from facepipe.gallery.search import EmbeddingIndex, ann_min, exact_search, ivf_lists, train_ivf
from facepipe.openset.calibration import MAX_PROBES, TARGET_FPIR, open_set_threshold, threshold_from_impostors

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS persons (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
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
FORMAT = "1"
PAGE_SIZE = 16384
CALIBRATION_DRIFT = 0.01  # a cached open-set threshold stays valid until 1% of the faces have changed
READ_CHUNK = 20_000


def default_gallery_path() -> Path:
    home = os.environ.get("FACEPIPE_HOME") or platformdirs.user_data_dir("facepipe")
    return Path(home) / "gallery.db"


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 before SQLite opens it (SQLite copies it to -wal/-shm)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


class Gallery(GalleryBase):
    # Index policy (instance attributes may override them, e.g. in tests).
    fold_limit_min = 1000      # faces outside the index file before they are folded into it ...
    fold_limit_share = 0.01    # ... or this share of the gallery, whichever is larger
    retrain_drift = 0.25       # changes since the centroids were trained, as a share of that size: retrain
    nprobe: int | None = None  # None: the index's default (search.default_nprobe)

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
        try:
            # One connection may serve several threads (the engine serialises the calls).
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
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
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a facepipe gallery ({exc})") from None
        self._cache: tuple[int, object] | None = None
        self.index_builds = 0  # full rebuilds this object did (tests assert on it)
        self.index_folds = 0

    # -- low level ---------------------------------------------------------------------------------
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
        person_id = self.db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()[0]
        self.db.execute(
            "INSERT INTO faces(id, person_id, source, sha256, box, score, embedding, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (self._next_face_ids(1), person_id, source, sha256, json.dumps([round(float(v), 2) for v in box]),
             float(score), np.asarray(emb, np.float32).tobytes(), time.time()))
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
        removed = self.db.execute(f"DELETE FROM faces WHERE {where}", params).rowcount
        if not self.db.execute("SELECT 1 FROM faces WHERE person_id = ?", (row[0],)).fetchone():
            self.db.execute("DELETE FROM persons WHERE id = ?", (row[0],))
        if removed:
            self._bump_revision(removed)
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
            self.db.execute("DELETE FROM meta WHERE key LIKE 'calibration%'")
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

    # -- the persisted index -----------------------------------------------------------------------
    @property
    def index_folder(self) -> Path:
        return ann.index_folder(self.path)

    def index_tag(self) -> ann.IndexTag | None:
        return ann.IndexTag.from_json(self._meta("index"))

    def index_state(self, tag: ann.IndexTag | None = None) -> str:
        """"missing", "stale" (model changed or drift past retrain_drift), "fold" (too many faces outside
        the file) or "fresh"."""
        tag = tag or self.index_tag()
        if tag is None or not (self.index_folder / tag.file).is_file():
            return "missing"
        if tag.model != self.model or tag.embedding_size != self.embedding_size:
            return "stale"
        if self.changes - tag.trained_changes > self.retrain_drift * max(tag.trained_count, 1):
            return "stale"
        outside = self._faces_outside(tag)
        limit = max(self.fold_limit_min, self.fold_limit_share * tag.count)
        return "fold" if sum(outside) > limit else "fresh"

    def _faces_outside(self, tag: ann.IndexTag) -> tuple[int, int]:
        """(faces added since the file was written, faces removed since)."""
        # A rowid range seek for the new ones and COUNT(*) (over the small person index) for the rest: neither
        # reads the 2 kB face rows of a large gallery.
        newer = self.db.execute("SELECT COUNT(*) FROM faces WHERE id > ?", (tag.max_id,)).fetchone()[0]
        return newer, tag.count - (self.face_count() - newer)

    def reindex(self, full: bool = True) -> ann.IndexTag:
        """Rewrite the index file now: `full` retrains the IVF centroids; otherwise fold the faces added
        and removed since into the current file (a full build when there is none)."""
        with ann.build_lock(self.index_folder):
            tag = self.index_tag()
            if full or self.index_state(tag) in ("missing", "stale"):
                _, tag = self._build_locked()
            else:
                _, tag = self._fold_locked(tag)
        self._cache = None
        return tag

    def _ann_search(self, count: int) -> "AnnSearch":
        index = tag = None
        for _ in range(3):  # a builder may swap the file between reading the tag and opening it
            tag = self.index_tag()
            if self.index_state(tag) != "fresh":
                index, tag = self._update_index()
            if index is None:
                try:
                    index = ann.open_index(self.index_folder, tag, self.nprobe)
                except FileNotFoundError:
                    continue
            break
        if index is None:  # a file that is there but unreadable: build a new one
            index, tag = self._update_index(force_build=True)
        ids, pids, matrix = self._read_embeddings("WHERE id > ?", (tag.max_id,))
        names = dict(self.db.execute("SELECT id, name FROM persons"
                                     " WHERE id IN (SELECT person_id FROM faces WHERE id > ?)", (tag.max_id,)))
        n_persons = self.db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        return AnnSearch(self.db, index, tag, ids, [names[p] for p in pids], matrix, n_persons, self.metric)

    def _update_index(self, force_build: bool = False):
        """Bring the index up to date under the build lock (somebody else may have done it meanwhile).
        Returns (in-memory index or None, tag)."""
        try:
            with ann.build_lock(self.index_folder):
                tag = self.index_tag()
                state = "missing" if force_build else self.index_state(tag)
                if state in ("missing", "stale"):
                    return self._build_locked()
                if state == "fold":
                    return self._fold_locked(tag)
                return None, tag
        except (OSError, sqlite3.OperationalError):
            # Read-only gallery or folder: build in memory for this process; nothing is written.
            return self._build_index(self._snapshot())

    def _snapshot(self) -> tuple[int, int, str, int]:
        return (self.changes, self.db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0],
                self.model, self.embedding_size)

    def _build_index(self, snapshot):
        """Train a fresh IVF on the gallery and fill it (streams the faces: one copy of the vectors)."""
        changes, max_id, model, size = snapshot
        all_ids = np.array([r[0] for r in self.db.execute("SELECT id FROM faces WHERE id <= ?", (max_id,))], np.int64)
        rng = np.random.default_rng(0)
        sample_ids = np.sort(rng.choice(all_ids, size=min(len(all_ids), 64 * ivf_lists(len(all_ids))), replace=False))
        sample = [self._read_embeddings(f"WHERE id IN ({','.join(map(str, part))})")[2]
                  for part in np.array_split(sample_ids, max(1, len(sample_ids) // 20_000))]
        index = train_ivf(np.concatenate(sample), size=len(all_ids))
        del sample
        cur = self.db.execute("SELECT id, embedding FROM faces WHERE id <= ? ORDER BY id", (max_id,))
        count = 0
        while rows := cur.fetchmany(READ_CHUNK):
            vectors = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(-1, size)
            index.add_with_ids(vectors, np.array([r[0] for r in rows], np.int64))
            count += len(rows)
        if self.nprobe:
            index.nprobe = min(self.nprobe, index.nlist)
        self.index_builds += 1
        return index, ann.IndexTag("", model, size, changes, max_id, count, count, changes)

    def _build_locked(self):
        self.db.execute("BEGIN")  # one read snapshot for the whole build (WAL: writers go on meanwhile)
        try:
            index, tag = self._build_index(self._snapshot())
        finally:
            self.db.execute("COMMIT")
        return index, self._publish(index, tag)

    def _fold_locked(self, tag: ann.IndexTag):
        """IVF add/remove: the faces added and removed since the file was written, on the trained index."""
        index = ann.load_for_update(self.index_folder, tag)
        self.db.execute("BEGIN")
        try:
            changes, max_id, _, _ = self._snapshot()
            live = np.array([r[0] for r in self.db.execute("SELECT id FROM faces WHERE id <= ?", (tag.max_id,))],
                            np.int64)
            ann.remove_missing(index, live)
            ids, _, matrix = self._read_embeddings("WHERE id > ? AND id <= ?", (tag.max_id, max_id))
        finally:
            self.db.execute("COMMIT")
        if len(ids):
            index.add_with_ids(matrix, ids)
        if self.nprobe:
            index.nprobe = min(self.nprobe, index.nlist)
        self.index_folds += 1
        new = ann.IndexTag("", tag.model, tag.embedding_size, changes, max_id, index.ntotal, tag.trained_count,
                           tag.trained_changes)
        return index, self._publish(index, new)

    def _publish(self, index, tag: ann.IndexTag) -> ann.IndexTag:
        """Write the file, switch the tag to it (one transaction), then sweep the old files."""
        tag.file = ann.write_index(index, self.index_folder)
        self._write(lambda: self._set_meta("index", tag.to_json()))
        ann.sweep(self.index_folder, keep=tag.file)
        return tag

    # -- matching ----------------------------------------------------------------------------------
    def open_set_threshold(self, target_fpir: float = TARGET_FPIR) -> float | None:
        """Threshold at which a stranger is named with probability ~target_fpir, from this gallery's
        own impostor scores (cached until CALIBRATION_DRIFT of the faces changed). None when too few
        persons to say."""
        key = f"calibration:{target_fpir}:changes"
        cached = self._meta(key)
        changes = self.changes
        if cached:
            at, value = json.loads(cached)
            if abs(changes - at) <= CALIBRATION_DRIFT * self.face_count():
                return value
        value = self._searcher().calibrate(target_fpir)
        try:
            self._write(lambda: self._set_meta(key, json.dumps([changes, value])))
        except sqlite3.OperationalError as exc:
            if not _read_only(exc):
                raise
        return value

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

    def calibrate(self, target_fpir: float) -> float | None:
        return open_set_threshold(self.matrix, self.labels, self.scorer, target_fpir)

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, str]]:
        sims, idx = self.index.search(query[None], k)
        return [(float(s), self.names[self.labels[i]]) for s, i in zip(sims[0], idx[0]) if i >= 0]



class AnnSearch:
    """Large galleries: the memory-mapped IVF file + the faces enrolled since (exact) - the faces removed since."""
    kind = "faiss-ivf (persisted)"

    def __init__(self, db: sqlite3.Connection, index, tag: ann.IndexTag, delta_ids: np.ndarray,
                 delta_names: list[str], delta: np.ndarray, n_persons: int, metric: str = "cosine"):
        self.db, self.index, self.tag, self.metric = db, index, tag, metric
        self.delta_ids, self.delta_names, self.delta = delta_ids, delta_names, delta
        self.n_faces = index.ntotal + len(delta_ids)
        self.n_persons = n_persons

    def faces_of(self, persons: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """All faces of these persons (read from SQLite: a few hundred rows) and each one's position in `persons`."""
        position = {name: i for i, name in enumerate(persons)}
        rows = self.db.execute(
            f"SELECT p.name, f.embedding FROM faces f JOIN persons p ON p.id = f.person_id "
            f"WHERE p.name IN ({','.join('?' * len(persons))})", persons).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.tag.embedding_size)
        return matrix, np.array([position[r[0]] for r in rows], np.int64)

    def match(self, embeddings, threshold: float, top_k: int) -> list[Match]:
        return match_shortlist(self.search, self.faces_of, embeddings, threshold, top_k, self.metric)

    def calibrate(self, target_fpir: float) -> float | None:
        """Strangers simulated by a sample of enrolled faces, each scored through the same shortlist as a query."""
        total = self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        rows = self.db.execute("SELECT p.name, f.embedding FROM faces f JOIN persons p ON p.id = f.person_id "
                               "WHERE f.id IN (SELECT id FROM faces ORDER BY (id * 2654435761) % 4294967296 LIMIT "
                               "?)",  # a fixed sample
                               (min(total, MAX_PROBES),)).fetchall()
        probes = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.tag.embedding_size)
        scores = shortlist_impostor_scores(probes, [r[0] for r in rows], self.search, self.faces_of, self.metric)
        return threshold_from_impostors(scores, self.n_persons, target_fpir)

    def search_ids(self, query: np.ndarray, k: int) -> list[tuple[float, int, str]]:
        """Up to k (similarity, face id, person) hits, best first, removed faces left out."""
        q = np.ascontiguousarray(query[None], dtype=np.float32)
        sims, ids = self.index.search(q, min(k, max(1, self.index.ntotal)))
        found = [(float(s), int(i)) for s, i in zip(sims[0], ids[0]) if i >= 0]
        owner = self._owners([i for _, i in found])
        hits = [(s, i, owner[i]) for s, i in found if i in owner]
        if len(self.delta_ids):
            dsims, didx = exact_search(self.delta, q, min(k, len(self.delta_ids)))
            hits += [(float(s), int(self.delta_ids[j]), self.delta_names[j]) for s, j in zip(dsims[0], didx[0])]
            hits.sort(key=lambda h: -h[0])
        return hits[:k]

    def _owners(self, ids: list[int]) -> dict[int, str]:
        out: dict[int, str] = {}
        for lo in range(0, len(ids), 30_000):  # SQLite's bound on query parameters
            part = ids[lo:lo + 30_000]
            out.update(self.db.execute(
                f"SELECT f.id, p.name FROM faces f JOIN persons p ON p.id = f.person_id WHERE f.id IN "
                f"({','.join('?' * len(part))})",
                part))
        return out

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, str]]:
        return [(s, name) for s, _, name in self.search_ids(query, k)]
