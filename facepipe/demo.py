"""The demo's photos, made from pictures that pip installs (no download, nothing from the repo's data).

scikit-image ships `astronaut.png` (NASA portrait of Eileen Collins, public domain) and matplotlib ships
`grace_hopper.jpg` (US Navy portrait, public domain). Collins is enrolled from her photo; the queries are
a mirrored, smaller, darker copy of it and a side-by-side with Grace Hopper, who is *not* enrolled and
must come out as unknown.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facepipe.runtime.image import read_image


def _astronaut() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent / "astronaut.png"


def _grace_hopper() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def make_demo_folder(root: Path) -> tuple[Path, list[Path]]:
    """Write people/Eileen Collins/astronaut.png and two query photos under root."""
    collins = read_image(_astronaut())
    hopper = read_image(_grace_hopper())
    person = root / "people" / "Eileen Collins"
    person.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(person / "astronaut.png"), collins[:, :, ::-1])

    queries = root / "photos"
    queries.mkdir(exist_ok=True)
    mirrored = cv2.resize(collins[:, ::-1], None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA)
    mirrored = np.clip(mirrored.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)
    first = queries / "collins_mirrored.jpg"
    cv2.imwrite(str(first), mirrored[:, :, ::-1])

    h = 420
    left = cv2.resize(collins[:380, 40:420], (h * 380 // 380, h))
    right = cv2.resize(hopper, (hopper.shape[1] * h // hopper.shape[0], h))
    second = queries / "collins_and_hopper.jpg"
    cv2.imwrite(str(second), np.hstack([left, right])[:, :, ::-1])
    return person.parent, [first, second]
