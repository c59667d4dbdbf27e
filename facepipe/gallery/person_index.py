"""The persisted index of persons of a SQLite gallery: a faiss IVF-Flat over the persons' centroids, beside the index
of faces (`gallery.db.index/persons-<random>.faiss`, tag `person_index` in `meta`), keyed by person id.

A large gallery shortlists persons through it: one ANN search over ~N/5 centroids instead of N faces and no owner
look-ups, then the shortlisted persons are scored exactly from their stored sums (centroids.py) by the one rule,
facepipe.openset.matching.person_scores. The same life cycle as the index of faces (index.py, sqlite_index.py):
memory-mapped, never rewritten in place, one builder at a time, in memory with one warning when it cannot be written.

What changed since the file was written is searched exactly beside it, from the current sums: the owners of faces
enrolled since (face ids above the tag's `max_id`) and the persons who lost faces but stayed (`persons_trimmed` in
`meta`: person id -> the change counter then). A person whose vector in the file is old may still be shortlisted
through it: harmless, every shortlisted person is re-scored from the current sums, and a removed one no longer
resolves. When those persons exceed the fold limit, the file is folded (remove_ids + add, no retraining); it is
rebuilt when missing, made by another model, or the gallery changed by more than `retrain_drift` since training.
For this index the tag's `count` is persons in the file and `trained_count` the gallery's face count at training.
"""
from __future__ import annotations

import json
import sqlite3

import numpy as np

from facepipe.gallery import index as ann
from facepipe.gallery.base import warn_once
from facepipe.gallery.centroids import centroids
from facepipe.gallery.ranking import SHORTLIST_PERSONS, Match, match_shortlist, shortlist_impostor_scores
from facepipe.gallery.search import train_ivf
from facepipe.openset.calibration import MAX_PROBES, StrangerScores, threshold_from_impostors

TAG = "person_index"
TRIMMED = "persons_trimmed"
PREFIX = "persons"
READ_CHUNK = 20_000


def index_vectors(cents: np.ndarray, metric: str) -> np.ndarray:
    """What the index holds per person: the unit centroid for cosine (inner product = the person score's order),
    the raw centroid for a distance metric (searched by L2)."""
    cents = np.ascontiguousarray(cents, dtype=np.float32)
    if metric == "cosine":
        cents = cents / np.maximum(np.linalg.norm(cents, axis=1, keepdims=True), 1e-12)
    return cents


def note_trimmed(gallery, person_id: int) -> None:
    """Inside the write transaction that took faces from a person who stays: remember them as changed."""
    trimmed = json.loads(gallery._meta(TRIMMED) or "{}")
    trimmed[str(person_id)] = gallery.changes
    gallery._set_meta(TRIMMED, json.dumps(trimmed))


class PersonIndexLifecycle:
    """Mixed into SqliteGallery with IndexLifecycle (whose policy attributes it shares)."""

    person_index_builds = 0
    person_index_folds = 0

    def person_index_tag(self) -> ann.IndexTag | None:
        return ann.IndexTag.from_json(self._meta(TAG))

    def _persons_changed(self, tag: ann.IndexTag) -> list[int]:
        """Persons whose centroid may differ from the file's: owners of faces added since, persons trimmed since."""
        changed = {r[0] for r in self.db.execute("SELECT DISTINCT person_id FROM faces WHERE id > ?", (tag.max_id,))}
        changed |= {int(p) for p, at in json.loads(self._meta(TRIMMED) or "{}").items() if at > tag.changes}
        return sorted(changed)

    def person_index_state(self, tag: ann.IndexTag | None = None) -> str:
        """"missing", "stale", "fold" or "fresh", by the face index's rules (sqlite_index.IndexLifecycle)."""
        tag = tag or self.person_index_tag()
        if tag is None or not tag.file or not (self.index_folder / tag.file).is_file():
            return "missing"
        if tag.model != self.model or tag.embedding_size != self.embedding_size:
            return "stale"
        if self.changes - tag.trained_changes > self.retrain_drift * max(tag.trained_count, 1):
            return "stale"
        changed = len(self._persons_changed(tag))
        persons = self.db.execute("SELECT COUNT(*) FROM persons").fetchone()[0]
        removed = max(0, tag.count - (persons - changed))
        limit = max(self.fold_limit_min, self.fold_limit_share * tag.count)
        return "fold" if changed + removed > limit else "fresh"

    def _person_vectors(self, where: str = "", params: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
        """(person ids, their index vectors) of the persons with faces matching `where`, read in chunks."""
        ids, blocks = [], []
        cur = self.db.execute(f"SELECT id, face_count, embedding_sum FROM persons WHERE face_count > 0 {where} "
                              "ORDER BY id", params)
        while rows := cur.fetchmany(READ_CHUNK):
            ids += [r[0] for r in rows]
            blocks.append(index_vectors(centroids([r[2] for r in rows], [r[1] for r in rows]), self.metric))
        size = self.embedding_size or 0
        return np.array(ids, np.int64), (np.concatenate(blocks) if blocks else np.zeros((0, size), np.float32))

    def _build_person_index(self):
        """Train an IVF on every person's centroid and fill it (inside one read snapshot)."""
        changes, max_id = self.changes, self.db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]
        ids, vectors = self._person_vectors()
        index = train_ivf(vectors, l2=self.metric != "cosine")
        index.add_with_ids(vectors, ids)
        self.person_index_builds += 1
        return index, ann.IndexTag("", self.model, self.embedding_size, changes, max_id, index.ntotal,
                                   self.face_count(), changes)

    def _fold_person_index(self, tag: ann.IndexTag):
        """remove_ids + add on the trained index: the persons removed and changed since, with their current vectors."""
        index = ann.load_for_update(self.index_folder, tag)
        changes, max_id = self.changes, self.db.execute("SELECT COALESCE(MAX(id), 0) FROM faces").fetchone()[0]
        changed = self._persons_changed(tag)
        live = np.array([r[0] for r in self.db.execute("SELECT id FROM persons WHERE face_count > 0")], np.int64)
        ann.remove_missing(index, np.setdiff1d(live, changed))
        ids, vectors = self._person_vectors(f"AND id IN ({','.join(map(str, changed))})") if changed else \
            (np.zeros(0, np.int64), None)
        if len(ids):
            index.add_with_ids(vectors, ids)
        self.person_index_folds += 1
        return index, ann.IndexTag("", tag.model, tag.embedding_size, changes, max_id, index.ntotal,
                                   tag.trained_count, tag.trained_changes)

    def _update_person_index(self, force_build: bool = False):
        """(in-memory index or None, tag), brought up to date under the build lock."""
        try:
            with ann.build_lock(self.index_folder):
                tag = self.person_index_tag()
                state = "missing" if force_build else self.person_index_state(tag)
                if state == "fresh":
                    return None, tag
                self.db.execute("BEGIN")  # one read snapshot (WAL: writers go on meanwhile)
                try:
                    index, tag = self._build_person_index() if state != "fold" else self._fold_person_index(tag)
                finally:
                    self.db.execute("COMMIT")
                return index, self._publish_person_index(index, tag)
        except (OSError, sqlite3.OperationalError):
            # A read-only gallery or folder: build in memory for this process; nothing is written.
            return self._build_person_index()

    def _publish_person_index(self, index, tag: ann.IndexTag) -> ann.IndexTag:
        """Write the file, switch the tag and forget the trimmed persons it covers (one transaction), sweep."""
        def switch():
            self._set_meta(TAG, tag.to_json())
            trimmed = {p: at for p, at in json.loads(self._meta(TRIMMED) or "{}").items() if at > tag.changes}
            self._set_meta(TRIMMED, json.dumps(trimmed))
        try:
            tag.file = ann.write_index(index, self.index_folder, PREFIX)
            self._write(switch)
        except (OSError, sqlite3.OperationalError) as exc:
            warn_once(self, "person_index", f"{self.path}: cannot save the index of persons ({exc}); it is kept in "
                                            "memory for this process and written again when the gallery changes")
            tag.file = ""
            return tag
        ann.sweep(self.index_folder, keep=tag.file, prefix=PREFIX)
        return tag

    def _person_search(self, n_persons: int) -> "PersonSearch":
        index, tag = ann.open_current(self.person_index_tag, self.person_index_state, self._update_person_index,
                                      lambda tag: ann.open_index(self.index_folder, tag))
        if self.nprobe:
            index.nprobe = min(self.nprobe, index.nlist)
        changed = self._persons_changed(tag)
        delta_ids, delta = self._person_vectors(f"AND id IN ({','.join(map(str, changed))})") if changed else \
            (np.zeros(0, np.int64), np.zeros((0, self.embedding_size or 0), np.float32))
        return PersonSearch(self.db, index, delta_ids, delta, n_persons, self.metric, self.embedding_size or 0)


class PersonSearch:
    """The person shortlist of a large SQLite gallery: the memory-mapped index of persons plus the persons changed
    since (exact), re-scored from the stored sums."""

    def __init__(self, db: sqlite3.Connection, index, delta_ids: np.ndarray, delta: np.ndarray, n_persons: int,
                 metric: str, embedding_size: int):
        self.db, self.index, self.metric, self.size = db, index, metric, embedding_size
        self.delta_ids, self.delta = delta_ids, delta
        self.n_persons = n_persons
        self.names: dict[int, str] = {}

    def search(self, query: np.ndarray, k: int) -> list[tuple[float, int]]:
        """Up to k (closeness, person id), nearest centroid first (closeness orders only; not the person score)."""
        q = np.ascontiguousarray(np.asarray(query, np.float32)[None])
        l2 = self.metric != "cosine"
        best: dict[int, float] = {}
        if self.index.ntotal:
            found, ids = self.index.search(q, min(k, self.index.ntotal))
            best.update((int(i), float(-d if l2 else d)) for d, i in zip(found[0], ids[0]) if i >= 0)
        if len(self.delta_ids):
            near = -((self.delta - q) ** 2).sum(1) if l2 else self.delta @ q[0]
            for j in np.argsort(-near, kind="stable")[:k]:
                pid = int(self.delta_ids[j])
                best[pid] = max(best.get(pid, -np.inf), float(near[j]))
        return sorted(((s, p) for p, s in best.items()), key=lambda h: -h[0])[:k]

    def centroids_of(self, person_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The persons' centroids from their stored sums (one row each), each one's position in `person_ids`;
        persons removed since drop out."""
        position = {p: i for i, p in enumerate(person_ids)}
        rows = self.db.execute(f"SELECT id, name, face_count, embedding_sum FROM persons WHERE face_count > 0 AND id "
                               f"IN ({','.join('?' * len(person_ids))})", person_ids).fetchall()
        self.names = {r[0]: r[1] for r in rows}
        return (centroids([r[3] for r in rows], [r[2] for r in rows]).reshape(len(rows), self.size),
                np.array([position[r[0]] for r in rows], np.int64))

    def match(self, embeddings, threshold: float, top_k: int) -> list[Match]:
        return match_shortlist(self.search, self.centroids_of, embeddings, threshold, top_k, self.metric,
                               name_of=lambda p: self.names[p], shortlist=SHORTLIST_PERSONS)

    def calibrate(self, target_fpir: float, strangers: StrangerScores | None = None) -> float | None:
        """Strangers simulated by a fixed sample of enrolled faces, each through the same shortlist as a query
        (with `strangers` below MIN_PERSONS persons: calibration.threshold_from_impostors)."""
        total = self.db.execute("SELECT COUNT(*) FROM faces").fetchone()[0]
        rows = self.db.execute("SELECT person_id, embedding FROM faces WHERE id IN (SELECT id FROM faces ORDER BY "
                               "(id * 2654435761) % 4294967296 LIMIT ?)", (min(total, MAX_PROBES),)).fetchall()
        probes = np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.size)
        owners = [r[0] for r in rows]
        scores = shortlist_impostor_scores(probes, owners, self.search, self.centroids_of, self.metric,
                                           shortlist=SHORTLIST_PERSONS)
        return threshold_from_impostors(scores, self.n_persons, target_fpir, owners, strangers)
