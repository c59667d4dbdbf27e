"""Throughput of `facepipe prepare` (images/s) with 1 and 2 worker processes on a subset of celeba-dev.

Each run prepares the same photos into a fresh temporary folder with the default options (dlib HOG +
68 landmarks, ArcFace 112x112 chips, dlib ResNet embeddings for the hygiene report) plus the masks of
--mask-ratio. Reported: steady-state images/s (first finished chunk to last, so worker start-up and
model loading are left out), end-to-end images/s (the whole call), start-up time, and CPU seconds per
image (load-independent: if it stays flat from 1 to 2 workers, 2 idle cores give ~2x). Runs alternate
(1, 2, 1, 2, ...) so a change in machine load hits both alike; the best of the repeats is reported,
with the load average, since on a shared machine a second worker only helps if a core is free.

    python benchmarks/prepare_bench.py [--identities 20] [--repeats 2] [--mask-ratio 0.2]
"""
from __future__ import annotations

import argparse
import os
import resource
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
from facepipe.prepare.run import Events, RunOptions, prepare  # noqa: E402


def make_subset(root: Path, out: Path, identities: int) -> int:
    """Links to the photos of the first `identities` identities (no copy; prepare never writes to SRC)."""
    n = 0
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:identities]:
        (out / folder.name).mkdir(parents=True)
        for f in sorted(folder.glob("*.jpg")):
            os.symlink(f, out / folder.name / f.name)
            n += 1
    return n


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime  # pool workers count once reaped


def one_run(src: Path, workers: int, mask_ratio: float, batch_size: int) -> dict:
    dst = Path(tempfile.mkdtemp(prefix=f"prepare-bench-w{workers}-"))
    shutil.rmtree(dst)
    load = os.getloadavg()[0]
    arrivals: list[tuple[float, int]] = []  # (time, images) of each finished chunk
    events = Events(records=lambda records: arrivals.append((time.perf_counter(), len(records))))
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    result = prepare(src, dst, PrepareConfig(mask_ratio=mask_ratio),
                     RunOptions(workers=workers, batch_size=batch_size, contact_sheet=False), events)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    shutil.rmtree(dst)
    # steady state: from the first finished chunk to the last (worker start-up and model loading excluded)
    first, last = arrivals[0][0], arrivals[-1][0]
    steady = sum(n for _, n in arrivals[1:]) / (last - first) if last > first else float("nan")
    return {"workers": workers, "images": result.processed, "end_to_end": result.processed / wall, "steady": steady,
            "wall_s": wall, "startup_s": first - t0, "cpu_per_image": cpu / max(result.processed, 1), "load": load}


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
                console.print(f"  workers={workers}: steady {r['steady']:.2f} images/s, end to end "
                              f"{r['end_to_end']:.2f} "
                              f"images/s ({r['images']} images in {r['wall_s']:.1f} s, first chunk after "
                              f"{r['startup_s']:.1f} s; {r['cpu_per_image']:.3f} CPU s/image; load {r['load']:.1f})")
    table = Table(title="facepipe prepare throughput (best of the repeats)")
    for col in ("workers", "steady images/s", "end-to-end images/s", "start-up (s)", "CPU s / image", "load avg at "
                                                                                                      "start"):
        table.add_column(col, justify="right")
    best = {}
    for workers in (1, 2):
        r = max((r for r in runs if r["workers"] == workers), key=lambda r: r["steady"])
        best[workers] = r
        table.add_row(str(workers), f"{r['steady']:.2f}", f"{r['end_to_end']:.2f}", f"{r['startup_s']:.1f}",
                      f"{r['cpu_per_image']:.3f}", f"{r['load']:.1f}")
    console.print(table)
    console.print(f"ratio 2 workers / 1 worker: {best[2]['steady'] / best[1]['steady']:.2f}x steady state, "
                  f"{best[2]['end_to_end'] / best[1]['end_to_end']:.2f}x end to end")
    if os.getloadavg()[0] > (os.cpu_count() or 1):
        console.print(f"[yellow]note: the load average ({os.getloadavg()[0]:.1f}) is above the core count: other "
                      "processes share the CPU, so a second worker cannot get a core of its own[/]")


if __name__ == "__main__":
    main()
