"""DST/manifest.jsonl: one JSON line per source image with every decision made about it.

Append-only while a run goes: the chip files are written first, then the line is appended and flushed,
so a line always describes files that exist. A run killed mid-line leaves a partial last line, which
the next run cuts off. When a source is processed again (it changed), the later line wins; the file is
compacted (one line per source) at the end of a run that left superseded lines.

Record fields (kind "image"):
  source, identity, sha256, bytes, mtime_ns, width, height   the source file (relative to SRC)
  status "kept" | "dropped", reason (why dropped: see REASONS), error (message for unreadable files),
  duplicate_of (the source it repeats), faces_found, processed_at (unix time)
  faces: [{box [x1,y1,x2,y2], score, landmarks [[x,y] x 5] (original pixels), face_size, align_error (mean
           distance in chip pixels between the aligned landmarks and the template: the similarity fit's
           residual), sharpness, yaw, pitch, status, reason, output (chip path relative to DST),
           masked_output, mask {style, landmarks: "68"|"5"}, embedding (base64 float16, L2-normalised)}]
  excluded: null | {reason: "overlap", other_identity, similarity, by}   set after the run, identity-wide
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from facepipe.prepare.config import PrepareError
from facepipe.runtime.files import exclusive_temp

MANIFEST_FILE = "manifest.jsonl"

REASONS = {
    "unreadable": "file could not be read as an image",
    "duplicate": "same bytes as an earlier source",
    "image_too_small": "shorter side below --min-image-size",
    "no_face": "no face found",
    "multiple_faces": "more than one face (--faces single-only)",
    "face_too_small": "face box below --min-face-size",
    "blurry": "sharpness below --min-sharpness",
    "extreme_pose": "estimated yaw beyond --max-yaw",
    "overlap": "identity also in an --exclude-overlap-with set",
    "error": "processing failed (message in `error`); redone by the next run",
}


def encode_embedding(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def decode_embedding(text: str) -> np.ndarray:
    v = np.frombuffer(base64.b64decode(text), dtype="<f2").astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class Manifest:
    """The manifest of one DST: `records` maps each source (relative path) to its latest record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.lines = 0
        self.cut_partial_line = False
        if self.path.exists():
            self._load()
        self._file = None

    def _load(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a run was killed while writing its last line: that image is redone
            with open(self.path, "r+b") as f:
                f.truncate(end)
            self.cut_partial_line = True
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                source = record["source"]
            except (ValueError, KeyError, TypeError):
                raise PrepareError(f"{self.path}:{n}: not a manifest line; the manifest was edited or damaged "
                                   "(remove that line to redo its image)") from None
            self.records[source] = record
            self.lines += 1

    @property
    def superseded(self) -> int:
        return self.lines - len(self.records)

    def append(self, record: dict) -> None:
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        self.records[record["source"]] = record
        self.lines += 1

    def rewrite(self, records: Iterable[dict] | None = None) -> None:
        """Replace the file with one line per source (atomically: a kill leaves the old or the new file)."""
        self.close()
        if records is not None:
            self.records = {r["source"]: r for r in records}
        tmp = exclusive_temp(self.path)  # unpredictable, O_EXCL: nothing planted there is written through
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                for record in self.records.values():
                    f.write(json.dumps(record, ensure_ascii=False) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        self.lines = len(self.records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(dst: str | Path) -> list[dict]:
    """The latest record of every source in DST/manifest.jsonl."""
    path = Path(dst) / MANIFEST_FILE
    if not path.is_file():
        raise PrepareError(f"{dst}: no {MANIFEST_FILE} (not a folder made by `facepipe prepare`)")
    return list(Manifest(path).records.values())


def kept_faces(record: dict) -> Iterator[dict]:
    """Faces of a record whose chip is in the set (not dropped, identity not excluded)."""
    if record.get("status") != "kept" or record.get("excluded"):
        return
    for face in record.get("faces") or []:
        if face.get("status") == "kept" and face.get("output"):
            yield face


def record_outputs(record: dict) -> Iterator[tuple[str, bool]]:
    """(path relative to DST, masked?) of every file this record wrote, excluded identities included."""
    for face in record.get("faces") or []:
        if face.get("output"):
            yield face["output"], False
        if face.get("masked_output"):
            yield face["masked_output"], True
