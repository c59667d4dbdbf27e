"""The persisted ANN index of a SQLite gallery: faiss IVF-Flat files in a folder beside the gallery.

`gallery.db` keeps its index in `gallery.db.index/ivf-<random>.faiss`; which file is current, and what it
holds, is a tag in the gallery's own `meta` table (`IndexTag`: the model, the gallery's change counter and the
largest face id it covers). The gallery is the single source of truth; the index only speeds up search.

- Readers memory-map the current file (faiss IO_FLAG_MMAP): no copy of the vectors in the process, pages
  are read as the search touches them, start-up costs milliseconds.
- Writers never modify a file in place: a new file is written under a temporary name, fsync'ed, renamed,
  and only then does the tag switch to it (one SQLite transaction). A reader sees the old index or the new
  one, never half of one; a process killed mid-build leaves the old tag, hence the old index, in use.
- One builder at a time (an flock on `lock` in the folder); unreferenced files are swept by the next one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SUFFIX = ".faiss"


@dataclass
class IndexTag:
    file: str              # name inside the index folder
    model: str             # fingerprint of the model whose embeddings it holds
    embedding_size: int
    changes: int           # the gallery's change counter when the file was written
    max_id: int            # faces with a larger id are not in the file yet (searched exactly)
    count: int             # vectors in the file
    trained_count: int     # gallery size when the IVF centroids were trained
    trained_changes: int   # the change counter then (drift since training decides a full rebuild)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> "IndexTag | None":
        if not text:
            return None
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None


def index_folder(gallery_path: Path) -> Path:
    return gallery_path.with_name(gallery_path.name + ".index")


@contextlib.contextmanager
def build_lock(folder: Path):
    """Exclusive lock for whoever writes index files (blocks until the other builder is done)."""
    folder.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(folder / "lock", os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_index(index, folder: Path, prefix: str = "ivf") -> str:
    """Write a faiss index as a new file `<prefix>-<random>.faiss` in folder, atomically; returns its name."""
    import faiss

    folder.mkdir(mode=0o700, exist_ok=True)
    name = f"{prefix}-{secrets.token_hex(8)}{SUFFIX}"
    tmp = folder / (name + ".tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # biometric data: owner only
    os.close(fd)
    try:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # faiss says a failed write (a full disk, a file-size limit) this way
            raise OSError(f"cannot write {tmp.name}: {str(exc).strip().splitlines()[-1][:200]}") from None
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.rename(tmp, folder / name)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return name


def open_index(folder: Path, tag: IndexTag, nprobe: int | None = None):
    """The tagged index, memory-mapped read-only. Raises FileNotFoundError when the file is gone or unusable."""
    import faiss

    path = folder / tag.file
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:  # truncated or foreign file: treat as missing, it gets rebuilt
        raise FileNotFoundError(f"{path}: {exc}") from None
    if index.ntotal != tag.count or index.d != tag.embedding_size:
        raise FileNotFoundError(f"{path}: holds {index.ntotal} x {index.d}, the tag says {tag.count} x "
                                f"{tag.embedding_size}")
    if nprobe:
        index.nprobe = min(nprobe, index.nlist)
    return index


def open_current(read_tag, state_of, update, open_file):
    """(index, tag) of the file that matches the gallery now, for the face index and the index of persons alike:
    `update(force_build=...)` brings a stale or missing one up to date; a builder may swap the file between
    reading the tag and opening it (try again), and a file that is there but unreadable is built anew."""
    index = tag = None
    for _ in range(3):
        tag = read_tag()
        if state_of(tag) != "fresh":
            index, tag = update()
        if index is None:
            try:
                index = open_file(tag)
            except FileNotFoundError:
                continue
        break
    if index is None:
        index, tag = update(force_build=True)
    return index, tag


def load_for_update(folder: Path, tag: IndexTag):
    """The tagged index read fully into memory (a memory-mapped one cannot be changed)."""
    import faiss

    return faiss.read_index(str(folder / tag.file))


def remove_missing(index, live_ids: np.ndarray) -> int:
    """Drop from index every id not in live_ids; returns how many went."""
    import faiss

    keep = faiss.IDSelectorBatch(len(live_ids), faiss.swig_ptr(np.ascontiguousarray(live_ids, dtype=np.int64)))
    return index.remove_ids(faiss.IDSelectorNot(keep))


def sweep(folder: Path, keep: str | None, prefix: str = "ivf") -> None:
    """Delete the `prefix` index files other than `keep` (call with the build lock held). A reader that has one
    memory-mapped keeps its pages; one that has not opened it yet re-reads the tag."""
    for path in folder.glob(f"{prefix}-*"):
        if path.name != keep:
            path.unlink(missing_ok=True)
