"""The released recognizer against dlib's ResNet: the same photos, the same detections, in the same run.

    nice python benchmarks/recognizer_release.py [--model facepipe-mbf|FILE.onnx] [--splits 10]
        [--heldout ~/.cache/facepipe-runs/facepipe_mbf/heldout_identities.txt] [--roc docs/recognizer_lfw_roc.png]

1. celeba-dev open set, open_set.py's protocol: 100 identities x 3 photos enrolled in a real SQLite gallery, the
   other photos of those 100 should get their name, every photo of 50 other identities should be "unknown"; 10
   random splits; each model with its own calibrated default threshold. celeba-dev is never trained on.
2. LFW, the identities the release held out (the run folder's heldout_identities.txt): 10-fold verification
   accuracy (the LFW protocol: threshold chosen on 9 folds, measured on the 10th) on pairs built here: every
   identity gives at most 20 positive pairs, 3,000 positives in all at most, and as many random negatives.
3. Masked probes: the same figures with a synthetic mask (the preparation stage's `add_mask`, from the face's
   68 points, seed = photo index) painted on the probe photos (open set) or on the second photo of every
   pair (LFW); galleries stay unmasked. The detections are the clean photo's: this measures the recognizer.
4. Speed: ms per face embedding (ONNX Runtime, 2 threads, one chip, no mirror), interleaved; and identify s/photo
   (detect + embed every face, mirror on) of the chains against face_recognition's recipe, on the same photos.

Detections: the default detector (dlib HOG with its second chance), once per photo, the largest face; each model
cuts its own chip from it (dlib's ResNet: dlib's chip; an ArcFace-template model: the 5-point similarity) and
averages it with its mirror, exactly as `facepipe identify` does. Embeddings are cached per model fingerprint
($FACEPIPE_BENCH_CACHE or models/cache).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from _common import cache_dir, cached_for, celeba_dev, data_root
from open_set import facepipe_split, make_split
from rich.console import Console
from rich.table import Table

from facepipe.recognition.verification import evaluate_scores, plot_roc

MODELS = {"dlib ResNet (default)": "dlib"}
PAIRS_PER_IDENTITY = 20
MAX_POSITIVES = 3000


def detections(photos: list[Path], cache_name: str, refresh: bool = False) -> dict[str, np.ndarray]:
    """The default detector's largest face per photo, once: box, 5 and 68 points (NaN where no face), score."""
    from rich.progress import track

    from facepipe.errors import FacepipeError
    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.image import read_image

    cache = cache_dir() / f"{cache_name}-detections.npz"
    saved = cached_for(cache, photos, refresh)
    if saved is not None:
        return saved
    detector = build_pipeline(ModelSpec(threads=1), with_recognizer=False)
    out = {"box": np.full((len(photos), 4), np.nan, np.float32), "score": np.full(len(photos), np.nan, np.float32),
           "landmarks": np.full((len(photos), 5, 2), np.nan, np.float32),
           "landmarks68": np.full((len(photos), 68, 2), np.nan, np.float32)}
    for i, path in enumerate(track(photos, description=f"detections {cache_name}")):
        try:
            faces = detector.detect(read_image(path))
        except FacepipeError:
            continue
        if faces:
            face = max(faces, key=lambda f: f.area)
            out["box"][i], out["score"][i], out["landmarks"][i] = face.box, face.score, face.landmarks
            if face.landmarks68 is not None:
                out["landmarks68"][i] = face.landmarks68
    saved = {"keys": np.array([str(p) for p in photos]), **out}
    np.savez(cache, **saved)
    return saved


def features(photos: list[Path], dets: dict[str, np.ndarray], cache_name: str, spec: str, refresh: bool = False
             ) -> dict[str, np.ndarray]:
    """{"clean" | "masked": N x D embeddings (NaN rows: no face)} of one model on the cached detections, cached
    per model fingerprint."""
    from rich.progress import track

    from facepipe.pipeline.face_pipeline import FacePipeline
    from facepipe.prepare.masks import add_mask
    from facepipe.runtime.image import read_image
    from facepipe.runtime.loader import load_recognizer
    from facepipe.types import Face

    pipeline = FacePipeline(None, load_recognizer(spec, threads=1))
    fingerprint = pipeline.recognizer.fingerprint
    cache = cache_dir() / f"{cache_name}-{fingerprint.replace('/', '_')[:60]}.npz"
    saved = cached_for(cache, photos, refresh)
    if saved is not None:
        return saved
    out = {view: np.full((len(photos), pipeline.recognizer.embedding_size), np.nan, np.float32)
           for view in ("clean", "masked")}
    for i in track(np.flatnonzero(~np.isnan(dets["score"])), description=f"{pipeline.recognizer.name} {cache_name}"):
        image = read_image(photos[i])
        has68 = not np.isnan(dets["landmarks68"][i, 0, 0])
        face = Face(box=dets["box"][i], score=float(dets["score"][i]), landmarks=dets["landmarks"][i],
                    landmarks68=dets["landmarks68"][i] if has68 else None)
        rng = np.random.default_rng(i)
        masked = (add_mask(image, points68=face.landmarks68, rng=rng) if has68
                  else add_mask(image, landmarks5=face.landmarks, rng=rng)).image
        out["clean"][i] = pipeline.embed(image, [face])[0].embedding
        out["masked"][i] = pipeline.embed(masked, [face])[0].embedding
    saved = {"keys": np.array([str(p) for p in photos]), **out}
    np.savez(cache, **saved)
    return saved


def open_set(feats, specs, splits_n: int) -> dict[str, dict[str, dict[str, float]]]:
    from facepipe.runtime.loader import load_recognizer

    names, _, labels = celeba_dev()
    first = feats[f"{next(iter(specs))}/clean"]
    enrollable = ~np.isnan(first[:, 0])
    splits = [make_split(labels, len(names), enrollable, seed) for seed in range(splits_n)]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, spec in specs.items():
        recognizer = load_recognizer(spec, threads=1)
        clean, masked = feats[f"{name}/clean"], feats[f"{name}/masked"]
        for view in ("clean", "masked"):
            rows = []
            for split in splits:
                emb = clean if view == "clean" else np.where(np.isin(np.arange(len(clean)), split[0])[:, None],
                                                              clean, masked)
                rows.append(facepipe_split(emb, labels, names, split, recognizer)[0])
            results.setdefault(name, {})[view] = {
                k: float(np.mean([r[k] for r in rows])) for k in ("rank1", "named_at_1pct", "named",
                                                                  "strangers_named", "threshold")} | {
                "strangers_named_worst": float(max(r["strangers_named"] for r in rows))}
    return results


def lfw_pairs(labels: np.ndarray, valid: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = []
    for ident in np.unique(labels):
        idx = np.flatnonzero((labels == ident) & valid)
        pairs = [(a, b) for k, a in enumerate(idx) for b in idx[k + 1:]]
        pos += [pairs[j] for j in rng.permutation(len(pairs))[:PAIRS_PER_IDENTITY]]
    pos = [pos[j] for j in sorted(rng.permutation(len(pos))[:MAX_POSITIVES])]
    usable = np.flatnonzero(valid)
    neg: set[tuple[int, int]] = set()
    while len(neg) < len(pos):
        a, b = sorted(rng.choice(usable, 2, replace=False).tolist())
        if labels[a] != labels[b]:
            neg.add((a, b))
    pairs = [(a, b, True) for a, b in pos] + [(a, b, False) for a, b in sorted(neg)]
    pairs = [pairs[j] for j in rng.permutation(len(pairs))]  # folds are contiguous slices: mix both kinds
    return (np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs]), np.array([p[2] for p in pairs]))


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pair_scores(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    """Higher is more alike: the cosine, or minus the euclidean distance (dlib's raw vectors, as it is matched)."""
    return (unit(a) * unit(b)).sum(1) if metric == "cosine" else -np.linalg.norm(a - b, axis=1)


def lfw(feats, specs, labels, roc: Path | None) -> tuple[dict, int, int]:
    from facepipe.runtime.loader import load_recognizer

    valid = ~np.isnan(feats[f"{next(iter(specs))}/clean"][:, 0])
    left, right, same = lfw_pairs(labels, valid)
    results, curves = {}, {}
    for name, spec in specs.items():
        metric = load_recognizer(spec, threads=1).metric
        clean, masked = feats[f"{name}/clean"], feats[f"{name}/masked"]
        for view, other in (("clean", clean), ("masked", masked)):
            scores = pair_scores(clean[left], other[right], metric)
            r = evaluate_scores(scores, same)
            results.setdefault(name, {})[view] = {"accuracy": r["accuracy"], "accuracy_std": r["accuracy_std"],
                                                  "tar@far1e-3": r["tar_at_far"]["0.001"]}
            curves[f"{name}, {view}"] = (scores, same)
    if roc:
        plot_roc(curves, roc, title=f"LFW held-out identities: {int(same.sum())} + {int((~same).sum())} pairs")
    return results, int(same.sum()), int((~same).sum())


def embedding_speed(specs, repeats: int = 200) -> dict[str, float]:
    """ms per face: one chip through ONNX Runtime on 2 threads, no mirror, the models interleaved."""
    from facepipe.runtime.loader import load_recognizer

    recs = {name: load_recognizer(spec, threads=2) for name, spec in specs.items()}
    chips = {name: np.random.default_rng(0).integers(0, 256, (1, r.template.size[1], r.template.size[0], 3),
                                                     dtype=np.uint8) for name, r in recs.items()}
    seconds = dict.fromkeys(recs, 0.0)
    for name, r in recs.items():  # warm up
        r.embed_raw(chips[name])
    for _ in range(repeats):
        for name, r in recs.items():
            t = time.perf_counter()
            r.embed_raw(chips[name])
            seconds[name] += time.perf_counter() - t
    return {name: 1000 * s / repeats for name, s in seconds.items()}


def identify_speed(photos: list[Path], chains: dict[str, tuple[str | None, str]], n: int) -> dict[str, float]:
    """s/photo of face_recognition's recipe and of each (detector, recognizer) chain, alternating photo by photo."""
    import dlib

    from facepipe.pipeline.batch import ModelSpec, build_pipeline
    from facepipe.runtime.dlib_files import LANDMARKS_68, RESNET, dlib_model_path
    from facepipe.runtime.image import read_image

    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    net = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    pipelines = {label: build_pipeline(ModelSpec(detector=d, recognizer=r, threads=2)) for label, (d, r) in
                 chains.items()}
    sample = photos[:: max(1, len(photos) // n)][:n]
    seconds = {"face_recognition recipe": 0.0, **dict.fromkeys(pipelines, 0.0)}
    for path in sample:
        image = read_image(path)
        t = time.perf_counter()
        for rect in hog(image, 1):
            net.compute_face_descriptor(image, predictor(image, rect))
        seconds["face_recognition recipe"] += time.perf_counter() - t
        for label, p in pipelines.items():
            t = time.perf_counter()
            p.analyze(image)
            seconds[label] += time.perf_counter() - t
    return {label: s / len(sample) for label, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="facepipe-mbf", help="the recognizer to compare (a name or an ONNX file)")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--heldout", type=Path,
                        default=Path("~/.cache/facepipe-runs/facepipe_mbf/heldout_identities.txt"))
    parser.add_argument("--roc", type=Path, default=None, help="PNG: the LFW ROC curves of both models")
    parser.add_argument("--timed", type=int, default=100, help="photos timed for identify s/photo")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--refresh", action="store_true")
    parser.add_argument("--only-baseline", action="store_true", help="cache the detections and dlib's embeddings, "
                        "then stop (while the model trains)")
    args = parser.parse_args()
    specs = {**MODELS, f"{Path(args.model).stem}": args.model}

    _, celeba_photos, _ = celeba_dev()
    heldout = [line.strip() for line in args.heldout.expanduser().read_text().splitlines() if line.strip()]
    lfw_root = data_root() / "lfw"
    lfw_photos = [p for ident in heldout for p in sorted((lfw_root / ident).glob("*.jpg"))]
    lfw_labels = np.array([k for k, ident in enumerate(heldout) for _ in sorted((lfw_root / ident).glob("*.jpg"))])
    tag = Path(args.model).stem
    if args.only_baseline:
        specs = dict(MODELS)
    celeba, lfw_feats = {}, {}
    for feats, photos, name in ((celeba, celeba_photos, "release-celeba"), (lfw_feats, lfw_photos, "release-lfw")):
        dets = detections(photos, name, args.refresh)
        for model, spec in specs.items():
            for view, x in features(photos, dets, name, spec, args.refresh).items():
                if view != "keys":
                    feats[f"{model}/{view}"] = x
    if args.only_baseline:
        return

    os_results = open_set(celeba, specs, args.splits)
    lfw_results, n_pos, n_neg = lfw(lfw_feats, specs, lfw_labels, args.roc)
    emb_ms = embedding_speed(specs)
    chains = {"default detector + dlib ResNet": (None, "dlib"), f"default detector + {tag}": (None, args.model),
              f"facepipe detector + {tag}": ("facepipe", args.model)}
    ident_s = identify_speed(celeba_photos, chains, args.timed)

    console = Console(width=160)
    table = Table(title=f"celeba-dev open set ({args.splits} splits) and LFW held-out identities ({len(heldout)} "
                        f"identities, {len(lfw_photos)} photos, {n_pos} + {n_neg} pairs)")
    for col in ("model", "probes", "rank-1", "named @1% strangers", "default: named", "default: strangers named "
                "(mean / worst)", "threshold", "LFW accuracy (10 folds)", "LFW TAR@FAR 1e-3"):
        table.add_column(col)
    for name in specs:
        for view in ("clean", "masked"):
            o, v = os_results[name][view], lfw_results[name][view]
            table.add_row(name, view, f"{o['rank1']:.3f}", f"{o['named_at_1pct']:.3f}", f"{o['named']:.3f}",
                          f"{o['strangers_named']:.1%} / {o['strangers_named_worst']:.1%}", f"{o['threshold']:.3f}",
                          f"{v['accuracy']:.4f} ± {v['accuracy_std']:.4f}", f"{v['tar@far1e-3']:.3f}")
    console.print(table)
    base = next(iter(specs))
    speed = Table(title=f"Speed (load average {os.getloadavg()[0]:.1f})")
    for col in ("what", "time", "ratio"):
        speed.add_column(col)
    for name, ms in emb_ms.items():
        speed.add_row(f"embed one face: {name}", f"{ms:.2f} ms", f"{ms / emb_ms[base]:.2f}x dlib")
    recipe = ident_s["face_recognition recipe"]
    for label, s in ident_s.items():
        speed.add_row(f"identify: {label}", f"{s * 1000:.1f} ms/photo", f"{s / recipe:.2f}x recipe")
    console.print(speed)
    if args.json:
        args.json.write_text(json.dumps({"open_set": os_results, "lfw": lfw_results, "embed_ms": emb_ms,
                                         "identify_s": ident_s, "lfw_pairs": [n_pos, n_neg],
                                         "heldout_identities": len(heldout)}, indent=1))


if __name__ == "__main__":
    main()
