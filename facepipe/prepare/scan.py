"""List an identity-per-folder tree: which images belong to whom, and where each one's chip will go.

SRC/<identity>/**/<image>: the identity is the first folder under SRC; images in deeper folders are
flattened into the identity's output folder (`a/b.jpg` -> `a__b`), because training readers only look one
level down. Two sources that would get the same output name (`x.jpg` and `x.png`) keep their suffix in
it. Hidden files and folders are skipped; files that are not images by suffix are counted, not read.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.errors import FacepipeError
from facepipe.prepare.config import PrepareError
from facepipe.runtime.folders import scan_identity_folders
from facepipe.runtime.hashing import file_sha256  # noqa: F401  (re-exported: the content hash used for duplicates)


@dataclass(frozen=True)
class SourceImage:
    path: Path  # absolute path of the source photo
    rel: str  # path relative to SRC, with forward slashes: the manifest key
    identity: str
    out_stem: str  # "<identity>/<name>" without extension, relative to DST
    size: int  # bytes
    mtime_ns: int


@dataclass
class Scan:
    root: Path
    images: list[SourceImage] = field(default_factory=list)
    identities: list[str] = field(default_factory=list)
    loose_files: list[Path] = field(default_factory=list)  # images directly in SRC: no identity
    non_images: list[Path] = field(default_factory=list)  # files whose suffix is not an image suffix


def scan_identity_tree(src: Path) -> Scan:
    src = Path(src).resolve()
    try:
        folders = scan_identity_folders(src).check_readable()
    except FacepipeError as exc:
        raise PrepareError(str(exc)) from None
    scan = Scan(src, loose_files=folders.loose, non_images=folders.non_images)
    for identity, images in folders.persons.items():
        if not images:
            continue
        scan.identities.append(identity)
        for p, stem in zip(images, _output_stems(images, src / identity)):
            st = p.stat()
            scan.images.append(SourceImage(p, p.relative_to(src).as_posix(), identity, f"{identity}/{stem}",
                                           st.st_size, st.st_mtime_ns))
    if not scan.images:
        raise PrepareError(f"{src}: no images found in identity sub-folders (expected SRC/<identity>/*.jpg)")
    return scan


def _output_stems(images: list[Path], identity_dir: Path) -> list[str]:
    """Unique output names within one identity, also apart from the names prepare derives from them
    (`<stem>_<k>` for --faces all, `<stem>_mask` for masked copies)."""
    stems = [str(p.relative_to(identity_dir).with_suffix("")).replace(os.sep, "__") for p in images]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    stems = [f"{s}_{p.suffix.lstrip('.').lower()}" if counts[s] > 1 else s for p, s in zip(images, stems)]
    taken = set(stems)
    out = []
    for s in stems:
        base = s[:-5] if s.endswith("_mask") else s
        head, _, tail = base.rpartition("_")
        derived_from_other = (base != s and base in taken) or (tail.isdigit() and head in taken)
        if derived_from_other:
            new = f"{s}_src"
            while new in taken:
                new += "_"
            taken.add(new)
            s = new
        out.append(s)
    return out


def check_folders(src: Path, dst: Path) -> None:
    """DST must not be inside SRC (its chips would become sources) nor SRC inside DST."""
    s, d = Path(src).resolve(), Path(dst).resolve()
    if d == s or s in d.parents:
        raise PrepareError(f"{dst}: the output folder must not be inside the source folder {src}")
    if d in s.parents:
        raise PrepareError(f"{src}: the source folder must not be inside the output folder {dst}")


def digest(text: str) -> int:
    """A stable 64-bit number from a string (per-image random streams that survive restarts)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
