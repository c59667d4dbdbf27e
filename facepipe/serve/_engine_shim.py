"""TEMPORARY stand-in for facepipe.open() (facepipe/engine.py, being written on main).

Implements only what the server calls, over batch/pipeline/gallery. Delete once the engine lands.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from facepipe.errors import FacepipeError, GalleryError, ImageError
from facepipe.runtime.image import read_image


class ModelMismatchError(GalleryError):
    pass


@dataclass
class Verification:
    similarity: float
    threshold: float
    same_person: bool


def _read(image) -> np.ndarray:
    if isinstance(image, (bytes, bytearray)):
        fd, tmp = tempfile.mkstemp()
        try:
            os.write(fd, image)
            os.close(fd)
            try:
                return read_image(tmp)
            except ImageError as exc:
                raise ImageError(str(exc).replace(tmp, "image")) from None
        finally:
            os.unlink(tmp)
    if isinstance(image, np.ndarray):
        return image
    return read_image(image)


class _Engine:
    def __init__(self, gallery, detector, recognizer, device):
        from facepipe.batch import ModelSpec, build_pipeline
        from facepipe.gallery import Gallery

        self.pipeline = build_pipeline(ModelSpec(detector, recognizer, device))
        self.detector, self.recognizer = self.pipeline.detector, self.pipeline.recognizer
        self._gallery_path = gallery
        self._lock = threading.RLock()
        self._models = threading.Lock()  # dlib's detector crashes when two threads call it at once
        Gallery(gallery).close()

    @property
    def _gallery(self):
        # sqlite connections belong to one thread: the shim opens one per call (the engine does better)
        from facepipe.gallery import Gallery

        local = self.__dict__.setdefault("_local", threading.local())
        if not hasattr(local, "g"):
            local.g = Gallery(self._gallery_path)
        return local.g

    def _check(self):
        g = self._gallery
        if g.model not in (None, self.recognizer.fingerprint) and g.face_count():
            raise ModelMismatchError(f"{g.path}: this gallery holds embeddings from model {g.model!r}, "
                                     f"not {self.recognizer.fingerprint!r}")

    def detect(self, image, threshold=None):
        img = _read(image)
        with self._models:
            return self.pipeline.detect(img, threshold)

    def threshold(self, override=None):
        from facepipe.matching import choose_threshold

        with self._lock:
            return choose_threshold(self.recognizer, self._gallery, override)

    def identify(self, image, top_k=3, threshold=None):
        img = _read(image)
        with self._models:
            faces = self.pipeline.analyze(img)
        with self._lock:
            self._check()
            th = self.threshold(threshold)
            if faces:
                for face, m in zip(faces, self._gallery.match([f.embedding for f in faces], th.value, top_k)):
                    face.identity, face.similarity, face.candidates = m.identity, m.similarity, m.candidates
        return faces

    def enroll(self, name, images):
        out = []
        for image in images:
            data = image if isinstance(image, bytes) else open(image, "rb").read()
            digest = hashlib.sha256(data).hexdigest()
            with self._lock:
                self._check()
                if self._gallery.person_of_hash(digest) is not None:
                    out.append("duplicate")
                    continue
            img = _read(image)
            with self._models:
                faces = self.pipeline.detect(img)
                face = max(faces, key=lambda f: f.area) if faces else None
                if face is not None:
                    self.pipeline.embed(img, [face])
            if face is None:
                out.append("no face")
                continue
            with self._lock:
                self._gallery.check_model(self.recognizer.fingerprint, self.recognizer.embedding_size)
                out.append(self._gallery.add_face(name, "upload", digest, face.box, face.score, face.embedding))
        return out

    def verify(self, a, b, threshold=None):
        embs = []
        for image in (a, b):
            img = _read(image)
            with self._models:
                faces = self.pipeline.detect(img)
                if not faces:
                    raise FacepipeError("image: no face found")
                face = max(faces, key=lambda f: f.area)
                embs.append(self.pipeline.embed(img, [face])[0].embedding)
        sim = float(np.dot(*embs))
        th = self.recognizer.threshold if threshold is None else threshold
        return Verification(sim, th, sim >= th)

    def persons(self):
        with self._lock:
            return self._gallery.persons()

    def remove(self, name):
        with self._lock:
            return self._gallery.remove_person(name)

    def info(self):
        with self._lock:
            th = self.threshold()
            matrix, _, names = self._gallery.embeddings()
            return {"gallery": str(self._gallery.path), "model": self._gallery.model, "persons": len(names),
                    "faces": len(matrix), "search": self._gallery.search_kind,
                    "threshold": {"value": th.value, "source": th.source}}

    def close(self):
        pass


def open_engine(gallery=None, detector=None, recognizer=None, device="cpu"):
    return _Engine(gallery, detector, recognizer, device)
