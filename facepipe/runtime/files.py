"""Temporary files for atomic writes: unpredictable names, created exclusively, owner-only; stale ones swept.

A predictable temporary name (`file.tmp`, `file.<pid>.tmp`) lets whoever can write the folder plant a symlink
there and have facepipe write through it; a killed run leaves such files behind for ever. `exclusive_temp`
creates `.<name>.<random>.tmp` beside the target with O_EXCL (it never opens an existing file or link), and
sweeps the ones an earlier, killed run left (older than an hour: a live writer's file is younger).
"""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
import time
from pathlib import Path

STALE_S = 3600


def exclusive_temp(target: str | Path) -> Path:
    """A new, empty, owner-only file beside `target` with an unpredictable name (write it, then os.replace)."""
    target = Path(target)
    sweep_stale_temps(target)
    while True:
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            return tmp
        except FileExistsError:  # 2**64 names: only a planted file gets here
            continue


def sweep_stale_temps(target: str | Path, older_than_s: float = STALE_S) -> int:
    """Delete the temporary files of `target` that a killed run left; returns how many went."""
    target = Path(target)
    cutoff = time.time() - older_than_s
    gone = 0
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.lstat().st_mtime < cutoff:
                tmp.unlink()
                gone += 1
    return gone
