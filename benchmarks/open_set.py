"""Open-set identification on CelebA: how often are strangers named, how often are enrolled people named right?

Gallery: 100 identities x 3 photos (real SQLite gallery). Probes: the other photos of those 100
(they should get their name) and every photo of the 50 identities that were not enrolled (they should
be "unknown"). Compares face_recognition's fixed tolerance (Euclidean distance 0.6 on dlib descriptors)
with facepipe's default threshold (the gallery's own calibration). Several random splits.

    python benchmarks/open_set.py [--splits 5] [--plot docs/open_set.png]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import data_root, embed_photos, identity_photos
from rich.console import Console
from rich.table import Table

from facepipe.runtime.loader import load_recognizer
from facepipe.gallery import Gallery
from facepipe.matching import choose_threshold

FACE_RECOGNITION_TOLERANCE = 0.6  # face_recognition: Euclidean distance between raw dlib descriptors


def run_split(raw, labels, names, seed, n_enrolled=100, per_person=3):
    emb = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    valid = ~np.isnan(emb[:, 0])
    ids = [i for i in range(len(names)) if (valid & (labels == i)).sum() >= per_person + 1]
    enrolled = set(rng.choice(ids, size=n_enrolled, replace=False).tolist())
    gallery_rows, genuine_rows = [], []
    for i in enrolled:
        rows = rng.permutation(np.flatnonzero(valid & (labels == i)))
        gallery_rows += rows[:per_person].tolist()
        genuine_rows += rows[per_person:].tolist()
    stranger_rows = np.flatnonzero(valid & ~np.isin(labels, list(enrolled))).tolist()
    recognizer = load_recognizer()
    with tempfile.TemporaryDirectory() as tmp, Gallery(Path(tmp) / "g.db") as gallery:
        gallery.check_model(recognizer.fingerprint, recognizer.embedding_size)
        for r in gallery_rows:
            gallery.add_face(names[labels[r]], f"row{r}", f"hash{r}", [0, 0, 1, 1], 1.0, emb[r])
        threshold = choose_threshold(recognizer, gallery, None)
        gen = gallery.match(emb[genuine_rows], -1.0, 1)
        strg = gallery.match(emb[stranger_rows], -1.0, 1)
    gen_sim = np.array([m.similarity for m in gen])
    gen_right = np.array([m.candidates[0].identity == names[labels[r]] for m, r in zip(gen, genuine_rows)])
    str_sim = np.array([m.similarity for m in strg])
    out = {"threshold": threshold.value, "gen_sim": gen_sim, "gen_right": gen_right, "str_sim": str_sim}
    t = threshold.value
    out["fp_strangers_named"] = float((str_sim >= t).mean())
    out["fp_genuine_correct"] = float(((gen_sim >= t) & gen_right).mean())
    out["fp_genuine_wrong_name"] = float(((gen_sim >= t) & ~gen_right).mean())

    # face_recognition's rule: the nearest enrolled face by Euclidean distance, if within 0.6.
    g = raw[gallery_rows]
    g_labels = labels[gallery_rows]

    def nearest(rows):
        d = np.linalg.norm(raw[rows][:, None] - g[None], axis=2)
        return d.min(1), g_labels[d.argmin(1)]
    gd, gl = nearest(genuine_rows)
    sd, _ = nearest(stranger_rows)
    within = gd <= FACE_RECOGNITION_TOLERANCE
    out["fr_strangers_named"] = float((sd <= FACE_RECOGNITION_TOLERANCE).mean())
    out["fr_genuine_correct"] = float((within & (gl == labels[genuine_rows])).mean())
    out["fr_genuine_wrong_name"] = float((within & (gl != labels[genuine_rows])).mean())
    out["oracle_threshold"] = float(np.quantile(str_sim, 0.98))
    out["oracle_genuine_correct"] = float(((gen_sim >= out["oracle_threshold"]) & gen_right).mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()

    people = identity_photos(data_root() / "celeba-dev")
    names = list(people)
    photos = [p for n in names for p in people[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in people[n]])
    raw = embed_photos(photos, "celeba-dev-dlib-raw")
    print(f"{len(photos)} photos, {len(names)} identities, faces found in {(~np.isnan(raw[:, 0])).sum()}")

    results = [run_split(raw, labels, names, seed) for seed in range(args.splits)]
    table = Table(title=f"Open set, CelebA: 100 enrolled x 3 photos, 50 strangers ({args.splits} random splits, mean)")
    for col in ("decision rule", "threshold (cosine)", "strangers named", "enrolled named correctly", "enrolled given a wrong name"):
        table.add_column(col)
    for tag, label in (("fr", "face_recognition tolerance 0.6"), ("fp", "facepipe default (calibrated)")):
        th = "distance 0.6" if tag == "fr" else f"{np.mean([r['threshold'] for r in results]):.3f}"
        table.add_row(label, th,
                      f"{np.mean([r[f'{tag}_strangers_named'] for r in results]):.1%}",
                      f"{np.mean([r[f'{tag}_genuine_correct'] for r in results]):.1%}",
                      f"{np.mean([r[f'{tag}_genuine_wrong_name'] for r in results]):.1%}")
    table.add_row("(oracle: threshold set on the strangers at 2%)", f"{np.mean([r['oracle_threshold'] for r in results]):.3f}",
                  "2.0%", f"{np.mean([r['oracle_genuine_correct'] for r in results]):.1%}", "")
    Console().print(table)
    print("per split (facepipe): " + "; ".join(
        f"t={r['threshold']:.3f} strangers {r['fp_strangers_named']:.1%} correct {r['fp_genuine_correct']:.1%}" for r in results))
    if args.plot:
        plot(results[0], args.plot)


def plot(r, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    bins = np.linspace(0.85, 1.0, 60)
    ax.hist(r["gen_sim"][r["gen_right"]], bins, alpha=0.6, label="enrolled person, best = right name", color="tab:green")
    ax.hist(r["gen_sim"][~r["gen_right"]], bins, alpha=0.6, label="enrolled person, best = wrong name", color="tab:orange")
    ax.hist(r["str_sim"], bins, alpha=0.6, label="stranger's best match", color="tab:red")
    ax.axvline(r["threshold"], color="tab:blue", label="facepipe calibrated")
    ax.set_xlabel("cosine similarity to the best gallery person")
    ax.set_ylabel("probes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
