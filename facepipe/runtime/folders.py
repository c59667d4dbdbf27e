"""What is in a folder: every file under it, and the folders that could not be listed (one rule for every verb:
a folder we may not read is an error naming it, never an empty folder); and the identity-per-folder trees
(enroll, prepare, training folders): ROOT/<identity>/**/<image>.

The identity is the first folder under ROOT; images may sit in deeper folders. Hidden files and folders
(a leading dot, at any depth) are skipped; files whose suffix is not an image suffix are listed apart, never
read. Images lying directly in ROOT belong to nobody and are listed as loose.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from facepipe.errors import FacepipeError
from facepipe.runtime.image import is_image_path


def not_readable(exc: OSError) -> str:
    """Why a folder could not be listed, in the words every verb uses."""
    return f"folder not readable ({exc.strerror or type(exc).__name__})"


def one_line(problems: list[tuple[Path, str]]) -> str:
    """The first (path, why) problem as one error line, saying how many more there are."""
    path, why = problems[0]
    return f"{path}: {why}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")


def files_under(folder: str | Path, skip_hidden: bool = False) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every file under FOLDER (recursively; symlinked folders are not followed), sorted, and each folder that
    could not be listed with why. Path.rglob would pass over such a folder without a word, as if it were empty."""
    files: list[Path] = []
    unreadable: list[tuple[Path, str]] = []

    def note(exc: OSError) -> None:
        unreadable.append((Path(exc.filename) if exc.filename else Path(folder), not_readable(exc)))

    for top, dirs, names in os.walk(folder, onerror=note):
        if skip_hidden:
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            names = [n for n in names if not n.startswith(".")]
        files.extend(Path(top, n) for n in names)
    return sorted(p for p in files if _is_file(p)), sorted(unreadable)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # listed but not searchable (r without x): reading it will say why, as for any unreadable file
        return True


@dataclass
class IdentityFolders:
    root: Path
    persons: dict[str, list[Path]] = field(default_factory=dict)  # identity -> its images, sorted
    loose: list[Path] = field(default_factory=list)  # images directly in root: no identity
    non_images: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)  # folders we may not list, and why

    @property
    def image_count(self) -> int:
        return sum(len(v) for v in self.persons.values())

    def unreadable_in(self, identity: str) -> list[tuple[Path, str]]:
        """The folders of this identity (its own or deeper) that could not be listed."""
        return [(p, why) for p, why in self.unreadable if p.relative_to(self.root).parts[0] == identity]

    def check_readable(self) -> IdentityFolders:
        """Raise for a folder that could not be listed (for the verbs that cannot go on without it: prepare,
        training; enroll notes it as an error of that person and goes on)."""
        if self.unreadable:
            raise FacepipeError(one_line(self.unreadable))
        return self


def scan_identity_folders(root: str | Path, what: str = "identity") -> IdentityFolders:
    """List ROOT's identity folders; a missing root, a file, or no identity folder at all is one clear error."""
    root = Path(root)
    try:
        root.stat()
    except (FileNotFoundError, NotADirectoryError):
        raise FacepipeError(f"{root}: no such folder") from None
    except OSError as exc:  # e.g. inside a folder we may not search
        raise FacepipeError(f"{root}: cannot read ({exc.strerror})") from None
    if not root.is_dir():
        raise FacepipeError(f"{root}: not a folder (expected one sub-folder of photos per {what})")
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise FacepipeError(f"{root}: {not_readable(exc)}") from None
    scan = IdentityFolders(root)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_file, is_dir = entry.is_file(), entry.is_dir()
        except OSError as exc:  # ROOT listed but not searchable: an error of whoever this is
            scan.unreadable.append((entry, f"cannot read ({exc.strerror})"))
            scan.persons[entry.name] = []
            continue
        if is_file:
            (scan.loose if is_image_path(entry) else scan.non_images).append(entry)
        elif is_dir:
            files, unreadable = files_under(entry, skip_hidden=True)
            scan.unreadable.extend(unreadable)
            scan.persons[entry.name] = [p for p in files if is_image_path(p)]
            scan.non_images.extend(p for p in files if not is_image_path(p))
    if not scan.persons:
        raise FacepipeError(f"{root}: no {what} folders inside (expected {root}/NAME/photo.jpg ...)")
    return scan
