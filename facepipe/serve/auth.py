"""Who may call the API: one bearer key from a private file, compared in constant time.

Start-up rules: the key file must be readable by its owner only, and a server that listens beyond
this machine (anything but loopback) must have a key.
"""
from __future__ import annotations

import hmac
import ipaddress
import stat
from pathlib import Path

from fastapi import HTTPException, Request

from facepipe.errors import FacepipeError


def read_api_key(path: str | Path) -> str:
    """The key in `path` (surrounding whitespace ignored); refuse files that others can read."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FacepipeError(f"{path}: API key file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FacepipeError(f"{path}: cannot read the API key file ({getattr(exc, 'strerror', None) or exc})") from None
    if not stat.S_ISREG(mode):
        raise FacepipeError(f"{path}: the API key file is not a regular file")
    if mode & 0o077:
        raise FacepipeError(f"{path}: the API key file is readable by others (mode {stat.S_IMODE(mode):o}); "
                            f"run `chmod 600 {path}`")
    key = text.strip()
    if len(key) < 16:
        raise FacepipeError(f"{path}: the API key is too short (use at least 16 characters, e.g. `openssl rand -hex "
                            f"32`)")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, has_key: bool) -> None:
    """Refuse to serve faces to the network without a key."""
    if not has_key and not is_loopback(host):
        raise FacepipeError(f"refusing to listen on {host} without --api-key-file: "
                            "anyone on the network could read and change the gallery")


class BearerKey:
    """FastAPI dependency: 401, with nothing else said, unless `Authorization: Bearer <key>` matches."""

    def __init__(self, key: str | None):
        self._key = key.encode() if key else None

    def __call__(self, request: Request) -> None:
        if self._key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._key):
            raise HTTPException(401, "unauthorized", headers={"WWW-Authenticate": "Bearer"})
