"""A `cluster` run over photos: embed the photos not seen before, then group the faces nobody has named.

1. every path is hashed; a photo whose content was clustered before is not embedded again (its faces are read
   back from the gallery), the others go through the same pipeline, workers and order as enroll/identify, and
   each is stored in its own transaction as soon as it is done (an interrupted run loses only what was in flight);
2. faces not yet in a cluster are first matched against the enrolled persons at the gallery's threshold (a match
   is simply identified, never clustered), then the rest join existing clusters or form new ones
   (facepipe.cluster.cluster_incremental: clusters that gain no face keep their ids).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from facepipe.cluster import DEFAULT, ClusterSettings, cluster_incremental
from facepipe.gallery.clusters import ClusterStore, StoredFace
from facepipe.pipeline.batch import ImageResult, ModelSpec, run_images
from facepipe.runtime.hashing import file_sha256
from facepipe.types import Face

# embeddings, [(photo sha256, face index)] -> the enrolled person each face is (None: nobody), rejections respected
Identifier = Callable[[np.ndarray, list[tuple[str, int]]], list[str | None]]


@dataclass
class ClusteredImage:
    """One input photo: its faces (identified where they match a person) with their face ids and clusters."""

    result: ImageResult
    photo: str | None = None
    face_ids: list[int] = field(default_factory=list)
    clusters: list[int | None] = field(default_factory=list)
    embedded: bool = False  # False: read back from an earlier run

    def to_json(self) -> dict:
        """identify --json's object, each face with "cluster" (null: in no cluster of two) and its "face_id"."""
        return {"image": str(self.result.path),
                "faces": [{**face.to_json(), "cluster": cluster, "face_id": face_id}
                          for face, cluster, face_id in zip(self.result.faces, self.clusters, self.face_ids)]}


@dataclass
class ClusterReport:
    images: list[ClusteredImage]  # the readable input photos, in input order
    errors: list[str]  # one line per photo that could not be read or decoded
    counts: dict[str, int]  # identified / joined / new_clusters (facepipe.pipeline.clustering.recluster)
    embedded: int = 0  # photos embedded by this run (the others were clustered before)

    def __repr__(self) -> str:
        """The counts, not every photo (print() of a report of thousands stays one line)."""
        return (f"ClusterReport(images={len(self.images)}, embedded={self.embedded}, errors={len(self.errors)}, "
                f"counts={self.counts})")


def stored_faces_as_faces(store: ClusterStore, photo: str) -> tuple[list[StoredFace], list[Face]]:
    rows = store.photo_faces(photo)
    _, matrix = store.embeddings("WHERE photo = ?", (photo,))
    faces = [Face(box=np.array(r.box, np.float32), score=r.score,
                  landmarks=None if r.landmarks is None else np.array(r.landmarks, np.float32), embedding=e)
             for r, e in zip(rows, matrix)]
    return rows, faces


def embed_new_photos(store: ClusterStore, paths: list[Path], spec: ModelSpec, workers: int = 1, pipeline=None,
                     on_item: Callable[[Path], None] | None = None, runner: Callable | None = None
                     ) -> tuple[dict[Path, str], list[ImageResult], int]:
    """Hash every path, embed every face of the photos not stored yet and store them. Returns each readable
    path's sha256, the error results (unreadable files, undecodable images) and how many photos were embedded.
    runner: (paths, spec) -> ImageResults in order, embedded elsewhere (`cluster --ray`); None: this machine."""
    hashes: dict[Path, str] = {}
    errors: list[ImageResult] = []
    todo: list[Path] = []
    for path in paths:
        try:
            hashes[path] = file_sha256(path)
        except OSError as exc:
            errors.append(ImageResult(path, error=f"{path}: cannot read ({exc.strerror})"))
            if on_item:
                on_item(path)
            continue
        if store.has_photo(hashes[path]) or hashes[path] in {hashes[p] for p in todo}:
            if on_item:
                on_item(path)
        else:
            todo.append(path)
    results = runner(todo, spec) if runner and todo else run_images(todo, spec, "all", workers, pipeline=pipeline)
    for path, result in zip(todo, results):
        if result.error:
            errors.append(result)
            del hashes[path]
        else:
            store.add_photo(hashes[path], str(path.resolve()), result.size, result.faces)
        if on_item:
            on_item(path)
    return hashes, errors, len(todo) - sum(1 for r in errors if r.path in todo)


def recluster(store: ClusterStore, metric: str, recognizer_threshold: float, identify: Identifier | None,
              settings: ClusterSettings = DEFAULT) -> dict[str, int]:
    """Identify the faces in no cluster yet, then cluster the rest incrementally; saves it in one transaction."""
    ids, matrix, clusters, photos, pending = store.state()
    persons: dict[int, str] = {}
    if identify is not None and pending.any():
        rows = np.flatnonzero(pending)
        index_of = {f.id: f.face_index for f in store.faces("WHERE f.person IS NULL AND f.cluster IS NULL")}
        names = identify(matrix[rows], [(photos[r], index_of[int(ids[r])]) for r in rows])
        persons = {int(ids[r]): name for r, name in zip(rows, names) if name is not None}
    keep = np.array([int(i) not in persons for i in ids], bool)
    ids, matrix, clusters, photos = ids[keep], matrix[keep], clusters[keep], photos[keep]
    position = {int(face_id): i for i, face_id in enumerate(ids)}
    forbidden = {(position[f], c) for f, c in store.exclusions() if f in position}
    before, first_new = clusters.copy(), store.next_cluster_id()
    after = cluster_incremental(matrix, clusters, photos, metric, recognizer_threshold, first_new, settings, forbidden)
    changed = after != before
    store.save_assignment(ids[changed], after[changed], persons)
    return {"identified": len(persons), "joined": int((changed & (after >= 0) & (after < first_new)).sum()),
            "new_clusters": len(set(after[after >= first_new].tolist()))}


def clustered_images(store: ClusterStore, paths: list[Path], hashes: dict[Path, str],
                     label: Callable[[list[Face], str], None] | None) -> list[ClusteredImage]:
    """The stored faces of each path, identified (label) where a person matches, with their clusters."""
    out = []
    for path in paths:
        photo = hashes.get(path)
        if photo is None:
            continue
        rows, faces = stored_faces_as_faces(store, photo)
        if label is not None and faces:
            label(faces, photo)
        out.append(ClusteredImage(ImageResult(path, faces), photo, [r.id for r in rows],
                                  [r.cluster for r in rows]))
    return out
