"""What every gallery backend shares: the model binding read from its metadata, and `with` support."""
from __future__ import annotations

from facepipe.errors import GalleryError, ModelMismatchError


class GalleryBase:
    """A backend provides _meta(key) -> str | None and close(); these read the model it is bound to."""

    def _meta(self, key: str) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

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
