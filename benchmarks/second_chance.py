"""The dlib detector's second chance: which photos the HOG passes miss, which of them each later pass finds,
what it costs, and a contact sheet of photos it rescued and photos it still misses.

    nice -n 10 python benchmarks/second_chance.py [--sheet docs/second_chance.jpg]

On celeba-dev (in-the-wild portraits, <= 400 px) and people/ (press photos up to 4352 px): every photo is
detected without the second chance; the ones with no face again with it (the same detector object, so the
cost measured is the second chance's alone: CPU seconds per such photo and detector calls). Photos with
no face at all (dlib-faces/dogs.jpg) shows the cost where the second chance finds nothing.
"""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from _common import data_root
from rich.console import Console
from rich.progress import track
from rich.table import Table

from facepipe.runtime.detectors.dlib_detector import DlibDetector
from facepipe.runtime.image import read_image


class CallCounter:
    """Counts the calls of one of the detector's dlib models."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def run(self, *args):
        self.calls += 1
        return self.model.run(*args)

    def __call__(self, *args):
        self.calls += 1
        return self.model(*args)


def rescue(detector: DlibDetector, photos: list[Path], label: str):
    """(photos missed without the second chance, {photo: faces found with it}, CPU s, detector calls per miss)."""
    without = detector.with_passes(second_chance=False)
    missed = [p for p in track(photos, description=f"{label}: without the second chance")
              if not without.detect(read_image(p))]
    hog, cnn = CallCounter(detector._hog), CallCounter(detector._cnn)
    detector._hog, detector._cnn = hog, cnn
    found, cpu = {}, 0.0
    for path in missed:
        image = read_image(path)
        t = time.process_time()
        found[path] = detector.detect(image)
        cpu += time.process_time() - t
    detector._hog, detector._cnn = hog.model, cnn.model
    n = max(1, len(missed))
    return missed, found, cpu / n, (hog.calls / n, cnn.calls / n)


def contact_sheet(rescued: list[tuple[Path, list]], missed: list[Path], out: Path, tile: int = 180, cols: int = 8):
    """Rescued photos (box, 5 points, the pass that found them), then photos still without a face."""
    from PIL import Image, ImageDraw

    from facepipe.pipeline.annotate import draw_faces
    from facepipe.types import Face

    def fit(img: Image.Image) -> Image.Image:
        img.thumbnail((tile, tile - 14))
        return img

    def drawn(path: Path, faces) -> Image.Image:
        return draw_faces(read_image(path), [Face(box=f.box, score=f.score, landmarks=f.landmarks) for f in faces],
                          with_identity=False)

    sections = [("rescued by the second chance", [(fit(drawn(p, faces)),
                                                  f"{p.parent.name}/{p.name} {faces[0].detector_pass}")
                                                 for p, faces in rescued]),
                ("still no face", [(fit(Image.fromarray(read_image(p))), f"{p.parent.name}/{p.name}") for p in missed])]
    height = sum(24 + int(np.ceil(len(items) / cols)) * tile for _, items in sections)
    sheet = Image.new("RGB", (cols * tile, height), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for title, items in sections:
        draw.text((6, y + 6), f"{title} ({len(items)} shown)", fill=(255, 255, 255))
        y += 24
        for i, (img, caption) in enumerate(items):
            x, yy = (i % cols) * tile, y + (i // cols) * tile
            sheet.paste(img, (x + (tile - img.width) // 2, yy))
            draw.text((x + 3, yy + tile - 13), caption, fill=(220, 220, 220))
        y += int(np.ceil(len(items) / cols)) * tile
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85)  # photos of faces: JPEG in full colour (a 256-colour PNG blotched the skin)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", type=Path, default=None, help="write the contact sheet here (a .jpg)")
    parser.add_argument("--shown", type=int, default=24, help="rescued photos on the sheet (random; all misses)")
    args = parser.parse_args()
    root = data_root()
    detector = DlibDetector()
    table = Table(title="Second chance (dlib detector): photos where the HOG passes find no face")
    for col in ("set", "photos", "no face without", "weak HOG + CNN", "rotated HOG + CNN", "still no face",
                "no face with", "CPU s per such photo", "HOG / CNN calls per such photo"):
        table.add_column(col)
    sheet_rescued, sheet_missed = [], []
    for label, photos in (("celeba-dev", sorted((root / "celeba-dev").glob("*/*.jpg"))),
                          ("people", sorted((root / "people").glob("*/*.jpg")))):
        missed, found, cpu, (hog_calls, cnn_calls) = rescue(detector, photos, label)
        passes = Counter(faces[0].detector_pass if faces else None for faces in found.values())
        still = [p for p in missed if not found[p]]
        table.add_row(label, str(len(photos)), f"{len(missed)} ({len(missed) / len(photos):.1%})",
                      str(passes["hog-weak+cnn"]), str(passes["hog-rotated"]), str(len(still)),
                      f"{len(still) / len(photos):.1%}", f"{cpu:.3f}", f"{hog_calls:.1f} / {cnn_calls:.1f}")
        sheet_rescued += [(p, f) for p, f in found.items() if f]
        sheet_missed += still
    missed, found, cpu, (hog_calls, cnn_calls) = rescue(detector, [root / "dlib-faces" / "dogs.jpg"], "dogs.jpg")
    table.add_row("dlib-faces/dogs.jpg (no face)", "1", str(len(missed)), "-", "-",
                  str(sum(1 for f in found.values() if not f)), str(sum(1 for f in found.values() if f)),
                  f"{cpu:.3f}", f"{hog_calls:.0f} / {cnn_calls:.0f}")
    Console(width=170).print(table)
    print(f"load average {os.getloadavg()[0]:.1f}")
    if args.sheet:
        rng = np.random.default_rng(0)
        shown = [sheet_rescued[i] for i in sorted(rng.choice(len(sheet_rescued), min(args.shown, len(sheet_rescued)),
                                                            replace=False))]
        contact_sheet(shown, sheet_missed, args.sheet)
        print(f"contact sheet: {args.sheet}")


if __name__ == "__main__":
    main()
