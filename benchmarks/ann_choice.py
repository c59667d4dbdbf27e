"""IVF-Flat or HNSW for the persisted gallery index: build cost, search cost, exactness, removal, file size.

    nice -n 10 python benchmarks/ann_choice.py [--size 100000] [--dim 128]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from search_bench import make_gallery, noisy  # noqa: E402

from facepipe.gallery.search import exact_search, train_ivf  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    faces, _, centres = make_gallery(args.size, 5, args.dim, 0.7, rng)
    queries = noisy(centres[rng.choice(len(centres), args.queries)], rng)
    _, truth = exact_search(faces, queries, 1)

    def measure(name: str, index) -> None:
        cpu = time.process_time()
        for q in queries:
            index.search(q[None], 48)
        per_query = (time.process_time() - cpu) / len(queries) * 1e3
        _, got = index.search(queries, 1)
        with tempfile.TemporaryDirectory() as tmp:
            faiss.write_index(index, f"{tmp}/i")
            size = os.path.getsize(f"{tmp}/i") / faces.nbytes
        try:
            index.remove_ids(np.arange(5, dtype=np.int64))
            removal = "remove_ids works"
        except RuntimeError as exc:
            removal = "no removal: " + str(exc).strip().splitlines()[-1][-40:]
        print(f"{name}: {per_query:.2f} ms CPU/query, top-1 exact {(got[:, 0] == truth[:, 0]).mean():.1%}, "
              f"file {size:.2f}x the vectors, {removal}")

    cpu = time.process_time()
    ivf = train_ivf(faces)
    ivf.add_with_ids(faces, np.arange(len(faces), dtype=np.int64))
    print(f"IVF-Flat build: {time.process_time() - cpu:.1f} s CPU")
    measure(f"IVF-Flat nprobe {ivf.nprobe}/{ivf.nlist}", ivf)
    cpu = time.process_time()
    hnsw = faiss.IndexHNSWFlat(args.dim, 32, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = 40
    hnsw.add(faces)
    hnsw.hnsw.efSearch = 64
    print(f"HNSW-Flat build (M 32, efConstruction 40): {time.process_time() - cpu:.1f} s CPU")
    measure("HNSW-Flat efSearch 64", hnsw)


if __name__ == "__main__":
    main()
