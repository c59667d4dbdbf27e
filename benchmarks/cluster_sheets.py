"""The picture in README/docs/cluster.md: `fp.cluster` (the real pipeline, a fresh SQLite gallery) over the
photos of the first N CelebA-dev identities, then the contact sheets of its largest clusters, stacked, each
titled with what the photos' folders say it holds.

    nice -n 10 python benchmarks/cluster_sheets.py [--identities 12] [--largest 4] [--out docs/cluster_sheets.jpg]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

from _common import data_root, identity_photos

import facepipe
from facepipe.pipeline.cluster_sheet import cluster_sheet, stack

JPEG_QUALITY = 85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=12)
    parser.add_argument("--largest", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("docs/cluster_sheets.jpg"))
    args = parser.parse_args()
    people = identity_photos(data_root() / "celeba-dev")
    folders = [data_root() / "celeba-dev" / name for name in list(people)[:args.identities]]
    with tempfile.TemporaryDirectory() as tmp, facepipe.open(Path(tmp) / "g.db") as fp:
        start = time.perf_counter()
        report = fp.cluster(folders)
        seconds = time.perf_counter() - start
        sheets = []
        for cluster, size in fp.clusters()[:args.largest]:
            faces = fp.cluster_faces(cluster)
            truth = Counter(Path(f.source).parent.name for f in faces)
            says = ", ".join(f"{n} x id {who}" for who, n in truth.most_common())
            sheets.append(cluster_sheet(f"cluster {cluster}: {size} faces ({says})", faces, max_faces=24))
        # a picture of faces for the docs: JPEG in full colour (a 256-colour PNG blotched the skin), small enough
        args.out.parent.mkdir(parents=True, exist_ok=True)
        stack(sheets).convert("RGB").save(args.out, quality=JPEG_QUALITY)
        print(f"{len(report.images)} photos of {len(folders)} identities, {len(fp.clusters())} clusters in "
              f"{seconds:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
