"""The pictures the README and docs/ show: each one linked is there, and none is a 256-colour palette PNG (on a
contact sheet of faces the palette blotches the skin: faces go in JPEG or full-colour PNG)."""
import re
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PICTURE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")  # ![alt](target)


def linked_pictures() -> list[tuple[str, Path]]:
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in PICTURE.findall(page.read_text(encoding="utf-8")):
            if "://" not in target:
                found.append((page.name, page.parent / target))
    return found


def test_linked_pictures_are_there_in_full_colour():
    pictures = linked_pictures()
    assert pictures, "no picture linked: the pattern no longer matches the pages"
    for page, path in pictures:
        assert path.is_file(), f"{page} shows {path}, which is not there"
        with Image.open(path) as image:
            assert image.mode not in ("P", "PA"), f"{page} shows {path.name} in a {len(image.getcolors(256) or [])}-" \
                                                  "colour palette: write faces as JPEG or full-colour PNG"
