"""Open-set identification on CelebA: facepipe's default against face_recognition's recipe, same photos, same run.

Each split: 100 identities x 3 photos enrolled (a real SQLite gallery for facepipe), the other photos of
those 100 should get their name, every photo of 50 other identities (strangers) should be "unknown".
A photo where no face is found counts as "not named" (a miss for enrolled people). The enrolled photos
are drawn among those where both pipelines find a face, so both galleries hold the same photos.

    nice -n 10 python benchmarks/open_set.py [--splits 10] [--variants] [--plot docs/open_set.png]
        [--detector facepipe|dlib|FILE]

--detector: the same splits with that detector in front of the default recognizer, as another row (the
enrolled photos are then those where it finds a face too).
Descriptors are computed once per photo and cached ($FACEPIPE_BENCH_CACHE or models/cache; --refresh
recomputes), then reused by every split. "without the second chance": the same run, with the photos whose
face only the detector's second chance found counted as "no face" (they are never enrolled). --variants
also prints the test-time choices (chip, mirror, jitter, metric, person scoring).
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from _common import celeba_dev
from _open_set_features import compute, default_embeddings, recipe_embeddings, time_side_by_side
from rich.console import Console
from rich.table import Table

from facepipe.gallery import SqliteGallery
from facepipe.openset.matching import person_scores
from facepipe.openset.policy import identify_threshold
from facepipe.runtime.detectors.dlib_detector import HOG_CONFIRMED, HOG_ROTATED
from facepipe.runtime.loader import load_recognizer

FACE_RECOGNITION_TOLERANCE = 0.6  # face_recognition: Euclidean distance between raw dlib descriptors
ORACLE_FPIR = 0.02  # "the best possible threshold": tuned on the strangers themselves to name 2% of them


def make_split(labels, n_ids, enrollable, seed, n_enrolled=100, per_person=3, n_strangers=50):
    rng = np.random.default_rng(seed)
    ids = [i for i in range(n_ids) if (enrollable & (labels == i)).sum() >= per_person + 1]
    enrolled = rng.choice(ids, n_enrolled, replace=False)
    rest = np.setdiff1d(np.unique(labels), enrolled)
    strangers = rng.choice(rest, min(n_strangers, len(rest)), replace=False)
    gallery, genuine = [], []
    for i in enrolled:
        chosen = rng.permutation(np.flatnonzero(enrollable & (labels == i)))[:per_person]
        gallery += chosen.tolist()
        genuine += np.setdiff1d(np.flatnonzero(labels == i), chosen).tolist()
    return np.array(gallery), np.array(genuine), np.flatnonzero(np.isin(labels, strangers))


def best_person(x, gallery_x, gallery_labels, n_ids, metric, aggregation):
    """Best person's score and index per row of x (-inf / -1 where x has no face)."""
    valid = ~np.isnan(x[:, 0])
    score, who = np.full(len(x), -np.inf), np.full(len(x), -1)
    if valid.any():
        s = person_scores(x[valid], gallery_x, gallery_labels, n_ids, metric, aggregation)
        score[valid], who[valid] = s.max(1), s.argmax(1)
    return score, who


def threshold_at(stranger_scores, rate):
    """The lowest threshold (names need score > it) that names at most `rate` of the strangers."""
    ranked = np.sort(stranger_scores)[::-1]
    return ranked[min(int(rate * len(ranked)), len(ranked) - 1)]


def summarise(gen_score, gen_right, str_score, threshold):
    """The figures of one split; `threshold`: names need score >= it."""
    t1, t2 = threshold_at(str_score, 0.01), threshold_at(str_score, ORACLE_FPIR)
    return {"rank1": float(gen_right.mean()),
            "named_at_1pct": float(((gen_score > t1) & gen_right).mean()),
            "oracle_named": float(((gen_score > t2) & gen_right).mean()),
            "named": float(((gen_score >= threshold) & gen_right).mean()),
            "strangers_named": float((str_score >= threshold).mean()),
            "threshold": float(threshold)}


def recipe_split(raw, labels, n_ids, split):
    g, gen, st = split
    gs, gw = best_person(raw[gen], raw[g], labels[g], n_ids, "euclidean", "best")
    ss, _ = best_person(raw[st], raw[g], labels[g], n_ids, "euclidean", "best")
    # similarity 1 - d^2/2 >= 0.82 is exactly distance <= 0.6 (facepipe.openset.matching.similarity_from_distance)
    out = summarise(gs, gw == labels[gen], ss, 1 - FACE_RECOGNITION_TOLERANCE ** 2 / 2)
    return out, gs, gw == labels[gen], ss


def facepipe_split(emb, labels, names, split, recognizer):
    """facepipe's default end to end: a real gallery, its calibrated threshold, SqliteGallery.match."""
    g, gen, st = split
    with tempfile.TemporaryDirectory() as tmp, SqliteGallery(Path(tmp) / "g.db") as gallery:
        gallery.check_model(recognizer.fingerprint, recognizer.embedding_size, recognizer.metric)
        for r in g:
            gallery.add_face(names[labels[r]], f"row{r}", f"hash{r}", [0, 0, 1, 1], 1.0, emb[r])
        threshold = identify_threshold(recognizer, gallery, None)

        def best(rows):
            score, right = np.full(len(rows), -np.inf), np.zeros(len(rows), bool)
            valid = ~np.isnan(emb[rows, 0])
            for i, m in zip(np.flatnonzero(valid), gallery.match(emb[rows][valid], -np.inf, 1)):
                score[i], right[i] = m.similarity, m.candidates[0].identity == names[labels[rows[i]]]
            return score, right
        gs, right = best(gen)
        ss, _ = best(st)
    out = summarise(gs, right, ss, threshold.value)
    out["source"] = threshold.source
    return out, gs, right, ss


def variants_table(var, labels, n_ids, splits):
    """The test-time choices, measured on the same splits: rank-1 and named at 1% strangers."""
    flip = (var["dchip"] + var["dchip_flip"]) / 2
    choices = {"5-point chip (facepipe before)": var["fp5"], "dlib chip": var["dchip"],
               "dlib chip + mirror": flip, "dlib chip + 4 jitters": var["dchip_jit"],
               "dlib chip + mirror + 4 jitters": (var["dchip"] + var["dchip_flip"] + 4 * var["dchip_jit"]) / 6}
    table = Table(title="Test-time choices (facepipe's detections; mean over splits)")
    for col in ("descriptor", "metric", "person score", "rank-1", "named @1% strangers"):
        table.add_column(col)
    for label, x in choices.items():
        for metric in ("euclidean", "cosine"):
            for agg in ("best", "best_two", "centroid", "blend"):
                r1, n1 = [], []
                for g, gen, st in splits:
                    gs, gw = best_person(x[gen], x[g], labels[g], n_ids, metric, agg)
                    ss, _ = best_person(x[st], x[g], labels[g], n_ids, metric, agg)
                    r = summarise(gs, gw == labels[gen], ss, np.inf)
                    r1.append(r["rank1"])
                    n1.append(r["named_at_1pct"])
                table.add_row(label, metric, agg, f"{np.mean(r1):.3f}", f"{np.mean(n1):.3f}")
    Console(width=170).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--variants", action="store_true", help="also measure the test-time choices")
    parser.add_argument("--refresh", action="store_true", help="recompute the cached descriptors")
    parser.add_argument("--keep-duplicates", action="store_true", help="keep the CelebA ids that are one person apart")
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--timed", type=int, default=120, help="photos timed side by side (recipe vs facepipe)")
    parser.add_argument("--detector", default=None, help="also measure this detector in front of the recognizer")
    args = parser.parse_args()

    names, photos, labels = celeba_dev(merge_same_person=not args.keep_duplicates)
    var = compute(photos, "open_set-celeba-dev-variants", args.refresh) if args.variants else None
    recipe = var["recipe"] if args.variants else recipe_embeddings(photos, "open_set-celeba-dev-recipe", args.refresh)
    emb, seconds, passes = default_embeddings(photos, "open_set-celeba-dev-default", args.refresh)
    rescued = np.isin(passes, [HOG_CONFIRMED, HOG_ROTATED])  # found by the second chance only
    without_second_chance = np.where(rescued[:, None], np.nan, emb)
    recognizer = load_recognizer()
    # Enrolled photos: where every pipeline compared finds a face, so that all galleries hold the same photos.
    enrollable = ~np.isnan(recipe[:, 0]) & ~np.isnan(without_second_chance[:, 0])
    other = None
    if args.detector:
        other, other_seconds, _ = default_embeddings(photos, f"open_set-celeba-dev-{Path(args.detector).stem}",
                                                     args.refresh, detector=args.detector)
        enrollable &= ~np.isnan(other[:, 0])
    splits = [make_split(labels, len(names), enrollable, seed) for seed in range(args.splits)]
    print(f"{len(photos)} photos of {len(np.unique(labels))} identities; recognizer {recognizer.name}, "
          f"metric {recognizer.metric}; {args.splits} splits")

    fr = [recipe_split(recipe, labels, len(names), s) for s in splits]
    fp = [facepipe_split(emb, labels, names, s, recognizer) for s in splits]
    fp_off = [facepipe_split(without_second_chance, labels, names, s, recognizer) for s in splits]
    rows = [("face_recognition recipe (HOG up 1, dlib, distance <= 0.6)", fr, recipe, None),
            ("facepipe default without the second chance", fp_off, without_second_chance, None),
            ("facepipe default", fp, emb, "facepipe")]
    if other is not None:
        rows.append((f"--detector {args.detector}", [facepipe_split(other, labels, names, s, recognizer)
                                                      for s in splits], other, None))
    recipe_seconds, facepipe_seconds, recipe_cpu, facepipe_cpu = time_side_by_side(photos, args.timed)

    def no_face(x):
        """No face found among the probes (the photos to name or to call unknown), mean over the splits."""
        return np.mean([np.isnan(x[np.r_[gen, st], 0]).mean() for _, gen, st in splits])

    table = Table(title=f"Open set, CelebA-dev: 100 enrolled x 3 photos, 50 strangers, {args.splits} random splits")
    for col in ("pipeline", "no face", "rank-1", "named @1% strangers", "default: named (mean / worst)",
                "default: strangers named (mean / worst)", "best threshold (2%) names", "s/photo"):
        table.add_column(col)
    timed = {None: "", "facepipe": f"{facepipe_seconds:.3f}"}
    for label, results, x, timing in rows:
        secs = f"{recipe_seconds:.3f}" if results is fr else timed[timing]
        r = [x[0] for x in results]
        mean = lambda k: np.mean([x[k] for x in r])  # noqa: E731
        table.add_row(label, f"{no_face(x):.1%}", f"{mean('rank1'):.3f}", f"{mean('named_at_1pct'):.3f}",
                      f"{mean('named'):.3f} / {min(x['named'] for x in r):.3f}",
                      f"{mean('strangers_named'):.1%} / {max(x['strangers_named'] for x in r):.1%}",
                      f"{mean('oracle_named'):.3f}", secs)
    Console(width=170).print(table)
    print(f"no face over all {len(photos)} photos: recipe {np.isnan(recipe[:, 0]).mean():.1%}, facepipe without "
          f"the second chance {np.isnan(without_second_chance[:, 0]).mean():.1%}, "
          f"facepipe {np.isnan(emb[:, 0]).mean():.1%}; "
          f"the second chance found {rescued.sum()} ({(passes == HOG_CONFIRMED).sum()} {HOG_CONFIRMED}, "
          f"{(passes == HOG_ROTATED).sum()} {HOG_ROTATED}), costing {seconds[rescued].mean():.3f} s per such photo "
          f"(detect + embed, while caching) against {seconds[~rescued & (passes != '')].mean():.3f} s for the others")
    r = [x[0] for x in fp]
    print(f"facepipe threshold: {r[0]['source']}; per split: " + "; ".join(
        f"t={x['threshold']:.3f} named {x['named']:.3f} strangers {x['strangers_named']:.1%}" for x in r))
    print(f"facepipe default names {np.mean([x['named'] for x in r]) / np.mean([x['oracle_named'] for x in r]):.1%} "
          "of what the best threshold (2% strangers, tuned on them) names")
    print(f"s/photo, side by side on {args.timed} photos (load average {os.getloadavg()[0]:.1f}): facepipe "
          f"{facepipe_seconds:.4f}, recipe {recipe_seconds:.4f}, ratio {facepipe_seconds / recipe_seconds:.2f}; CPU "
          f"s/photo: facepipe {facepipe_cpu:.4f}, recipe {recipe_cpu:.4f}, ratio {facepipe_cpu / recipe_cpu:.2f}; "
          f"(facepipe over all photos while caching: {seconds.mean():.4f})")
    if args.variants:
        variants_table(var, labels, len(names), splits)
    if args.plot:
        plot(fp[0], fr[0], args.plot)


def plot(fp, fr, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (res, gs, right, ss), title in ((axes[0], fp, "facepipe default"), (axes[1], fr, "face_recognition "
                                                                                             "recipe")):
        lo = np.quantile(np.r_[gs[np.isfinite(gs)], ss[np.isfinite(ss)]], 0.01)
        bins = np.linspace(lo, 1.0, 60)
        ax.hist(gs[np.isfinite(gs) & right], bins, alpha=0.6, label="enrolled person, best = right name",
                color="tab:green")
        ax.hist(gs[np.isfinite(gs) & ~right], bins, alpha=0.6, label="enrolled person, best = wrong name",
                color="tab:orange")
        ax.hist(ss[np.isfinite(ss)], bins, alpha=0.6, label="stranger's best match", color="tab:red")
        ax.axvline(res["threshold"], color="tab:blue",
                   label=f"default threshold {res['threshold']:.3f}: strangers named {res['strangers_named']:.1%}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("similarity to the best gallery person (1 - d\u00b2/2 for a distance)")
        ax.set_ylabel("probes")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
