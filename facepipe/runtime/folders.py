"""One rule for identity-per-folder trees (enroll, prepare, training folders): ROOT/<identity>/**/<image>.

The identity is the first folder under ROOT; images may sit in deeper folders. Hidden files and folders
(a leading dot, at any depth) are skipped; files whose suffix is not an image suffix are listed apart, never
read. Images lying directly in ROOT belong to nobody and are listed as loose.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facepipe.errors import FacepipeError
from facepipe.runtime.image import is_image_path


@dataclass
class IdentityFolders:
    root: Path
    persons: dict[str, list[Path]] = field(default_factory=dict)  # identity -> its images, sorted
    loose: list[Path] = field(default_factory=list)  # images directly in root: no identity
    non_images: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # folders we may not list

    @property
    def image_count(self) -> int:
        return sum(len(v) for v in self.persons.values())


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def scan_identity_folders(root: str | Path, what: str = "identity") -> IdentityFolders:
    """List ROOT's identity folders; a missing root, a file, or no identity folder at all is one clear error."""
    root = Path(root)
    if not root.exists():
        raise FacepipeError(f"{root}: no such folder")
    if not root.is_dir():
        raise FacepipeError(f"{root}: not a folder (expected one sub-folder of photos per {what})")
    try:
        entries = sorted(root.iterdir())
    except PermissionError:
        raise FacepipeError(f"{root}: folder not readable") from None
    scan = IdentityFolders(root)
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            (scan.loose if is_image_path(entry) else scan.non_images).append(entry)
        elif entry.is_dir():
            try:
                files = sorted(p for p in entry.rglob("*") if p.is_file() and not _hidden(p, root))
            except PermissionError:
                scan.unreadable.append(entry)
                files = []
            scan.persons[entry.name] = [p for p in files if is_image_path(p)]
            scan.non_images.extend(p for p in files if not is_image_path(p))
    if not scan.persons:
        raise FacepipeError(f"{root}: no {what} folders inside (expected {root}/NAME/photo.jpg ...)")
    return scan
