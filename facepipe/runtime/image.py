"""Read any image safely: RGB uint8, upright (EXIF), with clear errors and a pixel limit.

The header is checked before decoding, so a small file that claims 30000 x 30000 pixels is refused
before it can take gigabytes of memory. Grayscale, palette, RGBA, CMYK and 16-bit images all come
back as 8-bit RGB.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
DEFAULT_MAX_PIXELS = 120_000_000  # 120 MP: an 8000 x 8000 photo passes, a decompression bomb does not

# We enforce our own limit below; Pillow's warning/limit would only duplicate it with a worse message.
Image.MAX_IMAGE_PIXELS = None


def max_pixels() -> int:
    return int(os.environ.get("FACEPIPE_MAX_PIXELS", DEFAULT_MAX_PIXELS))


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16/32-bit grayscale: scale the real range down to 8 bits (convert("L") would clip).
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite transparent pixels onto white rather than letting them turn black.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Return the image at `path` as an upright H x W x 3 RGB uint8 array, or raise ImageError."""
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                width, height = img.size
                if width * height > max_pixels():
                    raise ImageError(
                        f"{path}: {width}x{height} pixels is over the {max_pixels() // 1_000_000} MP limit "
                        "(refused before decoding; set FACEPIPE_MAX_PIXELS to raise it)")
                if width < 1 or height < 1:
                    raise ImageError(f"{path}: empty image ({width}x{height})")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb8(img)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognised format)") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise ImageError(f"{path}: corrupt or truncated image ({reason})") from None
    return np.ascontiguousarray(rgb)


def list_images(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders (recursively) into image files, sorted; also return problems found."""
    images: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            try:
                found = sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
            except PermissionError:
                problems.append((path, "folder not readable"))
                continue
            if not found:
                problems.append((path, "folder holds no images"))
            images.extend(found)
        elif path.is_file():
            images.append(path)
        elif path.exists():
            problems.append((path, "not a regular file"))
        else:
            problems.append((path, "no such file or folder"))
    return images, problems
