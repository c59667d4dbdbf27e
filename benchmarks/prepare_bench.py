"""Throughput of `facepipe prepare` (images/s) with 1 and 2 worker processes on a subset of celeba-dev.

Each run prepares the same photos into a fresh temporary folder with the default options (dlib HOG +
68 landmarks, ArcFace 112x112 chips, dlib ResNet embeddings for the hygiene report) plus the masks of
--mask-ratio. Images/s counts the image work only (reading, detection, alignment, writing, embedding):
model loading and the end-of-run reports are timed separately. Runs alternate (1, 2, 1, 2, ...) so a
change in machine load hits both alike; the best of the repeats is reported, with the load average.

    python benchmarks/prepare_bench.py [--identities 20] [--repeats 2] [--mask-ratio 0.2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_root  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from facepipe.prepare.config import PrepareConfig  # noqa: E402
from facepipe.prepare.run import RunOptions, prepare  # noqa: E402


def make_subset(root: Path, out: Path, identities: int) -> int:
    """Links to the photos of the first `identities` identities (no copy; prepare never writes to SRC)."""
    n = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:identities]:
        (out / folder.name).mkdir(parents=True)
        for f in sorted(folder.glob("*.jpg")):
            os.symlink(f, out / folder.name / f.name)
            n += 1
    return n


def one_run(src: Path, workers: int, mask_ratio: float, batch_size: int) -> dict:
    dst = Path(tempfile.mkdtemp(prefix=f"prepare-bench-w{workers}-"))
    shutil.rmtree(dst)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = prepare(src, dst, PrepareConfig(mask_ratio=mask_ratio),
                     RunOptions(workers=workers, batch_size=batch_size, contact_sheet=False))
    wall = time.perf_counter() - t0
    shutil.rmtree(dst)
    return {"workers": workers, "images": result.processed, "work_s": result.seconds, "rate": result.rate,
            "wall_s": wall, "overhead_s": wall - result.seconds, "load": load, "kept": result.summary.kept_images}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--identities", type=int, default=20, help="first N identities of celeba-dev")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--mask-ratio", type=float, default=0.2)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="prepare-bench-src-") as tmp:
        src = Path(tmp) / "src"
        n = make_subset(data_root() / "celeba-dev", src, args.identities)
        console.print(f"{n} photos of {args.identities} celeba-dev identities; {os.cpu_count()} CPU cores; "
                      f"load average before: {os.getloadavg()[0]:.1f}")
        runs = []
        for _ in range(args.repeats):
            for workers in (1, 2):
                runs.append(one_run(src, workers, args.mask_ratio, args.batch_size))
                r = runs[-1]
                console.print(f"  workers={workers}: {r['rate']:.2f} images/s ({r['images']} images in {r['work_s']:.1f} s; "
                              f"+{r['overhead_s']:.1f} s models and reports; load {r['load']:.1f})")
    table = Table(title="facepipe prepare throughput (best of the repeats)")
    for col in ("workers", "images/s", "image work (s)", "models + reports (s)", "load avg at start"):
        table.add_column(col, justify="right")
    best = {}
    for workers in (1, 2):
        r = max((r for r in runs if r["workers"] == workers), key=lambda r: r["rate"])
        best[workers] = r
        table.add_row(str(workers), f"{r['rate']:.2f}", f"{r['work_s']:.1f}", f"{r['overhead_s']:.1f}", f"{r['load']:.1f}")
    console.print(table)
    console.print(f"ratio 2 workers / 1 worker: {best[2]['rate'] / best[1]['rate']:.2f}x")


if __name__ == "__main__":
    main()
