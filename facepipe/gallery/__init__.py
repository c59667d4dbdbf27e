"""Galleries: persons and their face embeddings behind one small interface.

- `Gallery` (base.py): the interface every backend implements; the engine and enroll see nothing else;
- `sqlite.SqliteGallery`: one SQLite file, with a persisted faiss IVF index beside it for large galleries
  (its life cycle: sqlite_index.py; its files: index.py);
- `milvus.MilvusGallery`: a Milvus collection (a cluster, or Milvus Lite in a local file);
- `npz`: the export/import file format; `ranking`: face hits -> ranked persons (shared by both backends).

`open_gallery(spec)` picks the backend from the spec: None or a path -> SQLite; `milvus://HOST:PORT/COLLECTION`
or `milvus-lite:///path/to/file.db` -> Milvus.
"""
from __future__ import annotations

from pathlib import Path

from facepipe.gallery.base import Gallery
from facepipe.gallery.ranking import Match, PersonInfo, best_per_person, rank_persons
from facepipe.gallery.sqlite import SqliteGallery, default_gallery_path

__all__ = ["Gallery", "Match", "PersonInfo", "SqliteGallery", "best_per_person", "default_gallery_path",
           "open_gallery", "rank_persons"]


def is_milvus(spec: str | Path | None) -> bool:
    """Whether the spec names a Milvus gallery (else SQLite)."""
    return str(spec or "").startswith(("milvus://", "milvus-lite://"))


def open_gallery(spec: str | Path | None, create: bool = True) -> Gallery:
    """The gallery named by spec (see the module docstring); `create=False` refuses to make a new one."""
    text = str(spec) if spec is not None else ""
    if is_milvus(text):
        from facepipe.gallery.milvus import MilvusGallery

        return MilvusGallery(text, create=create)
    return SqliteGallery(spec or None, create=create)
