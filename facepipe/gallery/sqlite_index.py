"""The life cycle of a SQLite gallery's persisted ANN index: when the file is fresh, folded or rebuilt, and the
search over it (the memory-mapped IVF file, plus the faces enrolled since, minus the faces removed since).

The files themselves (write, open, sweep, lock) are index.py's; the storage is sqlite.py's. IndexLifecycle is
mixed into SqliteGallery: it uses the gallery's connection (`db`), metadata and embeddings.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

from facepipe.gallery import index as ann
from facepipe.gallery.base import warn_once
from facepipe.gallery.centroids import centroids
from facepipe.gallery.ranking import Match, match_shortlist, shortlist_impostor_scores
from facepipe.gallery.search import exact_search, ivf_lists, train_ivf
from facepipe.openset.calibration import MAX_PROBES, StrangerScores, threshold_from_impostors

READ_CHUNK = 20_000  # rows read from SQLite at a time (as sqlite.py)


class IndexLifecycle:
    """The index policy and its moves; SqliteGallery provides db, path, _meta/_set_meta/_write, face_count,
    _read_embeddings, model, embedding_size, changes, metric and _cache."""

    # Index policy (instance attributes may override them, e.g. in tests).
    fold_limit_min = 1000      # faces outside the index file before they are folded into it ...
    fold_limit_share = 0.01    # ... or this share of the gallery, whichever is larger
    retrain_drift = 0.25       # changes since the centroids were trained, as a share of that size: retrain
    nprobe: int | None = None  # None: the index's default (search.default_nprobe)
    index_builds = 0           # full rebuilds this object did (tests assert on it)
    index_folds = 0

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
        index, tag = ann.open_current(self.index_tag, self.index_state, self._update_index,
                                      lambda tag: ann.open_index(self.index_folder, tag, self.nprobe))
        ids, pids, matrix = self._read_embeddings("WHERE id > ?", (tag.max_id,))
        names = dict(self.db.execute("SELECT id, name FROM persons"
                                     " WHERE id IN (SELECT person_id FROM faces WHERE id > ?)", (tag.max_id,)))
        n_persons = self.db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        person_sums = int(self._meta("format") or 1) >= 2
        search = AnnSearch(self.db, index, tag, ids, [names[p] for p in pids], matrix, n_persons, self.metric,
                           person_sums)
        if person_sums:  # the person shortlist from the index of persons (person_index.py)
            search.person_search = self._person_search(n_persons)
        return search

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
        """Write the file, switch the tag to it (one transaction), then sweep the old files. When that cannot be
        done (a full disk, a read-only folder), the index just built serves this process from memory until the
        gallery changes, with one warning: a search never fails for want of disk."""
        try:
            tag.file = ann.write_index(index, self.index_folder)
            self._write(lambda: self._set_meta("index", tag.to_json()))
        except (OSError, sqlite3.OperationalError) as exc:
            warn_once(self, "index", f"{self.path}: cannot save the search index ({exc}); it is kept in memory "
                                     "for this process and written again when the gallery changes")
            tag.file = ""
            return tag
        ann.sweep(self.index_folder, keep=tag.file)
        return tag


class AnnSearch:
    """Large galleries: the memory-mapped IVF file + the faces enrolled since (exact) - the faces removed since."""
    kind = "faiss-ivf (persisted)"

    def __init__(self, db: sqlite3.Connection, index, tag: ann.IndexTag, delta_ids: np.ndarray,
                 delta_names: list[str], delta: np.ndarray, n_persons: int, metric: str = "cosine",
                 person_sums: bool = True):
        self.db, self.index, self.tag, self.metric = db, index, tag, metric
        self.person_sums = person_sums  # False: a read-only format-1 file, scored from its faces
        self.delta_ids, self.delta_names, self.delta = delta_ids, delta_names, delta
        self.n_faces = index.ntotal + len(delta_ids)
        self.n_persons = n_persons
        self.person_search = None  # set: persons are shortlisted through the index of persons instead of the faces

    def faces_of(self, persons: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """What scores these persons: their centroids from the index of persons (one row each, no face read; the
        centroid score of a centroid alone is the person's centroid score), each one's position in `persons`."""
        position = {name: i for i, name in enumerate(persons)}
        if self.person_sums:
            rows = self.db.execute(f"SELECT name, face_count, embedding_sum FROM persons WHERE face_count > 0 AND "
                                   f"name IN ({','.join('?' * len(persons))})", persons).fetchall()
            return (centroids([r[2] for r in rows], [r[1] for r in rows]).reshape(len(rows), self.tag.embedding_size),
                    np.array([position[r[0]] for r in rows], np.int64))
        rows = self.db.execute(
            f"SELECT p.name, f.embedding FROM faces f JOIN persons p ON p.id = f.person_id "
            f"WHERE p.name IN ({','.join('?' * len(persons))})", persons).fetchall()
        matrix = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.tag.embedding_size)
        return matrix, np.array([position[r[0]] for r in rows], np.int64)

    def match(self, embeddings, threshold: float, top_k: int) -> list[Match]:
        if self.person_search is not None:
            return self.person_search.match(embeddings, threshold, top_k)
        return match_shortlist(self.search, self.faces_of, embeddings, threshold, top_k, self.metric)

    def calibrate(self, target_fpir: float, strangers: StrangerScores | None = None) -> float | None:
        """Strangers simulated by a sample of enrolled faces, each scored through the same shortlist as a query
        (with `strangers` below MIN_PERSONS persons: calibration.threshold_from_impostors)."""
        if self.person_search is not None:
            return self.person_search.calibrate(target_fpir, strangers)
        total = self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        rows = self.db.execute("SELECT p.name, f.embedding FROM faces f JOIN persons p ON p.id = f.person_id "
                               "WHERE f.id IN (SELECT id FROM faces ORDER BY (id * 2654435761) % 4294967296 LIMIT "
                               "?)",  # a fixed sample
                               (min(total, MAX_PROBES),)).fetchall()
        probes = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.tag.embedding_size)
        owners = [r[0] for r in rows]
        scores = shortlist_impostor_scores(probes, owners, self.search, self.faces_of, self.metric)
        return threshold_from_impostors(scores, self.n_persons, target_fpir, owners, strangers)

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
