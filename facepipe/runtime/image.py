"""Read any image safely: RGB uint8, upright (EXIF), with clear errors, a format allow-list and a memory budget.

Every photo facepipe reads (CLI, Python API, service uploads, training data) comes through here, so these
rules hold everywhere:
- Only the formats in ACCEPTED_FORMATS are opened; anything else (ICO, whose entries can be large PNGs decoded
  inside `Image.open`; EPS, which Pillow hands to Ghostscript; ...) is refused before any decoding.
- The header is checked before decoding: a pixel limit (FACEPIPE_MAX_PIXELS) and a memory budget for the whole
  decoded working set (FACEPIPE_MAX_IMAGE_MB), so a small file that claims 30000 x 30000 pixels, or a 16-bit
  image that would take gigabytes to convert, is refused before it can take the memory.
- Grayscale, palette, RGBA, CMYK and 16-bit images all come back as 8-bit RGB, 16-bit ones through a lookup
  table (no float copies). Any failure of the decoder is one ImageError naming the image.
The service narrows the limits per request with `image_limits(...)`.
"""
from __future__ import annotations

import contextlib
import contextvars
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facepipe.errors import ImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
# Pillow format names, tried in this order. JPEG includes the multi-picture JPEGs (MPO) many cameras write;
# PPM covers .pgm/.ppm. GIF, TIFF, WebP and MPO give their first frame.
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM")
DEFAULT_MAX_PIXELS = 120_000_000  # 120 MP: an 8000 x 8000 photo passes, a decompression bomb does not
DEFAULT_MAX_IMAGE_MB = 2048       # the decoded working set of one image (a 120 MP RGB photo needs about 1.6 GB)

ImageLike = Union[str, Path, bytes, np.ndarray, Image.Image]


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int
    max_bytes: int  # memory budget for decoding one image (estimated from its header)


_limits: contextvars.ContextVar[ImageLimits | None] = contextvars.ContextVar("facepipe_image_limits", default=None)


def current_limits() -> ImageLimits:
    """The limits in force: those set by image_limits() in this context, else the environment's, else defaults."""
    set_here = _limits.get()
    if set_here is not None:
        return set_here
    return ImageLimits(int(os.environ.get("FACEPIPE_MAX_PIXELS", DEFAULT_MAX_PIXELS)),
                       int(float(os.environ.get("FACEPIPE_MAX_IMAGE_MB", DEFAULT_MAX_IMAGE_MB)) * 2**20))


@contextlib.contextmanager
def image_limits(max_pixels: int | None = None, max_bytes: int | None = None) -> Iterator[ImageLimits]:
    """Narrow the limits for the reads made inside this block (this thread or task only)."""
    base = current_limits()
    limits = ImageLimits(min(base.max_pixels, max_pixels or base.max_pixels),
                         min(base.max_bytes, max_bytes or base.max_bytes))
    token = _limits.set(limits)
    try:
        yield limits
    finally:
        _limits.reset(token)


def max_pixels() -> int:
    return current_limits().max_pixels


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _stored_bytes_per_pixel(mode: str) -> int:
    """What Pillow holds per pixel once decoded (multi-band modes take 4 bytes)."""
    if mode.startswith("I;16"):
        return 2
    return 1 if mode in ("1", "L", "P") else 4


def decode_cost(mode: str, width: int, height: int, transparent: bool = False) -> int:
    """Bytes the whole decode takes at its peak, from the header: Pillow's image, an EXIF-rotated copy, the
    conversion's temporaries and the RGB array (an upper bound of what _to_rgb8 below allocates)."""
    stored = _stored_bytes_per_pixel(mode)
    if mode.startswith("I;16") or mode in ("I", "F"):
        convert = 1 + 3                      # lookup (or row blocks) to 8-bit gray, then the 3-channel array
    elif mode in ("RGBA", "LA", "PA") or transparent:
        convert = 4 * 4 + 3 * 2              # RGBA copy, white background, composite, RGB, array (+ its bytes)
    elif mode == "RGB":
        convert = 3 * 2                      # the array and the bytes it is made from
    else:
        convert = 4 + 3 * 2                  # convert("RGB"), then the array
    return width * height * (2 * stored + convert)


def _sixteen_bit_lut() -> np.ndarray:
    return np.round(np.arange(65536, dtype=np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode.startswith("I;16"):
        # 16-bit grayscale: a 65536-entry table maps each value to 8 bits (convert("L") would clip; float
        # arithmetic would copy the image at 8 bytes a pixel).
        gray = _sixteen_bit_lut()[np.asarray(img).astype(np.uint16, copy=False)]
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        # 32-bit integer or float grayscale: scale its real range to 8 bits, a block of rows at a time.
        arr = np.asarray(img)
        low, top = float(np.nanmin(arr)), float(np.nanmax(arr))
        low = min(low, 0.0)
        scale = 255.0 / max(top - low, 1e-12)
        out = np.empty((*arr.shape, 3), np.uint8)
        step = max(1, (1 << 20) // max(arr.shape[1], 1))
        for row in range(0, arr.shape[0], step):
            block = (arr[row:row + step].astype(np.float32) - low) * scale + 0.5
            out[row:row + step] = np.clip(np.nan_to_num(block), 0, 255).astype(np.uint8)[..., None]
        return out
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
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError:  # e.g. in a folder we may not search: opening it below says why, in the usual words
        exists, is_dir = True, False
    if not exists:
        raise ImageError(f"{path}: no such file")
    if is_dir:
        raise ImageError(f"{path}: is a folder, not an image")
    return _decode(path, str(path))


def read_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """The same as read_image for an encoded file held in memory (an upload); `name` labels errors."""
    if not data:
        raise ImageError(f"{name}: empty file")
    return _decode(io.BytesIO(data), name)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as read_image would return it (EXIF rotation applied), from the header only."""
    path = Path(path)
    with _opened(path, str(path)) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


@contextlib.contextmanager
def _opened(source, name: str) -> Iterator[Image.Image]:
    """Image.open restricted to the accepted formats, with the header's limits checked; every failure of
    Pillow on a hostile file becomes one ImageError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own size warning: our limit says it better
            try:
                img = Image.open(source, formats=ACCEPTED_FORMATS)
            except UnidentifiedImageError:
                raise ImageError(_unaccepted(source, name)) from None
            with img:
                width, height = img.size
                limits = current_limits()
                if width < 1 or height < 1:
                    raise ImageError(f"{name}: empty image ({width}x{height})")
                if width * height > limits.max_pixels:
                    raise ImageError(_too_many_pixels(name, width, height))
                cost = decode_cost(img.mode, width, height, "transparency" in img.info)
                if cost > limits.max_bytes:
                    raise ImageError(f"{name}: a {width}x{height} {img.mode} image needs about {cost / 2**20:,.0f} MB "
                                     f"to decode, over the {limits.max_bytes / 2**20:,.0f} MB budget (refused before "
                                     "decoding; FACEPIPE_MAX_IMAGE_MB raises it)")
                yield img
    except ImageError:
        raise
    except Image.DecompressionBombError:  # beyond Pillow's own hard limit (2x its default), before decoding
        width, height = _claimed_size(source)
        raise ImageError(_too_many_pixels(name, width, height)) from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode this image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's parsers raise many kinds on hostile input: all mean "bad file"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"{name}: corrupt or truncated image ({reason})") from None


def _decode(source, name: str) -> np.ndarray:
    with _opened(source, name) as img:  # decoding errors inside the block become ImageError there too
        img.load()
        rgb = _to_rgb8(ImageOps.exif_transpose(img))
    return np.ascontiguousarray(rgb)


def _sniffed_format(source) -> str | None:
    """Which Pillow format a file's first bytes look like, by the plugins' cheap prefix tests only (no parsing)."""
    Image.init()
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as f:
        f.seek(0)
        prefix = f.read(16)
    for fmt, (_, accept) in Image.OPEN.items():
        with contextlib.suppress(Exception):
            if accept and accept(prefix):
                return fmt
    return None


def _unaccepted(source, name: str) -> str:
    try:
        fmt = _sniffed_format(source)
    except OSError:
        fmt = None
    accepted = ", ".join(ACCEPTED_FORMATS)
    if fmt and fmt not in ACCEPTED_FORMATS:
        return f"{name}: {fmt} images are not accepted (accepted: {accepted})"
    return f"{name}: not an image file (unrecognised format; accepted: {accepted})"


def _claimed_size(source) -> tuple[int, int]:
    """The size a file's header claims, read by the accepted formats' plugins without Image.open's bomb check
    (which would refuse before telling us the size; Pillow's global limit is left as it is)."""
    Image.init()
    with open(source, "rb") if isinstance(source, Path) else contextlib.nullcontext(source) as f:
        f.seek(0)
        prefix = f.read(16)
        for fmt in ACCEPTED_FORMATS:
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
        try:
            return np.ascontiguousarray(_to_rgb8(image))
        except (OSError, ValueError) as exc:
            raise ImageError(f"{name or 'image'}: cannot convert this PIL image ({exc})") from None
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
    """Expand files and folders (recursively) into image files, sorted; also return problems found (a folder
    that could not be listed, at any depth, is one: facepipe.runtime.folders.files_under)."""
    from facepipe.runtime.folders import files_under  # folders.py imports this module

    images: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        try:
            path.stat()
        except (FileNotFoundError, NotADirectoryError):
            pass  # said below
        except OSError as exc:  # e.g. in a folder we may not search
            problems.append((path, f"cannot read ({exc.strerror})"))
            continue
        if path.is_dir():
            files, unreadable = files_under(path)
            found = [p for p in files if is_image_path(p)]
            problems.extend(unreadable)
            if not found and not unreadable:
                problems.append((path, "folder holds no images"))
            images.extend(found)
        elif path.is_file():
            images.append(path)
        elif path.exists():
            problems.append((path, "not a regular file"))
        else:
            problems.append((path, "no such file or folder"))
    return images, problems
