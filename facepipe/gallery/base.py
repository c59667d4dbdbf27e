"""The gallery interface (`Gallery`, a Protocol every backend implements; the engine and enroll see nothing else)
and what the backends share: the model binding read from their metadata, and `with` support."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

import numpy as np

from facepipe.errors import GalleryError, ModelMismatchError
from facepipe.openset.calibration import cached_threshold
from facepipe.openset.policy import TARGET_FPIR

log = logging.getLogger("facepipe.gallery")


def facepipe_home() -> Path:
    """Where facepipe keeps its data: the default gallery, Milvus writer slots (FACEPIPE_HOME moves it)."""
    import platformdirs

    return Path(os.environ.get("FACEPIPE_HOME") or platformdirs.user_data_dir("facepipe"))


def warn_once(gallery, what: str, message: str) -> None:
    """Log `message` the first time `what` goes wrong for this gallery object (not at every search)."""
    warned = gallery.__dict__.setdefault("_warned", set())
    if what not in warned:
        warned.add(what)
        log.warning(message)

if TYPE_CHECKING:
    from facepipe.gallery.npz import GalleryRecords
    from facepipe.gallery.ranking import Match, PersonInfo


class Gallery(Protocol):
    """Persons and their face embeddings, bound to the model that made them. SQLite (sqlite.SqliteGallery) and
    Milvus (milvus.MilvusGallery) implement it; `facepipe.gallery.open_gallery(spec)` picks one."""

    path: Path | str
    revision: int            # bumped by every write
    changes: int             # faces added plus faces removed, ever
    model: str | None        # the fingerprint of the model that filled it
    embedding_size: int | None
    metric: str              # how that model compares embeddings (facepipe.openset.matching.METRICS)
    search_kind: str         # how it is searched now, in words

    def check_model(self, fingerprint: str, embedding_size: int, metric: str = "cosine") -> None:
        """Bind an empty gallery to this model, or refuse a model other than the one that filled it."""

    def person_of_hash(self, sha256: str) -> str | None: ...

    def add_face(self, name: str, source: str, sha256: str, box, score: float, embedding: np.ndarray) -> str:
        """"added", or "duplicate" when this content is already enrolled."""

    def remove_person(self, name: str) -> int:
        """The number of faces removed with the person; GalleryError when there is no such person."""

    def replace_embeddings(self, model: str, embeddings: dict[int, np.ndarray], metric: str = "cosine") -> None: ...

    def face_count(self) -> int: ...

    def persons(self) -> list[PersonInfo]: ...

    def faces(self) -> list[tuple[int, str, str, str]]:
        """(face id, person, source path, sha256) for every face."""

    def embeddings(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """All embeddings (N x D), their person index (N) and the person names."""

    def match(self, embeddings: np.ndarray, threshold: float, top_k: int = 5) -> list[Match]: ...

    def open_set_threshold(self, target_fpir: float) -> float | None:
        """The calibrated threshold (facepipe.openset.calibration); None when too few persons to say."""

    def reindex(self, full: bool = True): ...

    def export_records(self) -> GalleryRecords: ...

    def import_records(self, records: GalleryRecords,
                       on_progress: Callable[[int], None] | None = None) -> tuple[int, int]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Gallery: ...

    def __exit__(self, *exc) -> None: ...


class GalleryBase:
    """A backend provides _meta(key) -> str | None and close(); these read the model it is bound to."""

    path: Path | str

    def _meta(self, key: str) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def face_count(self) -> int:
        raise NotImplementedError

    def _calibrate(self, target_fpir: float) -> float | None:
        """The threshold from this gallery's own impostor scores (facepipe.openset.calibration), uncached."""
        raise NotImplementedError

    def _strangers_version(self) -> str:
        """Changes whenever the faces known to be nobody enrolled change (calibration.stranger_scores): none here."""
        return ""

    def _remember(self, key: str, value: str) -> None:
        """Store a cached value in the metadata (a read-only gallery may pass over it)."""
        raise NotImplementedError

    def open_set_threshold(self, target_fpir: float = TARGET_FPIR) -> float | None:
        """Threshold at which a stranger is named with probability ~target_fpir, from this gallery's own impostor
        scores, cached in its metadata; None when too few persons to say."""
        unsaved: dict[str, str] = self.__dict__.setdefault("_unsaved_meta", {})

        def remember(key: str, value: str) -> None:
            try:
                self._remember(key, value)
            except Exception as exc:  # noqa: BLE001 - a full disk, a lost server: the answer stands, in memory
                unsaved[key] = value
                warn_once(self, "calibration", f"{self.path}: cannot save the calibration ({exc}); it is kept "
                                               "in memory for this process")

        return cached_threshold(lambda key: unsaved.get(key) or self._meta(key), remember, self.changes,
                                self.face_count(), target_fpir, self._calibrate, self._strangers_version())

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def revision(self) -> int:
        """Bumped by every write: in-memory search structures are rebuilt when it moves."""
        return int(self._meta("revision") or 0)

    @property
    def changes(self) -> int:
        """Faces added plus faces removed, ever (the index and calibration measure drift with it)."""
        return int(self._meta("changes") or 0)

    @property
    def model(self) -> str | None:
        """The fingerprint of the model that filled this gallery (None: not bound yet)."""
        return self._meta("model")

    @property
    def embedding_size(self) -> int | None:
        size = self._meta("embedding_size")
        return int(size) if size is not None else None

    @property
    def metric(self) -> str:
        """How the model that filled this gallery compares embeddings (facepipe.openset.matching.METRICS)."""
        return self._meta("metric") or "cosine"

    def refuse_other_model(self, fingerprint: str, embedding_size: int) -> None:
        """A bound, non-empty gallery takes embeddings from its own model only, of its own size."""
        if self.model != fingerprint:
            raise ModelMismatchError(
                f"{self.path}: this gallery holds embeddings from model {self.model!r}, not {fingerprint!r}; "
                "use that model, another --gallery, or `facepipe enroll --reembed` to convert it")
        if self.embedding_size != embedding_size:
            raise GalleryError(f"{self.path}: embedding size {embedding_size} does not match the gallery's "
                               f"{self.embedding_size}")
