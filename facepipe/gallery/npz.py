"""The gallery export file: a plain .npz (numpy arrays only, no pickles), one file per gallery.

Arrays (N faces, P persons, D = embedding size):

| name             | dtype / shape            | what                                                       |
|------------------|--------------------------|------------------------------------------------------------|
| `format`         | str, ()                  | `"facepipe-gallery/1"`                                     |
| `model`          | str, ()                  | fingerprint of the model that made the embeddings          |
| `embedding_size` | int64, ()                | D                                                          |
| `names`          | str, (P,)                | person names                                               |
| `person`         | int32, (N,)              | per face: index into `names`                               |
| `embeddings`     | float32, (N, D)          | per face: the embedding, bit-exact as stored               |
| `source`         | str, (N,)                | per face: path of the photo it came from                   |
| `sha256`         | str, (N,)                | per face: hex sha256 of that photo (the de-duplication key) |
| `box`            | float64, (N, 4)          | per face: x1, y1, x2, y2 in the photo's pixels             |
| `score`          | float64, (N,)            | per face: the detector's score                             |

Reading never unpickles (`allow_pickle=False`): an object array is refused like any other wrong field. Before
any array is loaded, every member's .npy header is read and checked (a known name, a plain dtype, a size that
matches the zip entry) and their sum held to a memory budget (FACEPIPE_IMPORT_MAX_MB, default 4096): a file
of a few kilobytes that inflates to gigabytes is refused by its headers. Names pass facepipe.names' rule.
"""
from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.errors import GalleryError
from facepipe.names import PersonNameError, person_name

FORMAT = "facepipe-gallery/1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
FIELDS = ("format", "model", "embedding_size", "names", "person", "embeddings", "source", "sha256", "box", "score")
DEFAULT_IMPORT_MAX_MB = 4096
MAX_STRING_CHARS = 4096  # the widest string a field may hold (a source path); a name is far shorter


@dataclass
class GalleryRecords:
    model: str
    embedding_size: int
    names: np.ndarray       # (P,) str
    person: np.ndarray      # (N,) int32 into names
    embeddings: np.ndarray  # (N, D) float32
    source: np.ndarray      # (N,) str
    sha256: np.ndarray      # (N,) str
    box: np.ndarray         # (N, 4) float64
    score: np.ndarray       # (N,) float64

    def __len__(self) -> int:
        return len(self.person)


def import_budget() -> int:
    """Bytes the arrays of one export may take once loaded."""
    return int(float(os.environ.get("FACEPIPE_IMPORT_MAX_MB", DEFAULT_IMPORT_MAX_MB)) * 2**20)


def write_npz(path: str | Path, records: GalleryRecords) -> None:
    """Write records to path atomically (a temporary file beside it, then rename), owner-readable only."""
    path = Path(path)
    _sweep_stale(path)
    # An unpredictable name, created exclusively: nobody can plant a link there for us to write through.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, format=np.array(FORMAT), model=np.array(records.model),
                     embedding_size=np.array(records.embedding_size, np.int64), names=records.names,
                     person=records.person.astype(np.int32), embeddings=records.embeddings.astype(np.float32),
                     source=records.source, sha256=records.sha256, box=records.box.astype(np.float64),
                     score=records.score.astype(np.float64))
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sweep_stale(path: Path, older_than_s: float = 3600) -> None:
    """Delete the temporary files an export killed mid-write left beside `path` (an hour old: not a live one)."""
    cutoff = time.time() - older_than_s
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.lstat().st_mtime < cutoff:
                tmp.unlink()


def _check_members(path: Path, archive: zipfile.ZipFile) -> None:
    """Read each member's .npy header (not its data): known names only, plain dtypes, sizes within budget."""
    members = archive.namelist()
    unknown = sorted(set(members) - {f + ".npy" for f in FIELDS})
    if unknown:
        raise GalleryError(f"{path}: not a facepipe gallery export (unknown member {unknown[0][:80]!r})")
    total = 0
    for info in archive.infolist():
        with archive.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(f)
                header = f.tell()
            except (ValueError, OSError, EOFError, SyntaxError) as exc:
                raise GalleryError(f"{path}: {info.filename!r} is not a numpy array ({exc})") from None
        if dtype.hasobject or dtype.kind not in "iufU" or (dtype.kind == "U" and dtype.itemsize > 4 * MAX_STRING_CHARS):
            raise GalleryError(f"{path}: {info.filename!r} has dtype {dtype}, not a plain number or short text array")
        size = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
        if header + size != info.file_size:
            raise GalleryError(f"{path}: {info.filename!r} claims {shape} of {dtype} but holds "
                               f"{info.file_size - header:,} bytes (damaged)")
        total += size
    if total > import_budget():
        raise GalleryError(f"{path}: its arrays would take {total / 2**20:,.0f} MB in memory, over the "
                           f"{import_budget() / 2**20:,.0f} MB import budget (FACEPIPE_IMPORT_MAX_MB)")


def read_npz(path: str | Path) -> GalleryRecords:
    """Read and check an export file; any problem is one GalleryError line naming the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise GalleryError(f"{path}: no such file")
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(path, archive)
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise GalleryError(f"{path}: not a facepipe gallery export ({exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise GalleryError(f"{path}: not a readable .npz (truncated or damaged: {exc})") from None

    def field(name: str, kind: str, ndim: int) -> np.ndarray:
        if name not in arrays:
            raise GalleryError(f"{path}: not a facepipe gallery export (no {name!r} array)")
        a = arrays[name]
        if a.dtype.kind not in kind or a.ndim != ndim:
            raise GalleryError(f"{path}: {name!r} is {a.dtype} with shape {a.shape}, expected a {ndim}-d array of kind "
                               f"{kind!r}")
        return a

    if str(field("format", "U", 0)) != FORMAT:
        raise GalleryError(f"{path}: format {str(arrays['format'])!r} is not {FORMAT!r}")
    size = int(field("embedding_size", "iu", 0))
    rec = GalleryRecords(str(field("model", "U", 0)), size, field("names", "U", 1), field("person", "iu", 1),
                         field("embeddings", "f", 2), field("source", "U", 1), field("sha256", "U", 1),
                         field("box", "f", 2), field("score", "f", 1))
    n = len(rec.person)
    for name, a, shape in [("embeddings", rec.embeddings, (n, size)), ("source", rec.source, (n,)),
                           ("sha256", rec.sha256, (n,)), ("box", rec.box, (n, 4)), ("score", rec.score, (n,))]:
        if a.shape != shape:
            raise GalleryError(f"{path}: {name!r} has shape {a.shape}, expected {shape}")
    if rec.embeddings.dtype != np.float32:
        raise GalleryError(f"{path}: 'embeddings' is {rec.embeddings.dtype}, expected float32")
    if n and (rec.person.min() < 0 or rec.person.max() >= len(rec.names)):
        raise GalleryError(f"{path}: 'person' indexes outside 'names' (0..{len(rec.names) - 1})")
    for name, a in [("embeddings", rec.embeddings), ("box", rec.box), ("score", rec.score)]:
        if not np.isfinite(a).all():
            raise GalleryError(f"{path}: {name!r} holds NaN or infinite values")
    rec.names = _checked_names(path, rec.names)
    bad = next((h for h in rec.sha256.tolist() if not _HEX64.match(h)), None)
    if bad is not None:
        raise GalleryError(f"{path}: 'sha256' holds {bad[:70]!r}, not a hex sha256")
    return rec


def _checked_names(path: Path, names: np.ndarray) -> np.ndarray:
    """The names through the one name rule (NFC, trimmed); two that become one are refused."""
    checked: dict[str, str] = {}
    for raw in names.tolist():
        try:
            name = person_name(raw)
        except PersonNameError as exc:
            raise GalleryError(f"{path}: 'names': {exc}") from None
        if name in checked:
            raise GalleryError(f"{path}: 'names' holds {checked[name]!r} and {raw!r}, the same person name")
        checked[name] = raw
    return np.array(list(checked), dtype=str) if checked else names
