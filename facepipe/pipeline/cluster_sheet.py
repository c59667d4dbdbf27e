"""Contact sheets of clusters: each cluster's faces (largest first) cropped from their photos, in a grid."""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from facepipe.errors import ImageError
from facepipe.gallery.clusters import StoredFace
from facepipe.pipeline.annotate import label_font
from facepipe.runtime.image import read_image

MARGIN = 0.25  # share of the face box added around it


def face_crop(face: StoredFace, size: int = 112) -> Image.Image | None:
    """The face with a margin, square, `size` pixels; None when its photo cannot be read any more."""
    try:
        image = read_image(face.source)
    except (ImageError, OSError):
        return None
    x1, y1, x2, y2 = face.box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * MARGIN)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    box = [int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)]
    return Image.fromarray(image).crop(box).resize((size, size), Image.BILINEAR)


def largest_first(faces: list[StoredFace]) -> list[StoredFace]:
    return sorted(faces, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def cluster_sheet(title: str, faces: list[StoredFace], cols: int = 8, tile: int = 112,
                  max_faces: int = 64) -> Image.Image:
    """One cluster's sheet: a title line, then its faces largest first, each with its face id."""
    if len(faces) > max_faces:
        title += f"; the {max_faces} largest shown"
    faces = largest_first(faces)[:max_faces]
    rows = max(1, -(-len(faces) // cols))
    label_h, title_h = 16, 26
    sheet = Image.new("RGB", (cols * tile, title_h + rows * (tile + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 5), title, fill="black", font=label_font(15))
    for i, face in enumerate(faces):
        x, y = (i % cols) * tile, title_h + (i // cols) * (tile + label_h)
        crop = face_crop(face, tile)
        if crop is None:
            draw.rectangle([x + 2, y + 2, x + tile - 2, y + tile - 2], outline="red")
        else:
            sheet.paste(crop, (x, y))
        draw.text((x + 3, y + tile + 1), f"face {face.id}", fill="black", font=label_font(11))
    return sheet


def stack(sheets: list[Image.Image], gap: int = 6) -> Image.Image:
    """Sheets one under the other (the README's picture of the largest clusters)."""
    width = max(s.width for s in sheets)
    out = Image.new("RGB", (width, sum(s.height for s in sheets) + gap * (len(sheets) - 1)), (200, 200, 200))
    y = 0
    for s in sheets:
        out.paste(s, (0, y))
        y += s.height + gap
    return out


def save_sheet(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path
