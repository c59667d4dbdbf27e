"""The gallery: an SQLite file of persons and their face embeddings.

- one row per enrolled face: person, embedding (float32 blob), source path, content hash, box, score;
- the fingerprint of the model that made the embeddings, so another model's faces are never mixed in;
- every write is its own short transaction (WAL journal, busy timeout), so two enrolls can run at once
  and a killed process loses only the face it was writing;
- the file is created readable by its owner only: embeddings are biometric data.
"""
from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import platformdirs

from facepipe.calibration import open_set_threshold
from facepipe.errors import GalleryError, ModelMismatchError
from facepipe.matching import distance_from_similarity, person_scores, rank_persons
from facepipe.runtime.hashing import file_sha256  # noqa: F401  (re-exported for callers of the gallery)
from facepipe.search import EmbeddingIndex
from facepipe.types import Candidate

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
CALIBRATION_VERSION = 2  # bump when the calibration changes, so cached thresholds are recomputed
SHORTLIST_MIN = 20_000  # smaller galleries score every person exactly
SHORTLIST_FACES = 256  # larger ones: only persons owning one of the query's nearest faces


def default_gallery_path() -> Path:
    home = os.environ.get("FACEPIPE_HOME") or platformdirs.user_data_dir("facepipe")
    return Path(home) / "gallery.db"


@dataclass
class PersonInfo:
    name: str
    faces: int
    created: float


@dataclass
class Match:
    identity: str | None  # None: unknown
    similarity: float
    candidates: list[Candidate]
    distance: float | None = None  # for a distance metric: the distance behind `similarity`


def _create_private(path: Path) -> None:
    """Create an empty file with mode 0600 before SQLite opens it (SQLite copies it to -wal/-shm)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        os.close(fd)
    except FileExistsError:
        pass


class Gallery:
    def __init__(self, path: str | Path | None = None, create: bool = True):
        self.path = Path(path) if path else default_gallery_path()
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
            self.db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA busy_timeout = 60000")
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA foreign_keys = ON")
            if not self._has_schema():
                self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")
            if self._meta("format") is None:
                self._write(lambda: self._set_meta("format", FORMAT))
        except sqlite3.DatabaseError as exc:
            raise GalleryError(f"{self.path}: not a facepipe gallery ({exc})") from None
        self._cache: tuple[int, np.ndarray, np.ndarray, list[str], EmbeddingIndex] | None = None

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
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))

    def _bump_revision(self) -> None:
        self._set_meta("revision", str(self.revision + 1))

    @property
    def revision(self) -> int:
        return int(self._meta("revision") or 0)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- model binding -----------------------------------------------------------------------------
    @property
    def model(self) -> str | None:
        return self._meta("model")

    @property
    def metric(self) -> str:
        """How the model that filled this gallery compares embeddings (facepipe.matching.METRICS)."""
        return self._meta("metric") or "cosine"

    def check_model(self, fingerprint: str, embedding_size: int, metric: str = "cosine") -> None:
        """Bind an empty gallery to this model (and its metric), or refuse a model other than the one that filled it."""
        def bind():
            current = self._meta("model")
            if current is None or self.face_count() == 0:
                self._set_meta("model", fingerprint)
                self._set_meta("embedding_size", str(embedding_size))
                self._set_meta("metric", metric)
            elif current != fingerprint:
                raise ModelMismatchError(
                    f"{self.path}: this gallery holds embeddings from model {current!r}, not {fingerprint!r}; "
                    "use that model, another --gallery, or `facepipe enroll --reembed` to convert it")
        self._write(bind)

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

        def insert():
            self.db.execute("INSERT OR IGNORE INTO persons(name, created) VALUES (?, ?)", (name, time.time()))
            person_id = self.db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()[0]
            cur = self.db.execute(
                "INSERT OR IGNORE INTO faces(person_id, source, sha256, box, score, embedding, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (person_id, source, sha256, json.dumps([round(float(v), 2) for v in box]), float(score),
                 emb.tobytes(), time.time()))
            if cur.rowcount == 0:
                # Nothing added: drop the person row again if this call created it empty.
                self.db.execute("DELETE FROM persons WHERE id = ? AND NOT EXISTS "
                                "(SELECT 1 FROM faces WHERE person_id = ?)", (person_id, person_id))
                return "duplicate"
            self._bump_revision()
            return "added"
        return self._write(insert)

    def remove_person(self, name: str) -> int:
        def delete():
            row = self.db.execute("SELECT id FROM persons WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise GalleryError(f"{self.path}: no person named {name!r} in the gallery")
            n = self.db.execute("SELECT COUNT(*) FROM faces WHERE person_id = ?", (row[0],)).fetchone()[0]
            self.db.execute("DELETE FROM persons WHERE id = ?", (row[0],))
            self._bump_revision()
            return n
        return self._write(delete)

    def replace_embeddings(self, model: str, embeddings: dict[int, np.ndarray], metric: str = "cosine") -> None:
        """Swap every face's embedding for one from another model, in a single transaction."""
        def swap():
            for face_id, emb in embeddings.items():
                self.db.execute("UPDATE faces SET embedding = ? WHERE id = ?", (np.asarray(emb, np.float32).tobytes(), face_id))
            self._set_meta("model", model)
            self._set_meta("metric", metric)
            self._set_meta("embedding_size", str(len(next(iter(embeddings.values()))) if embeddings else 0))
            self.db.execute("DELETE FROM meta WHERE key LIKE 'calibration%'")
            self._bump_revision()
        self._write(swap)

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
            "SELECT f.id, p.name, f.source, f.sha256 FROM faces f JOIN persons p ON p.id = f.person_id ORDER BY f.id").fetchall()

    def _load(self):
        revision = self.revision
        if self._cache is None or self._cache[0] != revision:
            rows = self.db.execute("SELECT f.embedding, f.person_id FROM faces f ORDER BY f.id").fetchall()
            names = dict(self.db.execute("SELECT id, name FROM persons").fetchall())
            person_ids = sorted(names)
            position = {pid: i for i, pid in enumerate(person_ids)}
            size = int(self._meta("embedding_size") or 0)
            matrix = np.frombuffer(b"".join(r[0] for r in rows), dtype=np.float32).reshape(len(rows), size) \
                if rows else np.zeros((0, size), np.float32)
            labels = np.array([position[r[1]] for r in rows], dtype=np.int64)
            self._cache = (revision, matrix, labels, [names[p] for p in person_ids], EmbeddingIndex(matrix))
        return self._cache[1:]

    @property
    def search_kind(self) -> str:
        """How this gallery is searched now: "numpy" (exact) or "faiss-ivf"."""
        return self._load()[3].kind

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All embeddings (N x D), their person index (N), and the person names."""
        matrix, labels, names, _ = self._load()
        return matrix, labels, names

    # -- matching ----------------------------------------------------------------------------------
    def open_set_threshold(self, target_fpir: float = 0.01) -> float | None:
        """Threshold at which a stranger is named with probability ~target_fpir, from this gallery's
        own impostor scores (cached until the gallery changes). None when too few persons to say."""
        key = f"calibration:{CALIBRATION_VERSION}:{target_fpir}"
        cached = self._meta(key)
        if cached:
            revision, value = json.loads(cached)
            if revision == self.revision:
                return value
        matrix, labels, _, _ = self._load()
        value = open_set_threshold(matrix, labels, self.person_scores, target_fpir)
        try:
            self._write(lambda: self._set_meta(key, json.dumps([self.revision, value])))
        except sqlite3.OperationalError:
            pass  # read-only gallery: the value is still good for this run
        return value

    def person_scores(self, queries: np.ndarray) -> np.ndarray:
        """Q x P similarity of each query to each person (facepipe.matching.person_scores: every face
        of a person counts, not just the best). Beyond SHORTLIST_MIN faces only the persons owning one
        of the query's nearest faces are scored; the others get -inf."""
        matrix, labels, names, index = self._load()
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        n_persons = len(names)
        metric = self.metric
        if len(matrix) < SHORTLIST_MIN:
            return person_scores(queries, matrix, labels, n_persons, metric)
        out = np.full((len(queries), n_persons), -np.inf, dtype=np.float32)
        _, hits = index.search(queries, SHORTLIST_FACES)
        for row, (query, idx) in enumerate(zip(queries, hits)):
            persons = np.unique(labels[idx[idx >= 0]])
            faces = np.flatnonzero(np.isin(labels, persons))
            out[row, persons] = person_scores(query[None], matrix[faces], np.searchsorted(persons, labels[faces]),
                                              len(persons), metric)[0]
        return out

    def match(self, embeddings: np.ndarray, threshold: float, top_k: int = 5) -> list[Match]:
        """Per query: persons ranked by their person score (facepipe.matching.person_scores); unknown
        below threshold. For a distance metric each candidate also carries its distance (the similarity
        is 1 - d^2/2 of it: facepipe.matching.similarity_from_distance)."""
        matrix, labels, names, index = self._load()
        if len(matrix) == 0:
            return [Match(None, 0.0, []) for _ in range(len(embeddings))]
        out = []
        with_distance = self.metric != "cosine"
        for ranked in rank_persons(self.person_scores(np.atleast_2d(embeddings)), top_k):
            candidates = [Candidate(names[p], s, float(distance_from_similarity(s)) if with_distance else None)
                          for p, s in ranked]
            best = candidates[0]
            out.append(Match(best.identity if best.similarity >= threshold else None, best.similarity, candidates,
                             best.distance))
        return out


def best_per_person(index: EmbeddingIndex, labels: np.ndarray, query: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """The top_k persons by their best face. Exact: the first k distinct persons in the face ranking
    are the k best by max similarity, so fetch more faces only until k distinct persons appear."""
    n_persons = int(labels.max()) + 1 if len(labels) else 0
    want = min(top_k, n_persons)
    fetch = min(index.size, max(32, 16 * top_k))
    while True:
        sims, idx = index.search(query[None], fetch)
        ranked: dict[int, float] = {}
        for s, i in zip(sims[0], idx[0]):
            if i >= 0 and labels[i] not in ranked:
                ranked[int(labels[i])] = float(s)
        if len(ranked) >= want or fetch >= index.size:
            return list(ranked.items())[:top_k]
        fetch = min(index.size, fetch * 4)


def open_gallery(spec: str | Path | None = None, create: bool = True) -> Gallery:
    """The gallery a user named: None (the default file) or a file path."""
    return Gallery(spec, create=create)
