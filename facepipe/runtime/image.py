"""Read any image safely: RGB uint8, upright (EXIF), with clear errors and a pixel limit.

The header is checked before decoding, so a small file that claims 30000 x 30000 pixels is refused
before it can take gigabytes of memory. Grayscale, palette, RGBA, CMYK and 16-bit images all come
back as 8-bit RGB.
"""
from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
DEFAULT_MAX_PIXELS = 120_000_000  # 120 MP: an 8000 x 8000 photo passes, a decompression bomb does not

ImageLike = Union[str, Path, bytes, np.ndarray, Image.Image]


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
    return _decode(path, str(path))


def read_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """The same as read_image for an encoded file held in memory (an upload); `name` labels errors."""
    if not data:
        raise ImageError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name)


def _decode(source, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own size warning: our limit below says it better
            with Image.open(source) as img:
                width, height = img.size
                if width * height > max_pixels():
                    raise ImageError(_too_many_pixels(name, width, height))
                if width < 1 or height < 1:
                    raise ImageError(f"{name}: empty image ({width}x{height})")
                img.load()
                img = ImageOps.exif_transpose(img)
                rgb = _to_rgb8(img)
    except ImageError:
        raise
    except Image.DecompressionBombError:  # beyond Pillow's own hard limit (2x its default), before decoding
        width, height = _claimed_size(source)
        raise ImageError(_too_many_pixels(name, width, height)) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (unrecognised format)") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None
    return np.ascontiguousarray(rgb)


def _claimed_size(source) -> tuple[int, int]:
    """The size a file's header claims, read by Pillow's format plugins without Image.open's bomb check
    (which would refuse before telling us the size; Pillow's global limit is left as it is)."""
    Image.init()
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as f:
        f.seek(0)
        prefix = f.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept and not accept(prefix):
                continue
            f.seek(0)
            try:
                return factory(f, "").size
            except Exception:  # noqa: BLE001 - not this format: try the next plugin
                continue
    return (0, 0)


def _too_many_pixels(name: str, width: int, height: int) -> str:
    return (f"{name}: {width}x{height} pixels is over the {max_pixels() // 1_000_000} MP limit "
            "(refused before decoding; set FACEPIPE_MAX_PIXELS to raise it)")


def load_image(image: ImageLike, name: str | None = None) -> np.ndarray:
    """Any image a caller may hand facepipe -> H x W x 3 RGB uint8.

    A path or `bytes` (an encoded file) goes through the safe reader; a PIL image is converted; a numpy
    array must already be RGB uint8 (H x W x 3, or H x W gray). OpenCV frames are BGR: pass from_bgr(frame).
    """
    if isinstance(image, (str, Path)):
        return read_image(image)
    if isinstance(image, (bytes, bytearray, memoryview)):
        return read_image_bytes(bytes(image), name or "image")
    if isinstance(image, Image.Image):
        if image.width * image.height > max_pixels():
            raise ImageError(_too_many_pixels(name or "image", image.width, image.height))
        return np.ascontiguousarray(_to_rgb8(image))
    if isinstance(image, np.ndarray):
        return as_rgb_array(image, name or "image")
    raise ImageError(f"{name or 'image'}: expected a path, bytes, a PIL image or a numpy array, "
                     f"got {type(image).__name__}")


def as_rgb_array(array: np.ndarray, name: str = "image") -> np.ndarray:
    """Check an in-memory image: uint8, H x W x 3 (gray H x W is expanded), non-empty."""
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 pixels, got {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ImageError(f"{name}: expected an H x W x 3 RGB array, got shape {array.shape}")
    return np.ascontiguousarray(array)


def from_bgr(frame: np.ndarray) -> np.ndarray:
    """An OpenCV (BGR) frame as the RGB array facepipe takes."""
    return np.ascontiguousarray(np.asarray(frame)[..., ::-1])


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
