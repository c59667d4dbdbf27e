"""Identity hygiene from embeddings: one person under two folders, images of someone else inside a folder,
and identities that also appear in an evaluation set.

All comparisons are cosine similarities of L2-normalised embeddings (the recognizer's space). An
identity is summarised by its centroid (the normalised mean of its chips' embeddings). An image is an
*outlier* when it is far from the centroid of the *other* images of its folder (leave-one-out, so it
does not pull the centroid towards itself), or when another identity's centroid is closer to it than
its own. Thresholds are options: the defaults were read off celeba-dev with dlib's ResNet (docs/prepare.md).
"""
from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facepipe.prepare.manifest import decode_embedding, kept_faces

# Defaults for dlib's ResNet, whose cosine similarities are compressed (different celeba-dev identities:
# centroid similarity median 0.87, 99.9th percentile 0.963). Other recognizers need their own values.
SAME_PERSON_THRESHOLD = 0.97  # centroid vs centroid: two halves of one identity reach it 99% of the time
OUTLIER_THRESHOLD = 0.88  # image vs leave-one-out centroid of its identity (1st percentile is 0.906)
OUTLIER_MARGIN = 0.03  # ... or another identity's centroid is this much closer than its own
OVERLAP_THRESHOLD = 0.97  # centroid vs centroid of an evaluation-set identity


@dataclass
class HygieneThresholds:
    same_person: float = SAME_PERSON_THRESHOLD
    outlier: float = OUTLIER_THRESHOLD
    overlap: float = OVERLAP_THRESHOLD
    outlier_margin: float = OUTLIER_MARGIN


@dataclass
class IdentityGroup:
    name: str
    embeddings: np.ndarray  # N x D
    outputs: list[str]  # chip path per row
    sources: list[str]

    @property
    def centroid(self) -> np.ndarray:
        return _unit(self.embeddings.mean(0))


@dataclass
class HygieneReport:
    thresholds: HygieneThresholds
    identities: int = 0
    images: int = 0
    same_person: list[dict] = field(default_factory=list)  # pairs above the threshold
    nearest_pairs: list[dict] = field(default_factory=list)  # the closest pairs, flagged or not (for a look)
    outliers: list[dict] = field(default_factory=list)
    overlap: list[dict] = field(default_factory=list)  # identities found in evaluation sets
    overlap_sets: list[dict] = field(default_factory=list)  # the evaluation sets checked: path, identities, images
    similarity_stats: dict = field(default_factory=dict)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / max(float(np.linalg.norm(v)), 1e-12)).astype(np.float32)


def identity_groups(records) -> dict[str, IdentityGroup]:
    """Embeddings of the kept (unmasked) chips per identity, from manifest records."""
    rows: dict[str, tuple[list, list, list]] = {}
    for r in records:
        if r.get("excluded"):
            continue
        for face in kept_faces(r):
            if face.get("embedding"):
                e, o, s = rows.setdefault(r["identity"], ([], [], []))
                e.append(decode_embedding(face["embedding"]))
                o.append(face["output"])
                s.append(r["source"])
    return {name: IdentityGroup(name, np.stack(e), o, s) for name, (e, o, s) in sorted(rows.items())}


def centroid_matrix(groups: dict[str, IdentityGroup]) -> tuple[list[str], np.ndarray]:
    names = list(groups)
    if not names:
        return [], np.zeros((0, 0), np.float32)
    return names, np.stack([groups[n].centroid for n in names])


def same_person_pairs(groups: dict[str, IdentityGroup], threshold: float, nearest: int = 10) -> tuple[list[dict],
                                                                                                      list[dict]]:
    """(identity pairs whose centroids are at least `threshold` alike, the `nearest` most alike pairs)."""
    names, c = centroid_matrix(groups)
    if len(names) < 2:
        return [], []
    sim = c @ c.T
    iu, ju = np.triu_indices(len(names), k=1)
    order = np.argsort(-sim[iu, ju])
    pairs = [{"identity_a": names[iu[k]], "identity_b": names[ju[k]], "similarity": round(float(sim[iu[k], ju[k]]), 4),
              "images_a": len(groups[names[iu[k]]].outputs), "images_b": len(groups[names[ju[k]]].outputs)}
             for k in order[:max(nearest, int((sim[iu, ju] >= threshold).sum()))]]
    return [p for p in pairs if p["similarity"] >= threshold], pairs[:nearest]


def outlier_images(groups: dict[str, IdentityGroup], threshold: float, same_person: list[dict] = (),
                   margin: float = 0.0) -> list[dict]:
    """Images far from their own identity (below `threshold`), or nearer another identity's centroid than
    their own by more than `margin`; worst first.

    Identity pairs already reported as one person (`same_person`) do not count as "another identity"
    for each other: their images are explained by that pair."""
    names, c = centroid_matrix(groups)
    index = {n: i for i, n in enumerate(names)}
    twin_rows: dict[str, list[int]] = {n: [] for n in names}
    for p in same_person:
        if p["identity_a"] in index and p["identity_b"] in index:
            twin_rows[p["identity_a"]].append(index[p["identity_b"]])
            twin_rows[p["identity_b"]].append(index[p["identity_a"]])
    out = []
    for gi, name in enumerate(names):
        g = groups[name]
        n = len(g.outputs)
        if n < 2:
            continue
        total = g.embeddings.sum(0)
        for i in range(n):
            own_centroid = _unit(total - g.embeddings[i])  # leave-one-out
            own = float(g.embeddings[i] @ own_centroid)
            others = c @ g.embeddings[i]
            others[gi] = -np.inf
            others[twin_rows[name]] = -np.inf
            j = int(np.argmax(others)) if np.isfinite(others).any() else -1
            nearest = float(others[j]) if j >= 0 else float("nan")
            closer = j >= 0 and nearest - own > margin
            if own < threshold or closer:
                out.append({"identity": name, "source": g.sources[i], "output": g.outputs[i],
                            "own_similarity": round(own, 4),
                            "nearest_identity": names[j] if j >= 0 else None,
                            "nearest_similarity": round(nearest, 4) if j >= 0 else None,
                            "why": "closer to another identity" if closer else "far from its identity"})
    out.sort(key=lambda d: d["own_similarity"] - (d["nearest_similarity"] or -1.0))
    return out


def similarity_stats(groups: dict[str, IdentityGroup]) -> dict:
    """Distribution of same-identity (leave-one-out) and cross-identity centroid similarities: for choosing
    thresholds."""
    names, c = centroid_matrix(groups)
    loo = []
    for g in groups.values():
        if len(g.outputs) >= 2:
            total = g.embeddings.sum(0)
            loo.extend(float(e @ _unit(total - e)) for e in g.embeddings)
    cross = (c @ c.T)[np.triu_indices(len(names), k=1)] if len(names) > 1 else np.zeros(0)

    def pct(values) -> dict:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return {}
        return {f"p{q}": round(float(np.percentile(values, q)), 4) for q in (1, 5, 50, 95, 99)} | {
            "max": round(float(values.max()), 4), "n": int(values.size)}

    return {"image_vs_own_identity": pct(loo), "identity_vs_identity": pct(cross)}


def overlap_identities(groups: dict[str, IdentityGroup], reference, threshold: float, records) -> list[dict]:
    """Identities of this set that are also in `reference` (a ReferenceSet): same photo bytes, or centroids alike."""
    found: dict[str, dict] = {}
    for r in records:  # identical files: certain, whatever the embeddings say
        other = reference.hashes.get(r.get("sha256"))
        if other is not None and r["identity"] not in found:
            found[r["identity"]] = {"identity": r["identity"], "other_set": str(reference.path),
                                    "other_identity": other,
                                    "similarity": None, "by": "same file", "example": r["source"]}
    names, c = centroid_matrix(groups)
    if names and reference.names:
        sim = c @ reference.centroids.T
        for i, name in enumerate(names):
            j = int(np.argmax(sim[i]))
            s = float(sim[i, j])
            if name in found:
                found[name]["similarity"] = round(s, 4)
            elif s >= threshold:
                found[name] = {"identity": name, "other_set": str(reference.path), "other_identity": reference.names[j],
                               "similarity": round(s, 4), "by": "embedding", "example": None}
    return sorted(found.values(), key=lambda d: d["identity"])


def closest_pair(groups: dict[str, IdentityGroup], reference) -> dict | None:
    """The most alike (this set's identity, evaluation identity) pair: how close the nearest miss was."""
    names, c = centroid_matrix(groups)
    if not names or not reference.names:
        return None
    sim = c @ reference.centroids.T
    i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
    return {"identity": names[i], "other_identity": reference.names[j], "similarity": round(float(sim[i, j]), 4)}


def write_reports(dst: Path, report: HygieneReport) -> list[Path]:
    """hygiene.json (everything) and one CSV per finding; returns the paths written."""
    paths = [dst / "hygiene.json"]
    data = asdict(report)
    paths[0].write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, rows, cols in (
        ("same_person_pairs.csv", report.same_person, ["identity_a", "identity_b", "similarity", "images_a",
                                                       "images_b"]),
        ("outliers.csv", report.outliers, ["identity", "source", "output", "own_similarity", "nearest_identity",
                                           "nearest_similarity", "why"]),
        ("overlap.csv", report.overlap, ["identity", "other_set", "other_identity", "similarity", "by", "example"]),
    ):
        with open(dst / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        paths.append(dst / name)
    return paths
