"""The image reader under attack: formats refused before decoding, a memory budget from the header, 16-bit
images without float copies (peak RSS measured from /proc), and a fuzz test where only ImageError comes out."""
import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from memory import peak_growth
from PIL import Image

from facepipe.errors import ImageError
from facepipe.runtime.image import image_limits, read_image, read_image_bytes, read_image_size

MB = 2**20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, bit_depth: int = 8, color_type: int = 0, rows: bytes | None = None) -> bytes:
    """A PNG made by hand: IHDR as given; IDAT holds `rows` (default: every pixel zero, which deflates to little)."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[color_type]
    if rows is None:
        row = b"\x00" + b"\x00" * (width * channels * bit_depth // 8)
        compressor = zlib.compressobj(9)
        data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    else:
        data = zlib.compress(rows)
    extra = _chunk(b"PLTE", b"\x00\x00\x00" * 4) if color_type == 3 else b""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def test_sixteen_bit_gray_is_converted_without_float_copies(tmp_path):
    """36 MP of 16-bit gray: the float64 conversion this replaced peaked near 1 GB above the decoded image."""
    path = tmp_path / "deep.png"
    path.write_bytes(png_bytes(6000, 6000, bit_depth=16))
    assert path.stat().st_size < 200_000
    out, growth = peak_growth(lambda: read_image(path))
    assert out.shape == (6000, 6000, 3) and out.dtype == np.uint8
    # 72 MB decoded + 36 MB gray + 108 MB RGB = 216 MB is what the conversion needs
    assert growth < 330 * MB, f"peak grew {growth / MB:.0f} MB"


def test_memory_budget_refuses_from_the_header():
    data = png_bytes(6000, 6000, bit_depth=16)

    def refused():
        with image_limits(max_bytes=100 * MB), pytest.raises(
                ImageError, match=r"^deep\.png: a 6000x6000 I;16 image needs about \d+ MB.*100 MB budget"):
            read_image_bytes(data, "deep.png")

    _, growth = peak_growth(refused)
    assert growth < 20 * MB  # nothing was decoded


def _ico_with_png(png: bytes) -> bytes:
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def test_ico_and_eps_are_refused_before_decoding(tmp_path):
    ico = tmp_path / "icon.ico"
    ico.write_bytes(_ico_with_png(png_bytes(9000, 9000)))  # 81 MP gray inside: decoded by Image.open itself

    def refused():
        with pytest.raises(ImageError) as err:
            read_image(ico)
        return str(err.value)

    message, growth = peak_growth(refused)
    assert message.startswith(f"{ico}: ICO images are not accepted (accepted: JPEG, PNG")
    assert growth < 20 * MB  # the PNG inside was never decoded
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    with pytest.raises(ImageError, match=r"^up\.eps: EPS images are not accepted"):
        read_image_bytes(eps, "up.eps")
    with pytest.raises(ImageError, match="ICO images are not accepted"):
        read_image_size(ico)


def test_every_accepted_format_reads(tmp_path, data_dir):
    photo = read_image(next((data_dir / "johns").rglob("*.jpg")))
    for fmt, suffix in [("PNG", ".png"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif"), ("GIF", ".gif"),
                        ("PPM", ".ppm"), ("JPEG", ".jpg")]:
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, fmt)
        out = read_image_bytes(buffer.getvalue(), f"x{suffix}")
        assert out.shape == photo.shape and out.dtype == np.uint8, fmt


# -- fuzz -----------------------------------------------------------------------------------------------
def _seeds(data_dir) -> list[bytes]:
    """Real photos in every accepted format, small enough to mutate quickly."""
    photos = sorted((data_dir / "johns").rglob("*.jpg"))[:2]
    seeds = [p.read_bytes() for p in photos]
    rgb = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2RGB)[:64, :64]
    for fmt in ("PNG", "WEBP", "BMP", "TIFF", "GIF"):
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, fmt)
        seeds.append(buffer.getvalue())
    seeds.append(png_bytes(16, 16, 16, 0))
    seeds.append(png_bytes(8, 8, 8, 6))
    # and bombs: 64 MP of 16-bit gray (a gigabyte through float64), 36 MP RGBA inside an ICO
    seeds.append(png_bytes(8000, 8000, 16, 0))
    seeds.append(_ico_with_png(png_bytes(6000, 6000, 8, 6)))
    return seeds


headers = st.one_of(
    st.builds(lambda w, h, depth, color, rows: png_bytes(w, h, depth, color, rows),
              st.integers(0, 70_000), st.integers(0, 70_000), st.sampled_from([1, 2, 4, 8, 16]),
              st.sampled_from([0, 2, 3, 4, 6]), st.binary(max_size=64)),
    st.builds(lambda w, h, bpp, data: b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54)
              + struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(data), 0, 0, 0, 0) + data,
              st.integers(-70_000, 70_000), st.integers(-70_000, 70_000), st.sampled_from([1, 4, 8, 16, 24, 32]),
              st.binary(max_size=64)),
    st.builds(lambda w, h, data: b"GIF89a" + struct.pack("<HHBBB", w, h, 0xF7, 0, 0) + b"\x00" * 768 + data,
              st.integers(0, 65535), st.integers(0, 65535), st.binary(max_size=64)),
    st.builds(lambda w, h, data: b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 3)
              + struct.pack("<HHII", 256, 4, 1, w) + struct.pack("<HHII", 257, 4, 1, h)
              + struct.pack("<HHII", 258, 3, 1, 16) + b"\x00\x00\x00\x00" + data,
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.binary(max_size=64)),
)


@st.composite
def mutated(draw, seeds):
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at:at + 1] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


def test_fuzzed_files_give_only_image_errors_and_bounded_memory(data_dir):
    seeds = _seeds(data_dir)

    @settings(max_examples=250, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.one_of(mutated(seeds), headers))
    def read_it(data):
        try:
            out = read_image_bytes(data, "fuzz")
        except ImageError as exc:
            assert str(exc).startswith("fuzz: ") and "\n" not in str(exc)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3

    def fuzz():
        with image_limits(max_bytes=200 * MB):
            read_it()

    _, growth = peak_growth(fuzz)
    assert growth < 300 * MB, f"peak grew {growth / MB:.0f} MB"
