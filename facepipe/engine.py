"""The one object that identifies: models + gallery + threshold policy, for every front end.

`facepipe.open(...)` returns an Engine. The CLI, the HTTP service and Python callers all go through it, so
the model check against the gallery, the choice of threshold and the copying of matches onto faces live here
and nowhere else. Models and the gallery are opened on first use: `fp.persons()` loads no model, and
`fp.detect()` needs no gallery.

Thread safety: detect / identify / match / verify may run in several threads at once, and one thread may enroll
while others identify. Gallery access is serialised by a lock (searches are fast; detection and embedding, the
slow part, run outside it); a detector that is not thread-safe (dlib's) is called under its own lock.
"""
from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from facepipe.errors import FacepipeError, GalleryError, ModelMismatchError
from facepipe.gallery.base import Gallery
from facepipe.names import person_name
from facepipe.openset.matching import pairwise_similarity
from facepipe.openset.policy import MIN_PERSONS, TARGET_FPIR, identify_threshold, verify_threshold
from facepipe.pipeline.batch import ImageResult, ModelSpec, largest_first, load_spec_detector, run_images
from facepipe.pipeline.face_pipeline import FacePipeline
from facepipe.runtime.image import ImageLike, load_image
from facepipe.runtime.loader import load_recognizer
from facepipe.types import Face


@dataclass
class Verification:
    similarity: float
    threshold: float
    threshold_source: str
    same_person: bool
    faces: tuple[Face, Face] = field(repr=False)  # their landmarks and embeddings: not for print()


def content_hash(image: ImageLike) -> str | None:
    """sha256 of what identifies a photo's content: a file's bytes, uploaded bytes, or an array's pixels."""
    from facepipe.runtime.hashing import file_sha256

    if isinstance(image, (str, Path)):
        try:
            return file_sha256(image)
        except OSError as exc:
            raise FacepipeError(f"{image}: cannot read ({exc.strerror})") from None
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(image)).hexdigest()
    pixels = load_image(image)
    return hashlib.sha256(str(pixels.shape).encode() + pixels.tobytes()).hexdigest()


def _without_rejected(candidates: list, rejected: set[str], threshold: float) -> tuple[list, str | None]:
    """The candidates left once "not this person" answers are taken out, and the name they give at threshold."""
    kept = [c for c in candidates if c.identity not in rejected]
    return kept, (kept[0].identity if kept and kept[0].similarity >= threshold else None)


def _file_hash(path: Path) -> str | None:
    from facepipe.runtime.hashing import file_sha256

    try:
        return file_sha256(path)
    except OSError:
        return None


class _Serialised:
    """The wrapped object's attributes and calls, one thread at a time (an SQLite connection is not
    safe to use from two threads at once; its searches are fast, so a lock costs little)."""

    def __init__(self, target, lock: threading.RLock):
        self._target, self._lock = target, lock

    def __getattr__(self, name: str):
        with self._lock:
            attr = getattr(self._target, name)  # properties (e.g. .model) run their query here
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            with self._lock:
                return attr(*args, **kwargs)
        return call


class Engine:
    """Detect, identify, enroll and verify with one set of models and one gallery."""

    def __init__(self, gallery: str | Path | None = None, detector: str | Path | None = None,
                 recognizer: str | Path | None = None, device: str = "cpu", threads: int | None = None,
                 detect_threshold: float | None = None, second_chance: bool = True):
        self.spec = ModelSpec(None if detector is None else str(detector),
                              None if recognizer is None else str(recognizer),
                              device, threads, detect_threshold, second_chance)
        self.gallery_spec = gallery
        self._gallery = None
        self._detector = None
        self._recognizer = None
        self._lock = threading.RLock()  # the gallery, and loading things once
        self._detect_lock = threading.Lock()

    # -- what it is made of (opened on first use) ----------------------------------------------------
    @property
    def detector(self):
        """The detector (loaded once, on first use)."""
        if self._detector is None:
            with self._lock:
                if self._detector is None:
                    self._detector = load_spec_detector(self.spec)
        return self._detector

    @property
    def recognizer(self):
        """The recognizer (loaded once, on first use)."""
        if self._recognizer is None:
            with self._lock:
                if self._recognizer is None:
                    self._recognizer = load_recognizer(self.spec.recognizer, self.spec.device, self.spec.threads)
        return self._recognizer

    @property
    def pipeline(self) -> FacePipeline:
        return FacePipeline(self.detector, self.recognizer)

    def gallery(self, create: bool = False) -> Gallery:
        """The gallery (opened on first use). create=True makes an empty one where there is none."""
        with self._lock:
            if self._gallery is None:
                from facepipe.gallery import open_gallery

                self._gallery = _Serialised(open_gallery(self.gallery_spec, create=create), self._lock)
            return self._gallery

    def close(self) -> None:
        with self._lock:
            if self._gallery is not None:
                self._gallery.close()
                self._gallery = None

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- detect / embed ------------------------------------------------------------------------------
    def detect(self, image: ImageLike, threshold: float | None = None, small_faces: bool = True,
               second_chance: bool = True) -> list[Face]:
        """Every face: box, score, 5 landmarks (original pixels), best first. small_faces=False: skip the
        detector's extra passes for faces under ~80 px where it has any (dlib's upsampling; video frames).
        second_chance=False: skip the detector's second chance on an image where it found no face (dlib's)."""
        rgb = load_image(image)
        return self._detect(rgb, threshold, small_faces, second_chance)

    def _detect(self, rgb: np.ndarray, threshold: float | None = None, small_faces: bool = True,
                second_chance: bool = True) -> list[Face]:
        threshold = self.spec.detect_threshold if threshold is None else threshold
        detector = self.detector
        if hasattr(detector, "with_passes"):
            detector = detector.with_passes(small_faces, second_chance)
        pipeline = FacePipeline(detector)
        if getattr(detector, "thread_safe", False):
            return pipeline.detect(rgb, threshold)
        with self._detect_lock:
            return pipeline.detect(rgb, threshold)

    def embed(self, image: ImageLike, faces: list[Face]) -> list[Face]:
        """Fill face.embedding for the given faces of this image (in place) and return them."""
        return self.pipeline.embed(load_image(image), faces)

    # -- the gallery's side --------------------------------------------------------------------------
    def _checked_gallery(self, bind: bool = False) -> Gallery:
        """The gallery, after making sure it holds this recognizer's embeddings (bind=True: claim an empty one)."""
        store = self.gallery(create=bind)  # first: a missing gallery is said before any model loads
        recognizer = self.recognizer
        if bind:
            store.check_model(recognizer.fingerprint, recognizer.embedding_size, recognizer.metric)
        elif store.face_count() == 0:
            raise GalleryError(f"{store.path}: the gallery is empty (run `facepipe enroll` first)")
        elif store.model != recognizer.fingerprint:
            raise ModelMismatchError(
                f"{store.path}: gallery made with model {store.model!r}, but the recognizer is "
                f"{recognizer.fingerprint!r}; "
                "use that model or re-enroll with --reembed")
        return store

    def threshold(self, override: float | None = None):
        """The similarity a face needs to be named, and why (facepipe.openset.policy.Threshold)."""
        return identify_threshold(self.recognizer, self._checked_gallery(), override)

    def match(self, embeddings: np.ndarray | Sequence[np.ndarray], top_k: int = 3, threshold: float | None = None):
        """Per embedding: the best persons (candidates) and the identity, or None below the threshold."""
        value = self.threshold(threshold).value
        return self._checked_gallery().match(np.atleast_2d(np.asarray(embeddings, dtype=np.float32)), value, top_k)

    def label(self, faces: list[Face], top_k: int = 3, threshold: float | None = None,
              photo: str | None = None) -> list[Face]:
        """Copy the gallery's answer onto faces that carry embeddings (in place). photo: the content hash of
        the faces' image, so that "not this person" (`reject`) is respected face by face, and a face the cluster
        store has decided is what the store says (facepipe.gallery.clusters.StoredFace.identity)."""
        if not faces:
            return faces
        record = self._cluster_record() if photo is not None else None
        decided = record.decided_faces(photo) if record is not None else {}
        value = self.threshold(threshold).value
        asked = top_k + (3 if record is not None else 0)  # room for the candidates a rejection removes
        for i, (face, m) in enumerate(zip(faces, self.match([f.embedding for f in faces], asked, threshold))):
            identity, candidates = m.identity, m.candidates
            rejected = record.rejected_persons(photo, i) if record is not None else set()
            if rejected:
                candidates, identity = _without_rejected(candidates, rejected, value)
            stored = decided.get(i)
            if stored is not None and stored.same_face(face.box):
                identity = stored.identity
            best = next((c for c in candidates if c.identity == identity), candidates[0] if candidates else None)
            face.identity, face.candidates = identity, candidates[:top_k]
            face.similarity, face.distance = (best.similarity, best.distance) if best is not None else \
                (m.similarity, m.distance)
        return faces

    def _cluster_record(self):
        """The gallery's cluster store when it has anything to say of a photo's faces (SQLite only): "not this
        person" answers, or faces it has decided; else None."""
        from facepipe.gallery.clusters import ClusterStore

        target = self.gallery()._target
        if not ClusterStore.present(target):
            return None
        store = _Serialised(ClusterStore(target), self._lock)
        return store if store.has_rejections() or store.has_faces() else None

    # -- identify --------------------------------------------------------------------------------------
    def identify(self, image: ImageLike, top_k: int = 3, threshold: float | None = None) -> list[Face]:
        """Every face with its identity (None: unknown), similarity and top-k candidates."""
        self._checked_gallery()  # before any work: a missing or foreign gallery is the first thing to say
        rgb = load_image(image)
        faces = self.pipeline.embed(rgb, self._detect(rgb))
        photo = content_hash(image) if faces and self._cluster_record() is not None else None
        return self.label(faces, top_k, threshold, photo)

    def identify_paths(self, paths: list[Path], top_k: int = 3, threshold: float | None = None, workers: int = 1,
                       keep_images: bool = False) -> Iterator[ImageResult]:
        """identify() over many files (worker processes when asked), results in input order; a bad file is a
        result with an error, never an exception."""
        self._checked_gallery()
        self.threshold(threshold)  # calibrate once, before the first result
        recorded = self._cluster_record() is not None
        for result in run_images(paths, self.spec, "all", workers, keep_images, pipeline=self._local_pipeline(workers)):
            if not result.error:
                self.label(result.faces, top_k, threshold, _file_hash(result.path) if recorded else None)
            yield result

    def detect_paths(self, paths: list[Path], threshold: float | None = None, workers: int = 1,
                     keep_images: bool = False) -> Iterator[ImageResult]:
        from dataclasses import replace

        spec = self.spec if threshold is None else replace(self.spec, detect_threshold=threshold)
        pipeline = self._local_pipeline(workers, with_recognizer=False)
        yield from run_images(paths, spec, "detect", workers, keep_images, pipeline=pipeline)

    def _local_pipeline(self, workers: int, with_recognizer: bool = True) -> FacePipeline | None:
        if workers > 1:
            return None  # each worker process builds its own
        return FacePipeline(self.detector, self.recognizer if with_recognizer else None)

    # -- enroll ----------------------------------------------------------------------------------------
    def enroll(self, name: str, images: ImageLike | Sequence[ImageLike], source: str | None = None) -> list[str]:
        """Add the largest face of each image to person `name`: per image "added", "duplicate" (this content is
        already enrolled) or "no face". Each face is its own transaction."""
        name = person_name(name)
        if isinstance(images, (str, Path, bytes, bytearray, np.ndarray)) or not isinstance(images, Sequence):
            images = [images]
        store = self._checked_gallery(bind=True)
        out = []
        for image in images:
            digest = content_hash(image)
            if store.person_of_hash(digest) is not None:
                out.append("duplicate")
                continue
            rgb = load_image(image)
            faces = largest_first(self._detect(rgb))
            if not faces:
                out.append("no face")
                continue
            face = self.pipeline.embed(rgb, faces[:1])[0]
            where = str(Path(image).resolve()) if isinstance(image, (str, Path)) else (source or "upload")
            out.append(store.add_face(name, where, digest, face.box, face.score, face.embedding))
        return out

    def enroll_folder(self, folder: str | Path, workers: int = 1, on_item: Callable[[str], None] | None = None,
                      reembed: bool = False):
        """Enroll ROOT/<person>/**/<photo>: the largest face of each photo (facepipe.pipeline.enroll.EnrollReport)."""
        from facepipe.pipeline.enroll import enroll_folder, reembed_gallery
        from facepipe.runtime.folders import scan_identity_folders

        folders = scan_identity_folders(folder, "person")  # check the folder before anything is created
        recognizer = self.recognizer
        store = self.gallery(create=True)
        if reembed and store.model not in (None, recognizer.fingerprint) and store.face_count():
            reembed_gallery(store, self.spec, recognizer.fingerprint, workers, pipeline=self._local_pipeline(workers),
                            metric=recognizer.metric)
        store.check_model(recognizer.fingerprint, recognizer.embedding_size, recognizer.metric)
        return enroll_folder(folders, store, self.spec, workers, on_item, pipeline=self._local_pipeline(workers))

    # -- cluster: the people nobody has named yet ----------------------------------------------------
    def _cluster_store(self, bind: bool = False):
        """The gallery's cluster tables (SQLite only), after checking its model (bind: claim an empty gallery)."""
        from facepipe.gallery import is_milvus
        from facepipe.gallery.clusters import ClusterStore

        if is_milvus(self.gallery_spec):  # said before a Milvus collection is created for nothing
            raise GalleryError(f"{self.gallery_spec}: clusters need a SQLite gallery (--gallery FILE.db)")
        gallery = self.gallery(create=bind)
        store = _Serialised(ClusterStore(gallery._target), self._lock)
        if bind:
            recognizer = self.recognizer
            if gallery.model not in (None, recognizer.fingerprint) and store.face_count():
                raise ModelMismatchError(f"{gallery.path}: its clusters hold embeddings from model "
                                         f"{gallery.model!r}, not {recognizer.fingerprint!r}; use that model or "
                                         "another --gallery")
            gallery.check_model(recognizer.fingerprint, recognizer.embedding_size, recognizer.metric)
        return store

    def cluster(self, paths: Sequence[str | Path], workers: int = 1, on_item: Callable[[Path], None] | None = None,
                settings=None, runner: Callable | None = None):
        """Group the faces of these photos by person and store the clusters in the gallery (facepipe.pipeline.
        clustering): only photos not clustered before are embedded; faces of enrolled persons are identified,
        not clustered; clusters that gain no face keep their ids. `runner` embeds elsewhere (`cluster --ray`:
        facepipe.scaleout.verbs.embed_runner). Returns a ClusterReport."""
        from facepipe.cluster import DEFAULT
        from facepipe.pipeline.clustering import ClusterReport, clustered_images, embed_new_photos, recluster
        from facepipe.runtime.image import list_images

        images, problems = list_images([Path(p) for p in paths])
        store = self._cluster_store(bind=True)
        recognizer = self.recognizer
        local = self._local_pipeline(workers) if runner is None else None
        hashes, failed, embedded = embed_new_photos(store, images, self.spec, workers, local, on_item, runner)
        has_persons = self.gallery().face_count() > 0
        identify = self._identify_for_clustering(store) if has_persons else None
        counts = recluster(store, recognizer.metric, verify_threshold(recognizer).value, identify, settings or DEFAULT)
        label = (lambda faces, photo: self.label(faces, photo=photo)) if has_persons else None
        errors = [f"{p}: {why}" for p, why in problems] + [r.error for r in failed]
        return ClusterReport(clustered_images(store, images, hashes, label), errors, counts, embedded)

    def _identify_for_clustering(self, store):
        value = self.threshold().value

        def identify(embeddings: np.ndarray, keys: list[tuple[str, int]]) -> list[str | None]:
            out = []
            for m, (photo, index) in zip(self.match(embeddings, 5), keys):
                out.append(_without_rejected(m.candidates, store.rejected_persons(photo, index), value)[1])
            return out
        return identify

    def clusters(self) -> list[tuple[int, int]]:
        """(cluster id, number of faces) for every cluster, largest first."""
        return self._cluster_store().clusters()

    def cluster_faces(self, cluster: int):
        """The faces of one cluster (facepipe.gallery.clusters.StoredFace: id, source, box, ...)."""
        return self._cluster_store().members(cluster)

    def cluster_face(self, face_id: int):
        """One clustered face (facepipe.gallery.clusters.StoredFace) by its id."""
        return self._cluster_store().face(face_id)

    def name_cluster(self, cluster: int, name: str) -> int:
        """Enroll the cluster's faces as person `name` (new or existing); returns the faces enrolled."""
        name = person_name(name)
        return self._cluster_store(bind=True).name(cluster, name)

    def merge_clusters(self, into: int, other: int) -> int:
        """Move every face of `other` into `into`; returns the faces moved."""
        return self._cluster_store().merge(into, other)

    def split_cluster(self, cluster: int, face_ids: Sequence[int]) -> int | None:
        """Take these faces out of the cluster (two or more: a new cluster, its id returned)."""
        return self._cluster_store().split(cluster, [int(f) for f in face_ids])

    def reject(self, name: str, face: int | ImageLike) -> int:
        """"Not this person": face is a clustered face id, or a photo (every face of it). Identify and later
        cluster runs never name it `name` again; a face enrolled as `name` from it is removed (returned: how many)."""
        store = self._cluster_store()
        if isinstance(face, (int, np.integer)) and not isinstance(face, bool):
            stored = store.face(int(face))
            return store.reject(name, stored.photo, stored.face_index)
        return store.reject(name, content_hash(face))

    # -- verify, persons --------------------------------------------------------------------------------
    def verify(self, a: ImageLike, b: ImageLike, threshold: float | None = None) -> Verification:
        """Same person or not: the largest face of each image, compared by the recognizer's similarity."""
        faces = []
        for image, label in ((a, "first"), (b, "second")):
            rgb = load_image(image)
            found = largest_first(self._detect(rgb))
            if not found:
                where = image if isinstance(image, (str, Path)) else f"the {label} image"
                raise FacepipeError(f"{where}: no face found")
            faces.append(self.pipeline.embed(rgb, found[:1])[0])
        recognizer = self.recognizer
        similarity = float(pairwise_similarity(faces[0].embedding, faces[1].embedding, recognizer.metric)[0, 0])
        same = verify_threshold(recognizer, threshold)
        return Verification(similarity, same.value, same.source, similarity >= same.value, (faces[0], faces[1]))

    def persons(self):
        """Everyone enrolled: name, number of faces, when first enrolled."""
        return self.gallery().persons()

    def remove(self, name: str) -> int:
        """Remove a person and all their faces; returns how many faces went."""
        name = person_name(name)  # before the gallery opens: a bad name is the first thing to say
        return self.gallery().remove_person(name)

    def info(self) -> dict:
        """Where the gallery is, which model filled it, its size, how it is searched, and the threshold."""
        store = self.gallery()
        faces = store.face_count()  # counts, not a copy of every vector (a million-face gallery stays cheap)
        calibrated = store.open_set_threshold(TARGET_FPIR)
        out = {"gallery": str(store.path), "model": store.model, "persons": len(store.persons()), "faces": faces,
               "embedding_size": store.embedding_size if faces else None, "search": store.search_kind,
               "calibrated_threshold": calibrated,
               "calibration": None if calibrated is not None else
               f"n/a (fewer than {MIN_PERSONS} persons, and too few faces of theirs and of unnamed clusters to "
               "bound each: the model default applies)",
               "threshold": None, "threshold_source": None}
        if faces and store.model == self.recognizer.fingerprint:
            th = self.threshold()
            out.update(threshold=th.value, threshold_source=th.source)
        return out


def open(gallery: str | Path | None = None, detector: str | Path | None = None, recognizer: str | Path | None = None,
         device: str = "cpu", threads: int | None = None,
         second_chance: bool = True) -> Engine:  # noqa: A001 - facepipe.open(), like io.open
    """The library's entry point: `with facepipe.open() as fp: fp.identify("photo.jpg")`.

    gallery: None (your user data folder's gallery), or a gallery file. detector / recognizer: None (the embedded
    dlib models), a model file (.onnx / .pt), or a model name. device: "cpu", "cuda" or "auto". second_chance=False:
    no second chance on photos where the detector finds no face (crowds of tiny faces, where it costs most).
    """
    return Engine(gallery, detector, recognizer, device, threads, second_chance=second_chance)
