"""Annotated copies of images: boxes, landmarks and names (any script DejaVu covers)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from facepipe.types import Face


@lru_cache(maxsize=8)
def label_font(size: int):
    """DejaVu Sans (any script it covers) at this size, from matplotlib's copy; PIL's default font without it."""
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def draw_faces(image: np.ndarray, faces: list[Face], with_identity: bool = True) -> Image.Image:
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(image.shape[:2]) / 400))
    font = label_font(max(12, round(max(image.shape[:2]) / 45)))
    for face in faces:
        known = face.identity is not None
        color = (40, 200, 80) if known or not with_identity else (230, 60, 60)
        x1, y1, x2, y2 = [float(v) for v in face.box]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=width)
        if face.landmarks is not None:
            r = width
            for x, y in face.landmarks:
                draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 220, 0))
        if with_identity:
            label = f"{face.identity} {face.similarity:.2f}" if known else \
                f"unknown {face.similarity:.2f}" if face.similarity is not None else "unknown"
        else:
            label = f"{face.score:.2f}"
        tx, ty = x1, max(0.0, y1 - font.size - 2 * width)
        left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
        draw.rectangle([left - 2, top - 2, right + 2, bottom + 2], fill=color)
        draw.text((tx, ty), label, fill=(255, 255, 255), font=font)
    return canvas


def save_annotated(image: np.ndarray, faces: list[Face], source: Path, out_dir: Path,
                   with_identity: bool = True) -> Path:
    """Write an annotated copy into out_dir; never over the source file itself."""
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / (source.stem + ".jpg")
    if target.resolve() == source.resolve():
        target = out_dir / (source.stem + ".annotated.jpg")
    draw_faces(image, faces, with_identity).save(target, quality=90)
    return target
