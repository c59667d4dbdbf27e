"""Naming the first clusters (issue 27): do faces of other people take the name?

A photo-app user clusters a folder, then names clusters one by one, largest first. Until MIN_PERSONS persons are
named, the gallery cannot calibrate from its own persons. Per random folder of celeba-dev identities (largest face
of each photo, facepipe's default descriptors, cached), 80 % of each identity's photos are clustered
(facepipe.pipeline.clustering.recluster, the real store), the largest clusters are named after their main identity
(ClusterStore.name), and then every face that is not enrolled -- the faces left in clusters or alone, and the
20 % held back as photos that arrive later -- is matched against the gallery at each rule's threshold:

  wrong    faces that take the name of a person who is not their identity at the threshold (what `identify` would
           say of them if nothing else decided); "shown": those among the new photos and the faces alone, the ones
           the views name by the threshold (a face in an unnamed cluster is shown unnamed: StoredFace.identity)
  recall   held-back photos of the named identities that are named right
  clean    runs (seeds) where no face took a wrong name

Rules: "model default" (facepipe before issue 27: the recognizer's 0.846 below MIN_PERSONS persons); "clusters,
one law" (the faces of unnamed clusters as strangers beside the enrolled impostors, one normal law over all their
scores, a Student-t bound over persons + clusters: the calibration of larger galleries, extended); "clusters, per
person" (the default now: facepipe.openset.policy.identify_threshold on the real gallery, the highest of each known
person's own bound, facepipe.openset.calibration.small_gallery_threshold); "+ faces alone" (the same, with the
faces no cluster took as persons of their own); "reference set" (the same bounds over a fixed file of stranger
embeddings shipped with the model instead of the clusters, played by all photos of 60 celeba-dev identities outside
the folder: in-distribution for this set, so its best case). All floor at the model default.

    FACEPIPE_BENCH_CACHE=~/.cache/facepipe-dev nice -n 10 python benchmarks/cluster_naming.py [--seeds 10]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import celeba_dev
from _open_set_features import default_embeddings
from rich.console import Console
from rich.table import Table

from facepipe.gallery.clusters import ClusterStore, unnamed_cluster_faces
from facepipe.gallery.sqlite import SqliteGallery
from facepipe.openset.calibration import impostor_best_scores, prediction_quantile, stranger_scores
from facepipe.openset.policy import MIN_PERSONS, TARGET_FPIR, identify_threshold
from facepipe.pipeline.clustering import recluster
from facepipe.types import Face

NAMED = (1, 2, 5, 9)
RULES = ("model default", "clusters, one law", "clusters, per person", "+ faces alone", "reference set")
HELD_BACK = 0.2
REFERENCE_IDENTITIES = 60


class _Recognizer:
    """What the policy reads of the recognizer: its name and 1:1 threshold (dlib's ResNet)."""

    def __init__(self):
        from facepipe.runtime.loader import load_recognizer

        real = load_recognizer(threads=1)
        self.name, self.threshold, self.metric = real.name, real.threshold, real.metric


def _calibrated(gallery: SqliteGallery, strangers: np.ndarray, people: np.ndarray, floor: float) -> float:
    """The gallery's own calibration with these strangers (the same functions the gallery calls), floored."""
    searcher = gallery._searcher()
    scores = stranger_scores(searcher.n_persons, lambda: (strangers, people), searcher.match)
    value = searcher.calibrate(TARGET_FPIR, scores)
    return floor if value is None else max(value, floor)


def _one_law(gallery: SqliteGallery, strangers: np.ndarray, people: np.ndarray, floor: float) -> float:
    """Tried: one normal law over the enrolled impostors' and the strangers' best scores, bound over persons +
    clusters (a single person gives no impostor of its own)."""
    searcher = gallery._searcher()
    own = impostor_best_scores(searcher.matrix, searcher.labels, searcher.scorer)
    extra, _ = stranger_scores(searcher.n_persons, lambda: (strangers, people), searcher.match)
    units = (searcher.n_persons if searcher.n_persons >= 2 else 0) + len(np.unique(people))
    scores = np.r_[own, extra]
    scores = scores[np.isfinite(scores)]
    if units < MIN_PERSONS or len(scores) < MIN_PERSONS:
        return floor
    return max(floor, prediction_quantile(scores, 1 - TARGET_FPIR, units))


def one_folder(rng, embeddings, labels, names, identities: int, recognizer, folder: Path) -> list[dict]:
    ids = np.unique(labels[(labels >= 0)])
    counts = np.bincount(labels[labels >= 0], minlength=len(names))
    chosen = rng.choice(ids[counts[ids] >= 5], identities, replace=False)
    others = np.setdiff1d(ids, chosen)
    reference = np.flatnonzero(np.isin(labels, rng.choice(others, REFERENCE_IDENTITIES, replace=False)))
    first, later = [], []
    for identity in chosen:
        rows = rng.permutation(np.flatnonzero(labels == identity))
        cut = max(1, int(round(HELD_BACK * len(rows))))
        later += rows[:cut].tolist()
        first += rows[cut:].tolist()
    first = np.array(rng.permutation(first))
    later = np.array(later)

    gallery = SqliteGallery(folder / "g.db")
    gallery.check_model("dlib", embeddings.shape[1], recognizer.metric)
    store = ClusterStore(gallery)
    for row in first:
        store.add_photo(f"photo{row}", f"/{row}.jpg", (100, 100),
                        [Face(box=np.array([0, 0, 10, 10], np.float32), score=1.0, embedding=embeddings[row])])
    recluster(store, recognizer.metric, recognizer.threshold, None)
    row_of = {f.id: int(f.photo[5:]) for f in store.faces()}
    out = []
    named = 0
    for cluster, _ in list(store.clusters()):
        if named == max(NAMED):
            break
        members = [row_of[f.id] for f in store.members(cluster)]
        store.name(cluster, names[np.bincount(labels[members]).argmax()])
        named += 1
        if named not in NAMED:
            continue
        person_label = {p.name: names.index(p.name) for p in gallery.persons()}
        open_faces = [(row_of[f.id]) for f in store.faces("WHERE f.person IS NULL")]
        alone_ids, alone = store.embeddings("WHERE person IS NULL AND cluster IS NULL")
        in_clusters, people = unnamed_cluster_faces(gallery)
        product = identify_threshold(recognizer, gallery).value
        floor = recognizer.threshold
        thresholds = {
            "model default": floor,
            "clusters, one law": _one_law(gallery, in_clusters, people, floor),
            "clusters, per person": product,
            "+ faces alone": _calibrated(gallery, np.vstack([in_clusters, alone]), np.r_[people, -1 - alone_ids],
                                         floor),
            "reference set": _calibrated(gallery, embeddings[reference], labels[reference], floor),
        }
        assert abs(_calibrated(gallery, in_clusters, people, recognizer.threshold) - product) < 1e-9
        probes = np.r_[open_faces, later].astype(np.int64)
        matches = gallery.match(embeddings[probes], -np.inf, 1)
        best = np.array([m.similarity for m in matches])
        who = np.array([person_label[m.candidates[0].identity] for m in matches])
        truth = labels[probes]
        is_later = np.r_[np.zeros(len(open_faces), bool), np.ones(len(later), bool)]
        shown = np.r_[[f.cluster is None for f in store.faces("WHERE f.person IS NULL")], np.ones(len(later), bool)]
        genuine = is_later & np.isin(truth, list(person_label.values()))
        for rule, value in thresholds.items():
            taken = best >= value
            out.append({"identities": identities, "named": named, "persons": len(person_label), "rule": rule,
                        "threshold": value, "wrong": int((taken & (who != truth)).sum()),
                        "shown": int((taken & (who != truth) & shown).sum()),
                        "right": int((taken & (who == truth) & genuine).sum()), "genuine": int(genuine.sum())})
    gallery.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--identities", type=int, nargs="+", default=[15, 40])
    args = parser.parse_args()

    names, photos, labels = celeba_dev()
    embeddings, _, _ = default_embeddings(photos, "celeba_dev_default")
    labels = np.where(np.isnan(embeddings).any(1), -1, labels)  # a photo with no face found takes no part
    recognizer = _Recognizer()
    rows = []
    for identities in args.identities:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as folder:
                rows += one_folder(np.random.default_rng(seed), embeddings, labels, names, identities, recognizer,
                                   Path(folder))
    table = Table(title=f"celeba-dev, {args.seeds} seeds per folder size: faces named as someone they are not, runs "
                        "with none, and held-back photos of the named identities named (recall)")
    for col in ("identities", "named clusters", "rule", "threshold (mean, min-max)", "wrong names (total)",
                "runs clean", "wrong names shown", "runs clean shown", "recall"):
        table.add_column(col, justify="left" if col == "rule" else "right")
    for identities in args.identities:
        for named in NAMED:
            for rule in RULES:
                sel = [r for r in rows if r["identities"] == identities and r["named"] == named and r["rule"] == rule]
                if not sel:
                    continue
                th = np.array([r["threshold"] for r in sel])
                wrong = sum(r["wrong"] for r in sel)
                clean = sum(r["wrong"] == 0 for r in sel)
                shown = sum(r["shown"] for r in sel)
                clean_shown = sum(r["shown"] == 0 for r in sel)
                recall = sum(r["right"] for r in sel) / max(1, sum(r["genuine"] for r in sel))
                table.add_row(str(identities), str(named), rule, f"{th.mean():.3f} ({th.min():.3f}-{th.max():.3f})",
                              str(wrong), f"{clean}/{len(sel)}", str(shown), f"{clean_shown}/{len(sel)}",
                              f"{recall:.3f}")
            table.add_section()
    Console(width=190).print(table)


if __name__ == "__main__":
    main()
