"""An evaluation set to keep apart from training (--exclude-overlap-with): its identities' embeddings and file hashes.

OTHER_SET is either a folder made by `facepipe prepare` with the same recognizer (its manifest already
holds the embeddings and the source hashes) or any identity-per-folder tree of photos, which is run
through the pipeline here (largest face per photo). Photos where no face is found but that are small
and square, like the 112x112 chips of aligned evaluation sets, are taken as chips aligned to the
ArcFace template.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facepipe.errors import FacepipeError
from facepipe.pipeline.batch import ModelSpec, run_images
from facepipe.prepare.config import CONFIG_FILE, PrepareError
from facepipe.prepare.hygiene import identity_groups
from facepipe.prepare.manifest import MANIFEST_FILE, read_manifest
from facepipe.prepare.scan import file_sha256, scan_identity_tree
from facepipe.runtime.align import ARCFACE_TEMPLATE, align_face
from facepipe.runtime.image import read_image


@dataclass
class ReferenceSet:
    path: Path
    names: list[str]
    centroids: np.ndarray  # len(names) x D
    hashes: dict[str, str]  # sha256 of a source photo -> identity
    images: int  # images that gave an embedding
    from_manifest: bool


def _centroids(by_identity: dict[str, list[np.ndarray]]) -> tuple[list[str], np.ndarray]:
    names = sorted(n for n, v in by_identity.items() if v)
    rows = []
    for n in names:
        m = np.mean(by_identity[n], axis=0)
        rows.append(m / max(float(np.linalg.norm(m)), 1e-12))
    return names, (np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32))


def _looks_like_chip(image: np.ndarray) -> bool:
    h, w = image.shape[:2]
    return max(h, w) <= 256 and 0.8 <= w / h <= 1.25


def load_reference(path: str | Path, fingerprint: str, spec: ModelSpec, workers: int = 1, pipeline=None,
                   on_progress=None) -> ReferenceSet:
    path = Path(path)
    if (path / MANIFEST_FILE).is_file() and (path / CONFIG_FILE).is_file():
        saved = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        if saved.get("embedding_fingerprint") == fingerprint:
            records = read_manifest(path)
            groups = identity_groups(r for r in records if not r.get("excluded"))
            names, cents = _centroids({n: list(g.embeddings) for n, g in groups.items()})
            hashes = {r["sha256"]: r["identity"] for r in records if r.get("sha256")}
            return ReferenceSet(path, names, cents, hashes, sum(len(g.outputs) for g in groups.values()), True)
    scan = scan_identity_tree(path)
    hashes = {file_sha256(img.path): img.identity for img in scan.images}
    identity_of = {img.path: img.identity for img in scan.images}
    by_identity: dict[str, list[np.ndarray]] = {n: [] for n in scan.identities}
    missed = []
    for result in run_images([img.path for img in scan.images], spec, "largest", workers, pipeline=pipeline):
        if on_progress:
            on_progress()
        if result.faces and result.faces[0].embedding is not None:
            by_identity[identity_of[result.path]].append(result.faces[0].embedding)
        elif result.error is None:
            missed.append(result.path)
    if missed:  # aligned chips: no detector needed
        if pipeline is None:
            from facepipe.pipeline.batch import build_pipeline

            pipeline = build_pipeline(spec)
        rec = pipeline.recognizer
        for p in missed:
            try:
                image = read_image(p)
            except FacepipeError:
                continue
            if _looks_like_chip(image):
                h, w = image.shape[:2]
                chip = align_face(image, ARCFACE_TEMPLATE.scaled_to(w, h).points, rec.template)
                by_identity[identity_of[p]].append(rec.embed(chip[None])[0])
    names, cents = _centroids(by_identity)
    if not names:
        raise PrepareError(f"{path}: no face found in any image of this evaluation set")
    return ReferenceSet(path, names, cents, hashes, sum(len(by_identity[n]) for n in names), False)
