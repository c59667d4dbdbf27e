"""Content hashes: the sha256 of a file (gallery de-duplication, downloads) and model fingerprints."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str | Path, name: str) -> str:
    """`name:<first 16 hex of the sha256>`: binds a gallery to the exact model file that filled it."""
    return f"{name}:{file_sha256(path)[:16]}"
