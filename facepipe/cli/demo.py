"""`facepipe demo`, and the demo's photos, made from pictures that pip installs (no download, nothing from the
repo's data).

Which pictures, from which installed package, is in assets/demo_photos.json: scikit-image's `astronaut.png`
(Eileen Collins) is enrolled, her head and shoulders (HOG takes the mission patch on her suit for a face, score
0.12 over its threshold 0.0: the demo would open with "2 faces"); the queries are a mirrored, smaller, darker
copy of it and a side-by-side with matplotlib's `grace_hopper.jpg` (Grace Hopper), who is *not* enrolled and
must come out as unknown.
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
from importlib import resources
from pathlib import Path
from typing import Optional

import typer

from facepipe.cli.console import console
from facepipe.errors import FacepipeError

ENROLLED_ROWS = 320  # of astronaut.png's 512: her head and shoulders, above the mission patch (rows 335-426)


def demo_photos() -> dict:
    return json.loads(resources.files("facepipe.assets").joinpath("demo_photos.json").read_text(encoding="utf-8"))


def installed_photo(entry: dict) -> Path:
    """A picture inside an installed package (assets/demo_photos.json says which)."""
    spec = importlib.util.find_spec(entry["package"])
    if spec is None or not spec.submodule_search_locations:
        raise FacepipeError(f"the demo needs the package {entry['package']} (pip install {entry['package']})")
    path = Path(spec.submodule_search_locations[0]) / entry["path"]
    if not path.is_file():
        raise FacepipeError(f"{path}: the demo's photo is missing from the installed {entry['package']}")
    return path


def make_demo_folder(root: Path) -> tuple[Path, list[Path]]:
    """Write people/Eileen Collins/astronaut.png and two query photos under root."""
    import cv2  # here: `facepipe --help` does not pay for OpenCV and numpy
    import numpy as np

    from facepipe.runtime.image import read_image

    photos = demo_photos()
    collins = read_image(installed_photo(photos["enrolled"]))
    hopper = read_image(installed_photo(photos["stranger"]))
    person = root / "people" / photos["enrolled"]["person"]
    person.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(person / "astronaut.png"), collins[:ENROLLED_ROWS, :, ::-1])

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


def demo(workdir: Optional[Path] = typer.Option(None, "--workdir", help="Keep the demo's photos and gallery here.")):
    """Enroll a person and identify two photos, with photos that pip installed (no download)."""
    from facepipe.cli.faces import enroll, identify

    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="facepipe-demo-"))
    people, queries = make_demo_folder(root)
    gallery_path = str(root / "gallery.db")
    console.print(f"[bold]1. facepipe enroll[/] {people}")
    enroll(folder=people, gallery=gallery_path, detector=None, recognizer=None, device="cpu", workers=1,
           reembed=False, ray=None, out=None, batch_size=8)
    console.print(f"[bold]2. facepipe identify[/] {' '.join(str(q) for q in queries)}")
    identify(paths=[str(q) for q in queries], gallery=gallery_path, detector=None, recognizer=None, device="cpu",
             threshold=None, top_k=3, as_json=False, save_dir=root / "annotated", workers=1, camera=None, every=3,
             max_fps=None, start=None, end=None, webhook=None, mqtt=None, event_crops=False, ray=None, out=None,
             out_format="jsonl", batch_size=8)
    console.print(f"annotated copies: {root / 'annotated'}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
