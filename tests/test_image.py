"""Every kind of awkward image: a clear error naming the file, or a correct RGB uint8 array."""
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facepipe.errors import ImageError
from facepipe.runtime.image import list_images, read_image


def _png_claiming(path, width, height):
    """A valid PNG signature and IHDR claiming width x height, with a tiny (bogus) data chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT",
                                                                         zlib.compress(b"\x00" * 64)) + chunk(b"IEND",
                                                                                                              b""))


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    _png_claiming(bomb, 30000, 30000)
    assert bomb.stat().st_size < 1000
    with pytest.raises(ImageError, match=r"bomb\.png.*30000x30000.*limit"):
        read_image(bomb)


def test_truncated_jpeg(tmp_path):
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageError, match="cut.jpg.*truncated"):
        read_image(cut)


def test_non_image_and_empty_files(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="notes.jpg: not an image"):
        read_image(text)
    with pytest.raises(ImageError, match="empty.png"):
        read_image(empty)
    with pytest.raises(ImageError, match="missing.jpg: no such file"):
        read_image(tmp_path / "missing.jpg")


def test_grayscale_rgba_and_16_bit_become_rgb8(tmp_path):
    gray = np.tile(np.arange(0, 250, 2, dtype=np.uint8), (10, 1))
    Image.fromarray(gray).save(tmp_path / "gray.png")
    out = read_image(tmp_path / "gray.png")
    assert out.shape == (10, 125, 3) and out.dtype == np.uint8
    assert (out[..., 0] == gray).all()

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:4, :, 3] = 255  # top half opaque red, bottom half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (8, 8, 3)
    assert tuple(out[0, 0]) == (200, 0, 0) and tuple(out[7, 7]) == (255, 255, 255)

    sixteen = (np.linspace(0, 65535, 64).reshape(8, 8)).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), sixteen)
    out = read_image(tmp_path / "deep.png")
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0, 0] == 0 and out[7, 7, 0] == 255 and 100 < out[4, 0, 0] < 160  # scaled, not clipped


def test_exif_rotation_is_applied(tmp_path):
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = 255  # left half white
    img = Image.fromarray(wide)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rotated.jpg")
    assert out.shape[:2] == (40, 20)  # upright: taller than wide
    assert out[5, 10].mean() > 200 and out[35, 10].mean() < 50  # white half now on top


def test_huge_image_is_read(tmp_path):
    big = np.full((6000, 8000, 3), 90, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    assert read_image(tmp_path / "big.jpg").shape == (6000, 8000, 3)


def test_non_ascii_names_and_folder_listing(tmp_path):
    folder = tmp_path / "Zoë Ñúñez 张伟"
    folder.mkdir()
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((5, 5, 3), np.uint8))
    (folder / "фото.png").write_bytes((tmp_path / "x.png").read_bytes())
    (folder / "readme.txt").write_text("skip me")
    empty = tmp_path / "empty"
    empty.mkdir()
    images, problems = list_images([folder, empty, tmp_path / "nowhere"])
    assert [p.name for p in images] == ["фото.png"]
    assert read_image(images[0]).shape == (5, 5, 3)
    reasons = {p.name: why for p, why in problems}
    assert reasons == {"empty": "folder holds no images", "nowhere": "no such file or folder"}
