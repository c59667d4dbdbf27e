"""Evidence run for the recognizer: celeba-dev aligned with dlib, split by identity, compared with dlib's ResNet.

Three steps, each a sub-command (run from the repository root):

  # 1. detect (dlib HOG) + 68 landmarks -> 5 points -> ArcFace 112x112 chips; split identities 120 / 30 with a
  #    fixed seed; dlib's 128-d descriptors for the held-out images; verification pairs over held-out identities
  python benchmarks/recognizer_celeba.py align --src ../shared/data/celeba-dev --out models/celeba-aligned

  # 2. train (any config; configs/recognizer/mbf_celeba.yaml reads models/celeba-aligned/train)
  facepipe train-recognizer --config configs/recognizer/mbf_celeba.yaml

  # 3. pair-verification accuracy and rank-1 identification on the held-out identities, model vs dlib
  python benchmarks/recognizer_celeba.py compare --aligned models/celeba-aligned --model models/mbf_celeba/last.pt

Pairs: `heldout_pairs.txt` (one `path1 path2 same` line each, relative to the aligned folder): every positive pair
up to 3,000 and as many random negatives, fixed seed. Rank-1: leave-one-out nearest neighbour, each held-out image
against all other held-out images (identities with one image only act as distractors).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.runtime.align import ARCFACE_TEMPLATE, align_face, reduce_68_to_5  # noqa: E402

IMAGE_EXT = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def _largest(rects):
    return max(rects, key=lambda r: r.width() * r.height())


def align(args: argparse.Namespace) -> None:
    import dlib

    from facepipe.runtime.dlib_files import LANDMARKS_68, RESNET, dlib_model_path

    src, out = Path(args.src), Path(args.out)
    identities = sorted(p.name for p in src.iterdir() if p.is_dir())
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(identities))
    heldout = {identities[i] for i in order[:args.heldout]}
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))
    resnet = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
    dlib_desc: dict[str, np.ndarray] = {}
    stats = {"images": 0, "aligned": 0, "no_face": 0, "upsampled_2": 0}
    t0 = time.time()
    for n, ident in enumerate(identities):
        part = "heldout" if ident in heldout else "train"
        for path in sorted(p for p in (src / ident).iterdir() if p.suffix.lower() in IMAGE_EXT):
            stats["images"] += 1
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                stats["no_face"] += 1
                continue
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            rects = detector(rgb, 1)
            if len(rects) == 0:
                rects = detector(rgb, 2)
                stats["upsampled_2"] += len(rects) > 0
            if len(rects) == 0:
                stats["no_face"] += 1
                continue
            shape = predictor(rgb, _largest(rects))
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
            chip = align_face(rgb, reduce_68_to_5(points), ARCFACE_TEMPLATE)
            rel = f"{part}/{ident}/{path.stem}.jpg"
            (out / part / ident).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(out / rel), chip[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            stats["aligned"] += 1
            if part == "heldout":  # dlib's descriptor on dlib's own 150x150 chip of the same face
                dlib_desc[rel] = np.asarray(resnet.compute_face_descriptor(rgb, shape), dtype=np.float32)
        if n % 10 == 0:
            print(f"{n + 1}/{len(identities)} identities, {stats['aligned']} chips, {time.time() - t0:.0f} s",
                  flush=True)
    keys = sorted(dlib_desc)
    np.savez(out / "dlib_heldout.npz", paths=np.array(keys), descriptors=np.stack([dlib_desc[k] for k in keys]))
    pairs = make_pairs(keys, args.pairs, args.seed)
    (out / "heldout_pairs.txt").write_text("".join(f"{a} {b} {int(s)}\n" for a, b, s in pairs), encoding="utf-8")
    stats.update(train_identities=len(identities) - len(heldout), heldout_identities=len(heldout),
                 heldout_chips=len(keys), pairs=len(pairs), positive_pairs=sum(s for _, _, s in pairs),
                 seconds=round(time.time() - t0, 1), seed=args.seed)
    (out / "align_stats.json").write_text(json.dumps(stats, indent=2), encoding="utf-8")
    print(json.dumps(stats, indent=2))


def make_pairs(paths: list[str], max_per_kind: int, seed: int) -> list[tuple[str, str, bool]]:
    """All positive pairs (up to max_per_kind, sampled) and as many random negatives, fixed seed, shuffled
    (the 10 folds run in file order). Kept as it was when models/celeba-aligned was made (same pairs)."""
    rng = np.random.default_rng(seed)
    ident = [p.split("/")[1] for p in paths]
    pos = [(i, j) for i in range(len(paths)) for j in range(i + 1, len(paths)) if ident[i] == ident[j]]
    if len(pos) > max_per_kind:
        pos = [pos[k] for k in sorted(rng.choice(len(pos), max_per_kind, replace=False))]
    neg: set[tuple[int, int]] = set()
    while len(neg) < len(pos):
        i, j = sorted(rng.choice(len(paths), 2, replace=False))
        if ident[i] != ident[j]:
            neg.add((int(i), int(j)))
    pairs = [(paths[i], paths[j], True) for i, j in pos] + [(paths[i], paths[j], False) for i, j in sorted(neg)]
    order = rng.permutation(len(pairs))
    return [pairs[k] for k in order]


def _rank1(emb: np.ndarray, labels: list[str]) -> float:
    sim = emb @ emb.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(1)
    lab = np.array(labels)
    return float((lab[nearest] == lab).mean())


def compare(args: argparse.Namespace) -> None:
    from facepipe.recognition.verification import evaluate_scores, read_pairs_file

    aligned = Path(args.aligned)
    pairs = read_pairs_file(aligned / "heldout_pairs.txt", aligned)
    dl = np.load(aligned / "dlib_heldout.npz")
    paths = [str(p) for p in dl["paths"]]
    labels = [p.split("/")[1] for p in paths]
    index = {p: i for i, p in enumerate(paths)}
    i1 = np.array([index[str(Path(a).relative_to(aligned))] for a, _, _ in pairs.pairs])
    i2 = np.array([index[str(Path(b).relative_to(aligned))] for _, b, _ in pairs.pairs])
    same = np.array([s for _, _, s in pairs.pairs])
    results, curves = {}, {}

    d = dl["descriptors"]  # dlib's model is trained for euclidean distance (threshold 0.6); report both
    results["dlib_resnet_v1 (euclidean)"] = evaluate_scores(-np.linalg.norm(d[i1] - d[i2], axis=1), same)
    results["dlib_resnet_v1 (euclidean)"]["rank1"] = _rank1_dist(d, labels)
    dn = d / np.linalg.norm(d, axis=1, keepdims=True)
    results["dlib_resnet_v1 (cosine)"] = evaluate_scores((dn[i1] * dn[i2]).sum(1), same)
    results["dlib_resnet_v1 (cosine)"]["rank1"] = _rank1(dn, labels)
    curves["dlib_resnet_v1 (euclidean)"] = (-np.linalg.norm(d[i1] - d[i2], axis=1), same)

    from facepipe.recognition.verification import embed_images, load_recognizer_any

    for model_path in args.model:
        rec = load_recognizer_any(model_path)
        chips = [cv2.imread(str(aligned / p), cv2.IMREAD_COLOR)[:, :, ::-1] for p in paths]
        emb = embed_images(rec.embed, np.stack(chips), flip=True, size=tuple(rec.template.size))
        r = evaluate_scores((emb[i1] * emb[i2]).sum(1), same)
        r["rank1"] = _rank1(emb, labels)
        name = f"{Path(model_path).parent.name}/{Path(model_path).name}"
        results[name] = r
        curves[name] = ((emb[i1] * emb[i2]).sum(1), same)

    print(f"held-out: {len(paths)} chips of {len(set(labels))} identities, {len(same)} pairs "
          f"({int(same.sum())} same)")
    print(f"{'model':42s} {'acc (10-fold)':>16s} {'AUC':>7s} {'TAR@FAR=1e-3':>13s} {'rank-1':>7s}")
    for name, r in results.items():
        tar = r["tar_at_far"].get("0.001")
        print(f"{name:42s} {r['accuracy'] * 100:7.2f} ± {r['accuracy_std'] * 100:5.2f} % {r['auc']:7.4f} "
              f"{'n/a' if tar is None else f'{tar * 100:.1f} %':>13s} {r['rank1'] * 100:6.2f} %")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float), encoding="utf-8")
    if args.roc:
        from facepipe.recognition.verification import plot_roc

        plot_roc(curves, args.roc, title="celeba-dev held-out identities (same pairs)")
        print(f"ROC: {args.roc}")


def _rank1_dist(d: np.ndarray, labels: list[str]) -> float:
    dist = np.linalg.norm(d[:, None] - d[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    lab = np.array(labels)
    return float((lab[dist.argmin(1)] == lab).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("align")
    a.add_argument("--src", default="../shared/data/celeba-dev")
    a.add_argument("--out", default="models/celeba-aligned")
    a.add_argument("--heldout", type=int, default=30)
    a.add_argument("--pairs", type=int, default=3000, help="at most this many positive (and negative) pairs")
    a.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("compare")
    c.add_argument("--aligned", default="models/celeba-aligned")
    c.add_argument("--model", nargs="*", default=[], help=".pt checkpoints or .onnx recognizers")
    c.add_argument("--json", default="")
    c.add_argument("--roc", default="", help="PNG with the ROC curves of all models on the same pairs")
    args = parser.parse_args()
    align(args) if args.cmd == "align" else compare(args)


if __name__ == "__main__":
    main()
