"""DST/contact_sheet.png: a grid of random chips (and masked copies) with their identity, to look at before training."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facepipe.errors import ImageError
from facepipe.prepare.manifest import kept_faces
from facepipe.runtime.image import read_image

_LABEL_H = 16
_TITLE_H = 26


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _read_chip(path: Path) -> np.ndarray | None:
    """The chip through the safe reader; None (left out of the sheet) when it cannot be read."""
    try:
        return read_image(path)
    except ImageError:
        return None


def pick_samples(records, n: int, masked_share: float, seed: int) -> list[tuple[str, str, bool]]:
    """(identity, chip path, masked?) for n random chips of the set, about masked_share of them masked."""
    plain, masked = [], []
    for r in sorted(records, key=lambda r: r["source"]):
        for face in kept_faces(r):
            plain.append((r["identity"], face["output"], False))
            if face.get("masked_output"):
                masked.append((r["identity"], face["masked_output"], True))
    rng = np.random.default_rng(seed)
    n_masked = min(len(masked), int(round(n * masked_share)))
    n_plain = min(len(plain), n - n_masked)
    chosen = [masked[i] for i in rng.choice(len(masked), n_masked, replace=False)] if n_masked else []
    chosen += [plain[i] for i in rng.choice(len(plain), n_plain, replace=False)] if n_plain else []
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order]


def make_contact_sheet(dst: Path, records, out: Path | None = None, cols: int = 8, rows: int = 5, tile: int = 112,
                       masked_share: float = 0.3, seed: int = 0, title: str = "") -> Path | None:
    """Write the contact sheet (PNG) and return its path; None when the set holds no chip."""
    dst = Path(dst)
    out = out or dst / "contact_sheet.png"
    samples = pick_samples(records, cols * rows, masked_share, seed)
    if not samples:
        return None
    rows = int(np.ceil(len(samples) / cols))
    sheet = Image.new("RGB", (cols * tile, _TITLE_H + rows * (tile + _LABEL_H)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 5), title, fill=(235, 235, 235), font=_font(14))
    small = _font(11)
    for i, (identity, rel, is_masked) in enumerate(samples):
        chip = _read_chip(dst / rel)
        if chip is None:
            continue
        if chip.shape[:2] != (tile, tile):
            chip = cv2.resize(chip, (tile, tile), interpolation=cv2.INTER_AREA)
        x, y = (i % cols) * tile, _TITLE_H + (i // cols) * (tile + _LABEL_H)
        sheet.paste(Image.fromarray(np.ascontiguousarray(chip)), (x, y))
        label = identity if len(identity) <= 14 else identity[:13] + "…"
        draw.text((x + 3, y + tile + 2), label, fill=(255, 200, 90) if is_masked else (220, 220, 220), font=small)
        if is_masked:
            draw.text((x + tile - 30, y + tile + 2), "mask", fill=(255, 200, 90), font=small)
    sheet.save(out, optimize=True)
    return out
