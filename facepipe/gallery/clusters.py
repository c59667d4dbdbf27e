"""Faces nobody has named yet, and the clusters they form, in the SQLite gallery's own file.

- `cluster_photos`: every photo a `cluster` run has looked at, by content hash (a rerun embeds only new ones);
- `cluster_faces`: every face found in them (box, landmarks, embedding), its cluster (NULL: in none), the
  enrolled person it was identified as instead (not clustered then), and a face id that is never reused;
- `clusters`: ids only grow (a high-water mark in `meta`), so an id a person has seen never names another group;
- `rejections`: "this face is not this person" (a face of a photo, or every face of it), which identify and
  later runs respect; `cluster_exclusions`: a face taken out of a cluster never goes back into it.
Naming a cluster enrolls its faces as a person of the gallery (`faces` rows keyed `<photo sha256>#<face>`, so
two faces of one group photo may belong to two persons). Each step is one transaction: a killed run loses at
most the photo it was writing. Milvus galleries hold no clusters (`ClusterStore` refuses them in one line).

The faces of clusters nobody has named are the gallery's strangers while it has few persons
(`unnamed_cluster_faces`, facepipe.openset.calibration.stranger_scores); every write that changes them bumps
`cluster_revision` in `meta`, which the cached calibration is keyed by. What the store holds for a face (a person,
or a cluster nobody has named) is what every view says of it (`StoredFace.identity`).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np

from facepipe.errors import GalleryError
from facepipe.gallery.sqlite import SqliteGallery
from facepipe.openset.calibration import MAX_PROBES

SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_photos (
    sha256 TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cluster_faces (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    photo TEXT NOT NULL REFERENCES cluster_photos(sha256) ON DELETE CASCADE,
    face_index INTEGER NOT NULL,
    box TEXT NOT NULL,
    score REAL NOT NULL,
    landmarks TEXT,
    embedding BLOB NOT NULL,
    cluster INTEGER,
    person TEXT,
    UNIQUE (photo, face_index)
);
CREATE INDEX IF NOT EXISTS cluster_faces_cluster ON cluster_faces(cluster);
CREATE TABLE IF NOT EXISTS rejections (
    photo TEXT NOT NULL,
    face_index INTEGER NOT NULL,  -- -1: every face of the photo
    person TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (photo, face_index, person)
);
CREATE TABLE IF NOT EXISTS cluster_exclusions (
    face INTEGER NOT NULL,
    cluster INTEGER NOT NULL,
    PRIMARY KEY (face, cluster)
);
"""
EVERY_FACE = -1


@dataclass
class StoredFace:
    id: int
    photo: str
    face_index: int
    source: str
    box: list[float]
    score: float
    landmarks: list | None
    cluster: int | None
    person: str | None

    @property
    def identity(self) -> str | None:
        """What every view says of a decided face: its person, or nobody while its cluster has no name (naming or
        merging the cluster is the user's to do; identify and a cluster rerun do not name it behind them)."""
        return self.person

    def same_face(self, box) -> bool:
        """Whether a face detected in this photo again is this one (the same detector finds the same boxes)."""
        a, b = np.asarray(self.box, np.float64), np.asarray(box, np.float64)
        inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
        union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
        return bool(union > 0 and inter / union >= 0.5)


def face_key(photo: str, face_index: int) -> str:
    """The gallery's `faces.sha256` of a named cluster face: one photo may give several persons a face."""
    return f"{photo}#{face_index}"


def unnamed_cluster_faces(gallery: SqliteGallery, limit: int = MAX_PROBES) -> tuple[np.ndarray, np.ndarray]:
    """The faces of clusters nobody has named (a fixed sample of `limit`) and their clusters: people who are not any
    enrolled person, as far as the user has said (a cluster may still be a named person's second look, which only
    makes the calibration stricter). None in a gallery without cluster tables."""
    size = gallery.embedding_size or 0
    if not ClusterStore.present(gallery) or not size:
        return np.zeros((0, size), np.float32), np.zeros(0, np.int64)
    rows = gallery.db.execute("SELECT cluster, embedding FROM cluster_faces WHERE cluster IS NOT NULL AND person IS "
                              "NULL AND length(embedding) = ? ORDER BY (id * 2654435761) % 4294967296 LIMIT ?",
                              (4 * size, limit)).fetchall()
    return (np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), size),
            np.array([r[0] for r in rows], np.int64))


class ClusterStore:
    """The cluster tables of one SQLite gallery (facepipe.gallery.sqlite.SqliteGallery)."""

    def __init__(self, gallery):
        if not isinstance(gallery, SqliteGallery):
            raise GalleryError(f"{gallery.path}: clusters need a SQLite gallery (this one is {type(gallery).__name__})")
        self.gallery = gallery
        self.db = gallery.db
        if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'cluster_faces'").fetchone() is None:
            self.db.executescript("BEGIN IMMEDIATE;" + SCHEMA + "COMMIT;")

    @staticmethod
    def present(gallery) -> bool:
        """Whether this gallery has cluster tables (read only: identify on a read-only gallery must not write)."""
        return isinstance(gallery, SqliteGallery) and gallery.db.execute(
            "SELECT 1 FROM sqlite_master WHERE name = 'rejections'").fetchone() is not None

    def _write(self, fn):
        return self.gallery._write(fn)

    def _strangers_changed(self) -> None:
        """Inside a write: the unnamed clusters changed, so the calibration that uses them as strangers is stale."""
        self.gallery._set_meta("cluster_revision", str(int(self.gallery._meta("cluster_revision") or 0) + 1))

    def face_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM cluster_faces").fetchone()[0]

    def has_faces(self) -> bool:
        return self.db.execute("SELECT 1 FROM cluster_faces LIMIT 1").fetchone() is not None

    # -- photos and faces -------------------------------------------------------------------------
    def has_photo(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM cluster_photos WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def add_photo(self, sha256: str, source: str, size: tuple[int, int], faces) -> None:
        """A photo and all its faces (Face objects with embeddings), in one transaction."""
        def insert():
            if self.has_photo(sha256):
                return
            self.db.execute("INSERT INTO cluster_photos VALUES (?, ?, ?, ?, ?)",
                            (sha256, source, int(size[0]), int(size[1]), time.time()))
            for i, face in enumerate(faces):
                landmarks = None if face.landmarks is None else json.dumps(np.round(face.landmarks, 2).tolist())
                self.db.execute(
                    "INSERT INTO cluster_faces(photo, face_index, box, score, landmarks, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (sha256, i, json.dumps([round(float(v), 2) for v in face.box]), float(face.score), landmarks,
                     np.asarray(face.embedding, np.float32).tobytes()))
        self._write(insert)

    def faces(self, where: str = "", params: tuple = ()) -> list[StoredFace]:
        rows = self.db.execute(
            "SELECT f.id, f.photo, f.face_index, p.source, f.box, f.score, f.landmarks, f.cluster, f.person "
            f"FROM cluster_faces f JOIN cluster_photos p ON p.sha256 = f.photo {where} ORDER BY f.id", params)
        return [StoredFace(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6] and json.loads(r[6]), r[7], r[8])
                for r in rows]

    def photo_faces(self, sha256: str) -> list[StoredFace]:
        return self.faces("WHERE f.photo = ?", (sha256,))

    def decided_faces(self, sha256: str) -> dict[int, StoredFace]:
        """The photo's faces the store has said who they are, by face index: in a cluster (someone nobody has named
        yet), or a person of the gallery (named, or identified by a run). A face alone is still open (each run
        matches it against the persons again), and so is one whose person was removed since."""
        return {f.face_index: f for f in self.faces("WHERE f.photo = ? AND (f.cluster IS NOT NULL OR f.person IN "
                                                    "(SELECT name FROM persons))", (sha256,))}

    def embeddings(self, where: str = "", params: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """(face ids, N x D embeddings) of the cluster faces matching `where`."""
        size = self.gallery.embedding_size or 0
        rows = self.db.execute(f"SELECT id, embedding FROM cluster_faces {where} ORDER BY id", params).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), size)
        return np.array([r[0] for r in rows], np.int64), matrix

    def state(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every face not identified as an enrolled person: ids, embeddings, clusters (-1: none), photo keys,
        and which of them are still to be matched against the persons (no cluster yet)."""
        ids, matrix = self.embeddings("WHERE person IS NULL")
        rows = self.db.execute("SELECT id, cluster, photo FROM cluster_faces WHERE person IS NULL ORDER BY id")
        meta = rows.fetchall()
        clusters = np.array([-1 if r[1] is None else r[1] for r in meta], np.int64)
        photos = np.array([r[2] for r in meta], dtype=object)
        return ids, matrix, clusters, photos, clusters < 0

    def exclusions(self) -> set[tuple[int, int]]:
        return set(self.db.execute("SELECT face, cluster FROM cluster_exclusions").fetchall())

    def next_cluster_id(self) -> int:
        return int(self.gallery._meta("last_cluster_id") or 0) + 1

    def save_assignment(self, ids: np.ndarray, clusters: np.ndarray, persons: dict[int, str]) -> None:
        """New cluster ids (-1: none) for faces, and the faces identified as enrolled persons, in one transaction."""
        def write():
            high = int(self.gallery._meta("last_cluster_id") or 0)
            for face_id, cluster in zip(ids.tolist(), clusters.tolist()):
                self.db.execute("UPDATE cluster_faces SET cluster = ? WHERE id = ?",
                                (None if cluster < 0 else cluster, face_id))
                high = max(high, cluster)
            for face_id, name in persons.items():
                self.db.execute("UPDATE cluster_faces SET person = ?, cluster = NULL WHERE id = ?", (name, face_id))
            self.gallery._set_meta("last_cluster_id", str(high))
            if len(ids) or persons:
                self._strangers_changed()
        self._write(write)

    # -- what people look at ----------------------------------------------------------------------
    def clusters(self) -> list[tuple[int, int]]:
        """(cluster id, faces), largest first."""
        return self.db.execute("SELECT cluster, COUNT(*) FROM cluster_faces WHERE cluster IS NOT NULL "
                               "GROUP BY cluster ORDER BY COUNT(*) DESC, cluster").fetchall()

    def members(self, cluster: int) -> list[StoredFace]:
        found = self.faces("WHERE f.cluster = ?", (cluster,))
        if not found:
            raise GalleryError(f"{self.gallery.path}: no cluster {cluster}")
        return found

    def face(self, face_id: int) -> StoredFace:
        found = self.faces("WHERE f.id = ?", (face_id,))
        if not found:
            raise GalleryError(f"{self.gallery.path}: no clustered face {face_id}")
        return found[0]

    # -- corrections ------------------------------------------------------------------------------
    def merge(self, into: int, other: int) -> int:
        """Every face of `other` joins `into` (refused when both hold a face of one photo). Returns faces moved."""
        if into == other:
            raise GalleryError(f"cannot merge cluster {into} with itself")
        a, b = self.members(into), self.members(other)
        shared = {f.photo for f in a} & {f.photo for f in b}
        if shared:
            source = next(f.source for f in b if f.photo in shared)
            raise GalleryError(f"clusters {into} and {other} both hold a face of {source}: two faces of one photo "
                               "are two people (split one of them first)")
        def write():
            self.db.execute("UPDATE cluster_faces SET cluster = ? WHERE cluster = ?", (into, other))
            self._strangers_changed()  # one person fewer among them
        self._write(write)
        return len(b)

    def split(self, cluster: int, face_ids: list[int]) -> int | None:
        """Take faces out of a cluster: two or more form a new cluster (its id returned), one stays alone.
        Neither goes back into the old cluster in a later run."""
        members = {f.id for f in self.members(cluster)}
        missing = [i for i in face_ids if i not in members]
        if missing or not face_ids:
            raise GalleryError(f"face {missing[0] if missing else '(none)'} is not in cluster {cluster}")
        if len(set(face_ids)) == len(members):
            raise GalleryError(f"those are all the faces of cluster {cluster}: nothing to split from")

        def write():
            new = None
            if len(face_ids) >= 2:
                new = self.next_cluster_id()
                self.gallery._set_meta("last_cluster_id", str(new))
            for face_id in face_ids:
                self.db.execute("UPDATE cluster_faces SET cluster = ? WHERE id = ?", (new, face_id))
                self.db.execute("INSERT OR IGNORE INTO cluster_exclusions VALUES (?, ?)", (face_id, cluster))
            if len(members) - len(set(face_ids)) == 1:  # the one face left is in no cluster of two any more
                self.db.execute("UPDATE cluster_faces SET cluster = NULL WHERE cluster = ?", (cluster,))
            self._strangers_changed()
            return new
        return self._write(write)

    def name(self, cluster: int, person: str) -> int:
        """Enroll every face of the cluster as `person` (new or existing); the cluster is gone after.
        Faces rejected for that person stay out (and leave the cluster). Returns faces enrolled."""
        members = self.members(cluster)
        rejected = self.rejected_for(person)
        keep = [f for f in members if (f.photo, f.face_index) not in rejected and (f.photo, EVERY_FACE) not in rejected]
        ids = [f.id for f in keep]
        _, matrix = self.embeddings(f"WHERE id IN ({','.join('?' * len(ids))})", tuple(ids)) if ids else (None, None)

        def write():
            for face, embedding in zip(keep, matrix if matrix is not None else []):
                self.gallery._insert_face(person, face.source, face_key(face.photo, face.face_index), face.box,
                                          face.score, embedding)
                self.db.execute("UPDATE cluster_faces SET cluster = NULL, person = ? WHERE id = ?", (person, face.id))
            self.db.execute("UPDATE cluster_faces SET cluster = NULL WHERE cluster = ?", (cluster,))
            self._strangers_changed()  # its faces are a person's now, no longer strangers
        self._write(write)
        return len(keep)

    def reject(self, person: str, photo: str, face_index: int = EVERY_FACE) -> int:
        """"Not this person": the face (or every face of the photo) is removed from the person if it was
        enrolled there, and never named as them again. Returns gallery faces removed."""
        def write():
            self.db.execute("INSERT OR IGNORE INTO rejections VALUES (?, ?, ?, ?)",
                            (photo, face_index, person, time.time()))
            keys = [photo, face_key(photo, face_index)] if face_index != EVERY_FACE else [photo]
            pattern = f"{photo}#%" if face_index == EVERY_FACE else None
            removed = self.gallery._delete_faces_of(person, keys, pattern)
            self.db.execute("UPDATE cluster_faces SET person = NULL WHERE person = ? AND photo = ?"
                            + ("" if face_index == EVERY_FACE else " AND face_index = ?"),
                            (person, photo) if face_index == EVERY_FACE else (person, photo, face_index))
            self._strangers_changed()
            return removed
        return self._write(write)

    def rejected_for(self, person: str) -> set[tuple[str, int]]:
        return set(self.db.execute("SELECT photo, face_index FROM rejections WHERE person = ?", (person,)).fetchall())

    def rejected_persons(self, photo: str, face_index: int) -> set[str]:
        """The persons this face was said not to be."""
        return {r[0] for r in self.db.execute("SELECT person FROM rejections WHERE photo = ? AND face_index IN (?, ?)",
                                              (photo, face_index, EVERY_FACE))}

    def has_rejections(self) -> bool:
        return self.db.execute("SELECT 1 FROM rejections LIMIT 1").fetchone() is not None
