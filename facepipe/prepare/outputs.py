"""The files prepare writes into DST: which are accounted for, which are left over, where excluded ones go.

DST/<identity>/<name>.jpg   chips (and `<name>_mask.jpg` masked copies) of identities in the set
DST/.excluded/<identity>/   chips of identities dropped by --exclude-overlap-with (hidden: facepipe's
                            folder reader skips dot-folders), moved back if a later run keeps them
"""
from __future__ import annotations

import os
from pathlib import Path

from facepipe.prepare.manifest import record_outputs
from facepipe.runtime.image import is_image_path

EXCLUDED_DIR = ".excluded"


def _output_dirs(dst: Path) -> list[Path]:
    dirs = [d for d in dst.iterdir() if d.is_dir() and not d.name.startswith(".")]
    excluded = dst / EXCLUDED_DIR
    if excluded.is_dir():
        dirs += [d for d in excluded.iterdir() if d.is_dir()]
    return dirs


def sweep_orphans(dst: Path, records) -> int:
    """Delete chip files no manifest record accounts for (left by a killed run); drop empty identity folders."""
    referenced = {path for r in records for path, _ in record_outputs(r)}
    removed = 0
    for folder in _output_dirs(dst):
        for f in folder.iterdir():
            if f.is_file() and is_image_path(f) and f.relative_to(dst).as_posix() not in referenced:
                f.unlink()
                removed += 1
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _moved(path: str, to_excluded: bool) -> str:
    prefix = EXCLUDED_DIR + "/"
    if to_excluded:
        return path if path.startswith(prefix) else prefix + path
    return path[len(prefix):] if path.startswith(prefix) else path


def move_record_outputs(dst: Path, record: dict, to_excluded: bool) -> None:
    """Move a record's chips into (or back out of) DST/.excluded and update its paths in place."""
    for face in record.get("faces") or []:
        for key in ("output", "masked_output"):
            old = face.get(key)
            if not old:
                continue
            new = _moved(old, to_excluded)
            if new != old:
                target = dst / new
                target.parent.mkdir(parents=True, exist_ok=True)
                if (dst / old).exists():
                    os.replace(dst / old, target)
                face[key] = new


def is_prepare_output(dst: Path) -> bool:
    """True for an empty folder or one made by prepare (it has our config file)."""
    from facepipe.prepare.config import CONFIG_FILE

    return not dst.exists() or not any(dst.iterdir()) or (dst / CONFIG_FILE).is_file()
