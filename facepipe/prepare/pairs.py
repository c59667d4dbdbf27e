"""A masked verification list: masked probes against unmasked references, genuine and impostor pairs.

Lines are `probe reference same(0|1)` with paths relative to the prepared folder, the format
facepipe.recognition.verification.read_pairs_file reads. A genuine pair never uses the masked copy of
the reference photo itself (that would test the mask, not the face). Fixed seed; genuine and impostor
pairs are interleaved so that 10-fold splits in file order mix both.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from facepipe.prepare.config import PrepareError
from facepipe.prepare.manifest import kept_faces


def masked_pairs(records, genuine: int = 1000, impostor: int = 1000, seed: int = 0) -> list[tuple[str, str, bool]]:
    probes, refs = [], {}  # probes: (identity, masked path, source); refs: identity -> [(path, source)]
    for r in sorted(records, key=lambda r: r["source"]):
        for face in kept_faces(r):
            refs.setdefault(r["identity"], []).append((face["output"], r["source"]))
            if face.get("masked_output"):
                probes.append((r["identity"], face["masked_output"], r["source"]))
    if not probes:
        raise PrepareError("no masked copies in this folder: run `facepipe prepare` with --mask-ratio above 0")
    identities = sorted(refs)
    if len(identities) < 2:
        raise PrepareError("masked pairs need at least two identities")
    rng = np.random.default_rng(seed)
    candidates = [(p, ref) for ident, p, src in probes for ref, ref_src in refs[ident] if ref_src != src]
    if not candidates:
        raise PrepareError("no genuine masked pair possible: each identity with a masked copy has only that one photo")
    pick = rng.choice(len(candidates), min(genuine, len(candidates)), replace=False)
    pairs = [(candidates[i][0], candidates[i][1], True) for i in sorted(pick)]
    seen, tries = set(), 0
    while len(seen) < impostor and tries < impostor * 20:
        tries += 1
        ident, probe, _ = probes[int(rng.integers(len(probes)))]
        other = identities[int(rng.integers(len(identities)))]
        if other == ident:
            continue
        ref = refs[other][int(rng.integers(len(refs[other])))][0]
        seen.add((probe, ref))
    pairs += [(a, b, False) for a, b in sorted(seen)]
    return [pairs[i] for i in rng.permutation(len(pairs))]


def write_pairs(path: Path, pairs: list[tuple[str, str, bool]]) -> tuple[int, int, int]:
    """Write the list; -> (genuine, impostor, skipped because a path holds whitespace)."""
    lines, skipped = [], 0
    for a, b, same in pairs:
        if any(ch.isspace() for ch in a + b):
            skipped += 1
            continue
        lines.append(f"{a} {b} {int(same)}\n")
    Path(path).write_text("".join(lines), encoding="utf-8")
    genuine = sum(1 for line in lines if line.endswith(" 1\n"))
    return genuine, len(lines) - genuine, skipped
