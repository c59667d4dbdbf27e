"""Which detected faces of a photo become chips: --faces largest | all | single-only."""
from __future__ import annotations

from facepipe.types import Detection


def choose_faces(faces: list[Detection], policy: str) -> tuple[list[Detection], str | None]:
    """-> (faces to align, largest first; reason the image is dropped, or None)."""
    if not faces:
        return [], "no_face"
    by_area = sorted(faces, key=lambda f: f.area, reverse=True)
    if policy == "largest":
        return by_area[:1], None
    if policy == "all":
        return by_area, None
    if policy == "single-only":
        return (by_area, None) if len(faces) == 1 else ([], "multiple_faces")
    raise ValueError(f"unknown face policy {policy!r}")
