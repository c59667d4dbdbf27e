"""--format recordio: pack the kept chips into DST/train.rec + train.idx (insightface layout, header record).

The chip files stay in DST/<identity>/ (they are what a rerun resumes from); their encoded bytes go into
the .rec as they are, so packing never re-compresses. Labels are 0..C-1 over the identities in the set,
sorted by name; masked copies carry their identity's label. DST/labels.tsv maps label -> identity.
"""
from __future__ import annotations

import os
from pathlib import Path

from facepipe.prepare.manifest import kept_faces


def set_members(records) -> dict[str, list[str]]:
    """identity -> chip paths (unmasked then masked, in source order) of everything in the training set."""
    members: dict[str, list[str]] = {}
    for r in sorted(records, key=lambda r: r["source"]):
        for face in kept_faces(r):
            paths = members.setdefault(r["identity"], [])
            paths.append(face["output"])
            if face.get("masked_output"):
                paths.append(face["masked_output"])
    return dict(sorted(members.items()))


def pack_recordio(dst: Path, records, size: tuple[int, int]) -> tuple[int, int]:
    """Write DST/train.rec, train.idx, property and labels.tsv; -> (images, identities)."""
    from facepipe.train.recordio import RecordIOWriter

    members = set_members(records)
    tmp = dst / "train.partial"
    count = 0
    with RecordIOWriter(tmp) as writer:
        for label, (identity, paths) in enumerate(members.items()):
            for rel in paths:
                writer.write((dst / rel).read_bytes(), label)
                count += 1
    for suffix in (".rec", ".idx"):  # a kill while packing leaves the previous pair (or none), never half of one
        os.replace(dst / f"train.partial{suffix}", dst / f"train{suffix}")
    (dst / "property").write_text(f"{len(members)},{size[1]},{size[0]}", encoding="utf-8")
    with open(dst / "labels.tsv", "w", encoding="utf-8") as f:
        f.write("label\tidentity\timages\n")
        for label, (identity, paths) in enumerate(members.items()):
            f.write(f"{label}\t{identity}\t{len(paths)}\n")
    return count, len(members)
