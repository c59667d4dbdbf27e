"""Where a Ray job's photos come from: local paths or anything pyarrow's filesystems read (s3://, gs://, file://).

The driver only splits each root into *partitions* (a single file, the photos lying directly in a folder, or
one top-level sub-folder: for enroll, one person); the photos of a partition are listed by the Ray read task
that owns it, one folder at a time, and handed on in blocks. So ten million names are never held in one list:
a folder is listed as it is walked, and only the roots' first level passes through the driver.
No Ray here: these are plain functions, tested alone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from facepipe.errors import FacepipeError
from facepipe.runtime.image import is_image_path


def is_uri(path: str) -> bool:
    return "://" in str(path)


@dataclass(frozen=True)
class Partition:
    """One unit of listing: `folder` walked recursively, or only the files directly in it (`flat`), or one file.
    `person` is the identity of every photo in it (enroll: the first folder under the root)."""

    root: str
    folder: str | None = None  # relative to root; None: the root itself
    flat: bool = False
    file: str | None = None  # a single photo given by name
    person: str | None = None


def _filesystem(uri: str):
    """(pyarrow filesystem, path inside it, the URI prefix to put back in front of listed paths)."""
    import pyarrow.fs as pafs

    try:
        fs, inner = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FacepipeError(f"{uri}: cannot open this location ({exc})") from None
    scheme = uri.split("://", 1)[0]
    return fs, inner.rstrip("/"), f"{scheme}://" if scheme != "file" else "file://"


def _local(path: str, base: str | None) -> str:
    """A local name as given, made absolute against `base` (the driver's folder: Ray workers run elsewhere)."""
    return os.path.join(base, path) if base and not is_uri(path) else path


def _kind(path: str) -> str:
    """"file", "folder" or "missing"."""
    if not is_uri(path):
        p = Path(path)
        return "folder" if p.is_dir() else "file" if p.is_file() else "missing"
    import pyarrow.fs as pafs

    fs, inner, _ = _filesystem(path)
    info = fs.get_file_info(inner)
    return {pafs.FileType.Directory: "folder", pafs.FileType.File: "file"}.get(info.type, "missing")


def _children(path: str, base: str | None = None) -> list[tuple[str, bool]]:
    """(name, is_folder) of a folder's direct entries, sorted, hidden ones left out."""
    if not is_uri(path):
        with os.scandir(_local(path, base)) as entries:
            out = [(e.name, e.is_dir()) for e in entries]
    else:
        import pyarrow.fs as pafs

        fs, inner, _ = _filesystem(path)
        out = [(Path(i.path).name, i.type == pafs.FileType.Directory)
               for i in fs.get_file_info(pafs.FileSelector(inner, recursive=False))]
    return sorted((n, d) for n, d in out if not n.startswith("."))


def join(root: str, *parts: str) -> str:
    """A listed photo's name: the root as given, then the parts (local: as Path would write it)."""
    if not is_uri(root):
        return str(Path(root, *parts))
    return "/".join([root.rstrip("/"), *parts])


def partitions(paths: list[str], by_person: bool = False) -> tuple[list[Partition], list[str]]:
    """Split the roots into partitions; returns (partitions, problems as "path: why" lines).

    by_person (enroll): every root is a folder of person folders; photos lying directly in it belong to
    nobody and are left out (as the local enroll does)."""
    parts: list[Partition] = []
    problems: list[str] = []
    for path in map(str, paths):
        kind = _kind(path)
        if kind == "missing":
            problems.append(f"{path}: no such file or folder")
        elif kind == "file":
            if by_person:
                problems.append(f"{path}: not a folder (expected one sub-folder of photos per person)")
            else:
                parts.append(Partition(path, file=path))
        else:
            try:
                entries = _children(path)
            except OSError as exc:
                problems.append(f"{path}: folder not readable ({exc})")
                continue
            folders = [n for n, is_dir in entries if is_dir]
            if not by_person:
                parts.append(Partition(path, flat=True))
            elif not folders:
                problems.append(f"{path}: no person folders inside (expected {path}/NAME/photo.jpg ...)")
            parts += [Partition(path, folder=n, person=n if by_person else None) for n in folders]
    return parts, problems


def walk(part: Partition, base: str | None = None) -> Iterator[str]:
    """The photos of a partition, folder by folder (image suffixes only; hidden entries skipped); names as given,
    local ones read relative to `base`."""
    if part.file is not None:
        yield part.file
        return
    start = part.root if part.folder is None else join(part.root, part.folder)
    stack = [start]
    while stack:
        folder = stack.pop()
        try:
            entries = _children(folder, base)
        except OSError:
            continue  # a folder that vanished or may not be listed: nothing to yield from it
        subfolders = []
        for name, is_dir in entries:
            if is_dir:
                subfolders.append(join(folder, name))
            elif is_image_path(Path(name)):
                yield join(folder, name)
        if not part.flat:
            stack.extend(reversed(subfolders))


def read_bytes(path: str, base: str | None = None) -> bytes:
    """A photo's bytes, from a local file (relative to `base`) or a pyarrow filesystem (raises OSError)."""
    if not is_uri(path):
        with open(_local(path, base), "rb") as f:
            return f.read()
    fs, inner, _ = _filesystem(path)
    with fs.open_input_stream(inner) as f:
        return f.read()


def local_source(path: str) -> str:
    """What a gallery records as a face's source: the absolute path of a local file, the URI otherwise."""
    return path if is_uri(path) else str(Path(path).resolve())
