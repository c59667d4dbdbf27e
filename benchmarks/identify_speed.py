"""Per-image time of `facepipe identify`'s default path vs the face_recognition package's approach.

Same photos for every approach: $FACEPIPE_DATA/people/*/*.jpg (61 photos of 13 people, up to 4600 px).

* face_recognition, API (`face_recognition.face_encodings(load_image_file(path))`), re-implemented with
  dlib directly (the package is not installed): PIL read -> RGB array, `get_frontal_face_detector()(img, 1)`
  (HOG, upsampled once, on the full image), a shape_predictor per face (68 points by default, as asked;
  face_recognition 1.3's own default for encodings is the 5-point model: --fr-landmarks 5), then
  `face_recognition_model_v1.compute_face_descriptor(img, shape, 1)` per face (one ResNet pass).
* face_recognition, CLI (the `face_recognition` command's test_image): the same, but the image is first
  thumbnailed to 1600 px (PIL LANCZOS) and the 5-point predictor is used (face_encodings' default).
* facepipe, 1 process: the library path of `facepipe identify`: `build_pipeline(ModelSpec())`,
  `read_image`, `pipeline.analyze(image)` (HOG on a copy downscaled to 1024 px, 68 landmarks on the
  original, alignment, dlib's ResNet converted to ONNX and run by ONNX Runtime with 2 threads).
* facepipe, 2 workers: `run_images(paths, ModelSpec(), "all", workers=2)`; throughput is measured from
  the first result to the last, so the workers' start-up and model loading are left out.

The single-process approaches run interleaved in one process, image by image, with the order rotated
per image, so a change in machine load hits them alike. Model loading and a warm-up image are timed
apart and never counted per image. Wall seconds and CPU seconds (all threads of the process) are shown.

Accuracy: leave-one-out rank-1 over people/: each photo's largest face is searched among the largest
faces of all other photos (nearest neighbour: Euclidean on raw descriptors for face_recognition,
and for facepipe too, whose dlib descriptors are now compared by distance as dlib trained them); a photo whose face
is not found counts as a miss.

    python benchmarks/identify_speed.py [--limit N] [--skip-cli] [--skip-workers]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_root, identity_photos  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from facepipe.runtime.dlib_files import LANDMARKS_5, LANDMARKS_68, RESNET, dlib_model_path  # noqa: E402

TARGET_RATIO = 1 / 3
FR_CLI_MAX_SIDE = 1600  # face_recognition_cli.test_image: "Scale down image if it's giant"


# -- face_recognition's approach, with dlib directly --------------------------------------------------
class FaceRecognitionLike:
    """face_recognition.face_encodings(face_recognition.load_image_file(path)), optionally with the
    CLI's 1600 px thumbnail first. Returns (boxes, descriptors) with boxes in that image's pixels."""

    def __init__(self, landmarks: int, max_side: int | None):
        import dlib

        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68 if landmarks == 68 else LANDMARKS_5)))
        self.encoder = dlib.face_recognition_model_v1(str(dlib_model_path(RESNET)))
        self.max_side = max_side

    def load_image_file(self, path: Path) -> np.ndarray:
        import PIL.Image

        im = PIL.Image.open(path)
        im = im.convert("RGB")
        img = np.array(im)
        if self.max_side is not None and max(img.shape) > self.max_side:
            pil_img = PIL.Image.fromarray(img)
            pil_img.thumbnail((self.max_side, self.max_side), PIL.Image.LANCZOS)
            img = np.array(pil_img)
        return img

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        img = self.load_image_file(path)
        rects = self.detector(img, 1)
        shapes = [self.predictor(img, r) for r in rects]
        desc = [np.array(self.encoder.compute_face_descriptor(img, s, 1)) for s in shapes]
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects],
                         dtype=np.float64).reshape(-1, 4)
        return boxes, np.array(desc, dtype=np.float64).reshape(-1, 128)


class FacepipeOne:
    def __init__(self):
        from facepipe.pipeline.batch import ModelSpec, build_pipeline

        self.pipeline = build_pipeline(ModelSpec())

    def __call__(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        from facepipe.runtime.image import read_image

        faces = self.pipeline.analyze(read_image(path))
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        emb = np.array([f.embedding for f in faces], dtype=np.float64).reshape(len(faces), -1)
        return boxes, emb


def largest(boxes: np.ndarray, vectors: np.ndarray) -> np.ndarray | None:
    if len(boxes) == 0:
        return None
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return vectors[int(np.argmax(area))]


def rank1(vectors: list[np.ndarray | None], labels: list[str], metric: str) -> tuple[int, int]:
    """Leave-one-out nearest neighbour; a probe without a face, or whose person has no other photo
    with a face, counts as a miss. Probes: photos whose person has at least 2 photos."""
    have = [i for i, v in enumerate(vectors) if v is not None]
    probes = [i for i in range(len(labels)) if labels.count(labels[i]) >= 2]
    if not have:
        return 0, len(probes)
    mat = np.stack([vectors[i] for i in have])
    correct = 0
    for i in probes:
        if vectors[i] is None:
            continue
        if metric == "euclidean":
            score = -np.linalg.norm(mat - vectors[i], axis=1)
        else:
            unit = mat / np.linalg.norm(mat, axis=1, keepdims=True)
            score = unit @ (vectors[i] / np.linalg.norm(vectors[i]))
        score[have.index(i)] = -np.inf
        if len(have) > 1 and labels[have[int(np.argmax(score))]] == labels[i]:
            correct += 1
    return correct, len(probes)


# -- face_recognition's CLI with --cpus 2 (optional) -------------------------------------------------
_fr_worker = None


def _fr_init(landmarks: int, max_side: int | None) -> None:
    global _fr_worker
    _fr_worker = FaceRecognitionLike(landmarks, max_side)


def _fr_job(path: Path):
    return _fr_worker(path)


def parallel_fr(paths: list[Path], landmarks: int, max_side: int | None, workers: int) -> tuple[float, float]:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    t0 = time.perf_counter()
    stamps = []
    with ctx.Pool(workers, initializer=_fr_init, initargs=(landmarks, max_side)) as pool:
        for _ in pool.imap(_fr_job, paths, chunksize=1):
            stamps.append(time.perf_counter())
    return (stamps[-1] - stamps[0]) / max(1, len(paths) - 1), stamps[0] - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="only the first N photos (sorted by person)")
    parser.add_argument("--fr-landmarks", type=int, choices=(5, 68), default=68,
                        help="landmark model of the face_recognition API baseline (default 68)")
    parser.add_argument("--skip-cli", action="store_true", help="leave out the face_recognition CLI baseline")
    parser.add_argument("--skip-workers", action="store_true", help="leave out facepipe with 2 worker processes")
    parser.add_argument("--fr-cli-workers", action="store_true",
                        help="also time the face_recognition CLI baseline with 2 processes (its --cpus 2)")
    args = parser.parse_args()

    from facepipe.pipeline.batch import ModelSpec, run_images
    from facepipe.runtime.image import read_image

    console = Console(width=None if sys.stdout.isatty() else 150)
    people = identity_photos(data_root() / "people")
    paths = [p for name in people for p in people[name]]
    labels = [p.parent.name for p in paths]
    if args.limit:
        paths, labels = paths[:args.limit], labels[:args.limit]
    sizes = [read_image(p).shape[:2] for p in paths]
    mp_total = sum(h * w for h, w in sizes) / 1e6
    console.print(f"{len(paths)} photos of {len(set(labels))} people, {mp_total:.0f} MP in all, long side "
                  f"{min(max(s) for s in sizes)}-{max(max(s) for s in sizes)} px; {os.cpu_count()} CPUs, "
                  f"load average {os.getloadavg()[0]:.1f} at start; {platform.processor() or platform.machine()}")

    # Model loading, timed apart.
    loads = {}
    approaches = {}
    t = time.perf_counter()
    approaches["face_recognition API"] = FaceRecognitionLike(args.fr_landmarks, None)
    loads["face_recognition API"] = time.perf_counter() - t
    if not args.skip_cli:
        t = time.perf_counter()
        approaches["face_recognition CLI"] = FaceRecognitionLike(5, FR_CLI_MAX_SIDE)
        loads["face_recognition CLI"] = time.perf_counter() - t
    t = time.perf_counter()
    approaches["facepipe"] = FacepipeOne()
    loads["facepipe"] = time.perf_counter() - t

    # Warm-up on the smallest photo (ONNX Runtime allocates on its first run), not counted.
    smallest = min(range(len(paths)), key=lambda i: sizes[i][0] * sizes[i][1])
    for fn in approaches.values():
        fn(paths[smallest])

    names = list(approaches)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    found = {n: [] for n in names}
    best = {n: [] for n in names}
    loads_seen = []
    for i, path in enumerate(paths):
        order = names[i % len(names):] + names[:i % len(names)]
        for n in order:
            c0, w0 = time.process_time(), time.perf_counter()
            boxes, vecs = approaches[n](path)
            wall[n].append(time.perf_counter() - w0)
            cpu[n].append(time.process_time() - c0)
            found[n].append(len(boxes))
            best[n].append(largest(boxes, vecs))
        loads_seen.append(os.getloadavg()[0])
        console.print(f"[dim]{i + 1:>3}/{len(paths)} {path.parent.name}/{path.name} {sizes[i][1]}x{sizes[i][0]}: "
                      + ", ".join(f"{n} {wall[n][-1]:.2f}s ({found[n][-1]} faces)" for n in names) + "[/]",
                      highlight=False)

    # facepipe with 2 worker processes: throughput after start-up.
    workers_row = None
    if not args.skip_workers and len(paths) > 2:
        t0 = time.perf_counter()
        stamps, results = [], []
        for r in run_images(paths, ModelSpec(), "all", workers=2):
            stamps.append(time.perf_counter())
            results.append(r)
        per_image = (stamps[-1] - stamps[0]) / (len(paths) - 1)
        vecs = []
        for r in results:
            boxes = np.array([f.box for f in r.faces], dtype=np.float64).reshape(-1, 4)
            emb = np.array([f.embedding for f in r.faces], dtype=np.float64).reshape(len(r.faces), -1)
            vecs.append(largest(boxes, emb))
        workers_row = (per_image, stamps[0] - t0, stamps[-1] - t0, sum(len(r.faces) for r in results), vecs,
                       sum(r.error is not None for r in results))

    fr_cli_workers = None
    if args.fr_cli_workers and not args.skip_cli and len(paths) > 2:
        fr_cli_workers = parallel_fr(paths, 5, FR_CLI_MAX_SIDE, 2)

    # -- report ----------------------------------------------------------------------------------------
    n_img = len(paths)
    per = {n: sum(wall[n]) / n_img for n in names}
    per_cpu = {n: sum(cpu[n]) / n_img for n in names}
    acc = {n: rank1(best[n], labels, "euclidean") for n in names}
    base_api = per["face_recognition API"]
    base_cli = per.get("face_recognition CLI")

    table = Table(title=f"Identify speed, {n_img} photos of people/ ({os.cpu_count()} CPU cores, shared with other "
                        f"jobs: load average {min(loads_seen):.1f}-{max(loads_seen):.1f})")
    for col in ("approach", "s/image (wall)", "median", "max", "CPU s/image", "faces found",
                "facepipe ÷ FR API", "facepipe ÷ FR CLI", "rank-1 (LOO)"):
        table.add_column(col, justify="left" if col == "approach" else "right")

    def fmt_ratio(v, base):
        if base is None:
            return "-"
        r = v / base
        return f"[{'green' if r <= TARGET_RATIO else 'red'}]{r:.3f}[/]"

    descr = {"face_recognition API": "face_recognition API", "face_recognition CLI": "face_recognition CLI",
             "facepipe": "facepipe, 1 process"}
    for n in names:
        is_fp = n == "facepipe"
        c, tot = acc[n]
        table.add_row(descr[n], f"{per[n]:.3f}", f"{np.median(wall[n]):.3f}", f"{max(wall[n]):.2f}",
                      f"{per_cpu[n]:.3f}",
                      str(sum(found[n])), fmt_ratio(per[n], base_api) if is_fp else "",
                      fmt_ratio(per[n], base_cli) if is_fp else "", f"{c}/{tot} = {c / tot:.1%}")
    if workers_row is not None:
        per_image, first, last, n_faces, vecs, errors = workers_row
        c, tot = rank1(vecs, labels, "euclidean")
        table.add_row("facepipe, 2 workers", f"{per_image:.3f}", "", "", "",
                      str(n_faces), fmt_ratio(per_image, base_api), fmt_ratio(per_image, base_cli),
                      f"{c}/{tot} = {c / tot:.1%}")
    if fr_cli_workers is not None:
        table.add_row("face_recognition CLI, 2 processes",
                      f"{fr_cli_workers[0]:.3f}", "", "", "", "", "", "", "")
    console.print(table)
    console.print(f"face_recognition API: full image, HOG upsampled once, {args.fr_landmarks}-point landmarks, dlib "
                  f"ResNet "
                  f"(dlib, 1 thread). face_recognition CLI: thumbnail to {FR_CLI_MAX_SIDE} px first, 5-point "
                  f"landmarks. "
                  "facepipe: HOG on a 1024 px copy, 68 points on the original, ResNet in ONNX Runtime (2 threads; "
                  "1 per worker with 2 workers). 2 workers / 2 processes: throughput from the first result to the last "
                  "(start-up excluded). Ratios use wall time; green = within the 1/3 target.", highlight=False)

    lt = Table(title="Model loading (not in the per-image numbers)")
    lt.add_column("approach")
    lt.add_column("seconds", justify="right")
    for n, s in loads.items():
        lt.add_row(n, f"{s:.2f}")
    if workers_row is not None:
        lt.add_row("facepipe, 2 workers: first result after (spawn + load + first image)", f"{workers_row[1]:.2f}")
        lt.add_row("facepipe, 2 workers: whole run incl. start-up, per image",
                   f"{workers_row[2] / n_img:.3f}")
    if fr_cli_workers is not None:
        lt.add_row("face_recognition CLI, 2 processes: first result after", f"{fr_cli_workers[1]:.2f}")
    console.print(lt)

    fp_c, fp_t = acc["facepipe"]
    fr_c, fr_t = acc["face_recognition API"]
    ratio = per["facepipe"] / base_api
    console.print(f"ratio facepipe (1 process) / face_recognition API: {ratio:.3f} "
                  f"(target <= {TARGET_RATIO:.3f}: {'met' if ratio <= TARGET_RATIO else 'NOT met'})")
    if workers_row is not None:
        r2 = workers_row[0] / base_api
        console.print(f"ratio facepipe (2 workers) / face_recognition API (1 process): {r2:.3f} "
                      f"(target: {'met' if r2 <= TARGET_RATIO else 'NOT met'})")
    if workers_row is not None and fr_cli_workers is not None:
        console.print(f"ratio facepipe (2 workers) / face_recognition CLI (2 processes): "
                      f"{workers_row[0] / fr_cli_workers[0]:.3f}")
    console.print(f"rank-1 facepipe {fp_c}/{fp_t} vs face_recognition API {fr_c}/{fr_t}: "
                  f"{'same or better' if fp_c >= fr_c else 'WORSE'}")
    if workers_row is not None and workers_row[5]:
        console.print(f"[red]{workers_row[5]} images failed in the 2-worker run[/]")
    missed = {n: [f"{paths[i].parent.name}/{paths[i].name}" for i in range(n_img) if best[n][i] is None] for n in names}
    for n in names:
        if missed[n]:
            console.print(f"no face found by {n}: {', '.join(missed[n])}")


if __name__ == "__main__":
    main()
