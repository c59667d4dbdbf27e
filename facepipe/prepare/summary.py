"""Counts of a prepared set from its manifest: kept, dropped by reason, per identity; written as CSV/JSON."""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facepipe.prepare.manifest import kept_faces


@dataclass
class IdentityCounts:
    identity: str
    images: int = 0  # source images with a record
    kept: int = 0  # images with at least one chip in the set
    chips: int = 0
    masked: int = 0
    dropped: int = 0
    excluded: bool = False


@dataclass
class Summary:
    images: int = 0
    kept_images: int = 0
    chips: int = 0
    masked_copies: int = 0
    dropped: dict = field(default_factory=dict)  # reason -> images
    faces_dropped: dict = field(default_factory=dict)  # reason -> faces (--faces all: an image can keep some)
    identities: int = 0  # identities with at least one chip in the set
    identities_excluded: int = 0
    chips_per_identity: dict = field(default_factory=dict)  # min / median / max
    mask_styles: dict = field(default_factory=dict)
    per_identity: list[IdentityCounts] = field(default_factory=list)


def image_reason(record: dict) -> str | None:
    """Why an image has no chip in the set (None: it has one)."""
    if record.get("excluded"):
        return "overlap"
    return None if record.get("status") == "kept" else (record.get("reason") or "unknown")


def summarize(records) -> Summary:
    s = Summary()
    per: dict[str, IdentityCounts] = {}
    dropped, faces_dropped, styles = Counter(), Counter(), Counter()
    for r in records:
        c = per.setdefault(r["identity"], IdentityCounts(r["identity"]))
        c.images += 1
        s.images += 1
        c.excluded = c.excluded or bool(r.get("excluded"))
        reason = image_reason(r)
        if reason:
            dropped[reason] += 1
            c.dropped += 1
        else:
            c.kept += 1
            s.kept_images += 1
        for face in r.get("faces") or []:
            if face.get("status") == "dropped" and r.get("status") == "kept":
                faces_dropped[face.get("reason")] += 1
        for face in kept_faces(r):
            c.chips += 1
            s.chips += 1
            if face.get("masked_output"):
                c.masked += 1
                s.masked_copies += 1
                styles[(face.get("mask") or {}).get("style", "?")] += 1
    s.dropped = dict(dropped.most_common())
    s.faces_dropped = dict(faces_dropped.most_common())
    s.mask_styles = dict(sorted(styles.items()))
    s.per_identity = sorted(per.values(), key=lambda c: c.identity)
    in_set = [c.chips for c in s.per_identity if c.chips and not c.excluded]
    s.identities = len(in_set)
    s.identities_excluded = sum(c.excluded for c in s.per_identity)
    if in_set:
        s.chips_per_identity = {"min": int(min(in_set)), "median": float(np.median(in_set)), "max": int(max(in_set))}
    return s


def write_summary(dst: Path, summary: Summary, extra: dict) -> list[Path]:
    """summary.json (totals + run facts) and identities.csv (one row per identity)."""
    data = asdict(summary)
    data.pop("per_identity")
    data.update(extra)
    (dst / "summary.json").write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(dst / "identities.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["identity", "images", "kept", "chips", "masked", "dropped", "excluded"])
        for c in summary.per_identity:
            w.writerow([c.identity, c.images, c.kept, c.chips, c.masked, c.dropped, int(c.excluded)])
    return [dst / "summary.json", dst / "identities.csv"]
