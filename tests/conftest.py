"""Shared fixtures. Real-photo tests read FACEPIPE_DATA (default ../shared/data) and skip when it is absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    return Path(os.environ.get("FACEPIPE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real-photo data not found at {root} (set FACEPIPE_DATA to the shared data folder)")
    return root


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Model caches and galleries of tests never touch the user's folders."""
    cache = tmp_path_factory.getbasetemp() / "facepipe-cache"
    monkeypatch.setenv("FACEPIPE_CACHE", str(cache))
    monkeypatch.setenv("FACEPIPE_HOME", str(tmp_path_factory.getbasetemp() / "facepipe-home"))


def enroll_from_other_photos(engine, people: Path, shown: dict[str, str], count: int = 3) -> None:
    """Enroll each person from up to `count` of their photos in `people/` other than the one a test shows."""
    for name, photo in shown.items():
        photos = [p for p in sorted((people / name).glob("*.jpg")) if p.name != photo][:count]
        assert "added" in engine.enroll(name, photos)


def shown_faces(engine, people: Path, shown: dict[str, str]) -> dict[str, tuple]:
    """Each person's shown photo (RGB) and the box of its largest face: what a synthetic clip of them shows."""
    import facepipe

    out = {}
    for name, photo in shown.items():
        image = facepipe.load_image(people / name / photo)
        out[name] = (image, max(engine.detect(image), key=lambda f: f.area).box)
    return out
