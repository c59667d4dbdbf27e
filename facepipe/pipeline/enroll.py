"""Enrolling a folder of people (one subfolder per person) into a gallery, and re-embedding a gallery."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from facepipe.errors import FacepipeError, ImageError
from facepipe.gallery import Gallery
from facepipe.names import PersonNameError, person_name
from facepipe.pipeline.batch import ModelSpec, run_images
from facepipe.runtime.folders import IdentityFolders
from facepipe.runtime.hashing import file_sha256

NO_FACE_NOTE = "skipped: no face found"  # the note on a photo where no face was found (second chance included)


@dataclass
class PersonTally:
    added: int = 0
    unchanged: int = 0
    largest_of_many: int = 0
    no_face: int = 0
    errors: int = 0


@dataclass
class EnrollReport:
    persons: dict[str, PersonTally] = field(default_factory=lambda: defaultdict(PersonTally))
    notes: list[tuple[str, str]] = field(default_factory=list)  # (path, what happened)

    @property
    def errors(self) -> int:
        return sum(t.errors for t in self.persons.values())

    def __repr__(self) -> str:
        """The totals, not every person and note (print() of a report of thousands stays one line)."""
        totals = {f.name: sum(getattr(t, f.name) for t in self.persons.values()) for f in fields(PersonTally)}
        return (f"EnrollReport(persons={len(self.persons)}, {', '.join(f'{k}={v}' for k, v in totals.items())}, "
                f"notes={len(self.notes)})")


def enroll_folder(folders: IdentityFolders, gallery: Gallery, spec: ModelSpec, workers: int = 1,
                  on_item: Callable[[str], None] | None = None, pipeline=None) -> EnrollReport:
    """Enroll the largest face of every photo of every person folder into a gallery already bound to the model.

    Photos whose content is already enrolled are skipped before any model runs; each face is its own
    transaction, so a killed run loses at most the face it was writing."""
    report = EnrollReport()
    for path in folders.loose:
        report.notes.append((str(path), "skipped: not inside a person folder"))
    for path, why in folders.unreadable:
        report.notes.append((str(path), f"error: {why}"))

    todo: list[tuple[Path, str, str]] = []  # (path, person, sha256)
    for folder_name, paths in folders.persons.items():
        unreadable = len(folders.unreadable_in(folder_name))  # each an error of this person's (noted above)
        try:
            name = person_name(folder_name)  # the same rule as the API, the service and import
        except PersonNameError as exc:
            report.persons[folder_name].errors += 1 + unreadable
            report.notes.append((str(folders.root / folder_name), f"error: {exc} (folder skipped)"))
            continue
        tally = report.persons[name]
        tally.errors += unreadable
        if not paths and not unreadable:
            report.notes.append((str(folders.root / folder_name), "skipped: folder holds no images"))
        for path in paths:
            try:
                digest = file_sha256(path)
            except OSError as exc:
                tally.errors += 1
                report.notes.append((str(path), f"error: cannot read ({exc.strerror})"))
                continue
            owner = gallery.person_of_hash(digest)
            if owner is not None:
                tally.unchanged += 1
                if owner != name:
                    report.notes.append((str(path), f"skipped: the same photo is already enrolled as {owner!r}"))
                if on_item:
                    on_item(name)
                continue
            todo.append((path, name, digest))

    results = run_images([p for p, _, _ in todo], spec, mode="largest", workers=workers, pipeline=pipeline)
    for (path, name, digest), result in zip(todo, results):
        tally = report.persons[name]
        if result.error:
            tally.errors += 1
            report.notes.append((str(path), f"error: {result.error.removeprefix(str(path) + ': ')}"))
        elif not result.faces:
            tally.no_face += 1
            report.notes.append((str(path), NO_FACE_NOTE))
        else:
            face = result.faces[0]
            if len(result.faces) > 1:
                tally.largest_of_many += 1
                report.notes.append((str(path), f"{len(result.faces)} faces: enrolled the largest"))
            status = gallery.add_face(name, str(path.resolve()), digest, face.box, face.score, face.embedding)
            if status == "added":
                tally.added += 1
            else:
                tally.unchanged += 1
        if on_item:
            on_item(name)
    return report


def reembed_gallery(gallery: Gallery, spec: ModelSpec, fingerprint: str, workers: int = 1, pipeline=None,
                    metric: str = "cosine") -> int:
    """Recompute every face's embedding with another model from its source photo, all or nothing."""
    faces = gallery.faces()
    missing = []
    for _, name, source, digest in faces:
        try:
            ok = Path(source).is_file() and file_sha256(source) == digest
        except OSError:
            ok = False
        if not ok:
            missing.append(source)
    if missing:
        raise FacepipeError(f"cannot re-embed: {len(missing)} source photo(s) are missing or changed, "
                            f"e.g. {missing[0]} (nothing was changed)")
    new = {}
    for (face_id, _, source, _), result in zip(faces, run_images([Path(f[2]) for f in faces], spec, "largest", workers,
                                                                 pipeline=pipeline)):
        if result.error or not result.faces:
            raise ImageError(f"cannot re-embed {source}: {result.error or 'no face found'} (nothing was changed)")
        new[face_id] = result.faces[0].embedding
    gallery.replace_embeddings(fingerprint, new, metric)
    return len(new)
