"""PrepareConfig: every option of `facepipe prepare` that changes what is written for an image.

The config is saved as DST/prepare_config.json on the first run. A rerun into the same DST must use the
same per-image options (otherwise half the set would be made one way and half another); options that
only change the final reports, the packing or the speed (workers, hygiene thresholds, overlap sets,
format) may differ between runs.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from facepipe.errors import FacepipeError
from facepipe.runtime.align import ARCFACE_TEMPLATE, DLIB_TEMPLATE, Template

CONFIG_FILE = "prepare_config.json"
FACE_POLICIES = ("largest", "all", "single-only")
FORMATS = ("folder", "recordio")
IMAGE_FORMATS = ("jpg", "png")
MASK_LANDMARKS = ("auto", "68", "5")


class PrepareError(FacepipeError):
    """A prepare run that cannot go ahead as asked."""


@dataclass
class PrepareConfig:
    faces: str = "largest"  # largest | all | single-only
    template: str = "arcface"  # arcface | dlib | path to a JSON file {"points": 5x2, "size": [w, h]}
    size: int | None = None  # chip width in pixels (template scaled); None: the template's own size
    image_format: str = "jpg"
    quality: int = 95
    min_image_size: int = 0  # shorter image side, pixels; 0 = off (the seed project used 250)
    min_face_size: int = 32  # shorter side of the face box, original pixels
    min_sharpness: float | None = None  # variance of the Laplacian on the gray chip; None = off
    max_yaw: float | None = None  # degrees, estimated from the 5 landmarks; None = off
    mask_ratio: float = 0.0  # fraction of kept faces that also get a masked copy
    mask_landmarks: str = "auto"  # 68 (dlib predictor on the box), 5 (estimated), auto: 68 with the dlib detector
    seed: int = 0
    detector: str | None = None
    detect_threshold: float | None = None
    recognizer: str | None = None  # embeddings for identity hygiene
    embed: bool = True  # compute embeddings (identity hygiene, overlap exclusion)
    # resolved at start, saved for the record: what the chips were aligned to, which model embedded them
    template_points: list = field(default_factory=list)
    template_size: list = field(default_factory=list)
    embedding_fingerprint: str | None = None

    def validate(self) -> None:
        def bad(msg: str) -> None:
            raise PrepareError(msg)

        if self.faces not in FACE_POLICIES:
            bad(f"--faces must be one of {', '.join(FACE_POLICIES)}, not {self.faces!r}")
        if self.image_format not in IMAGE_FORMATS:
            bad(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, not {self.image_format!r}")
        if self.mask_landmarks not in MASK_LANDMARKS:
            bad(f"--mask-landmarks must be one of {', '.join(MASK_LANDMARKS)}, not {self.mask_landmarks!r}")
        if not 0.0 <= self.mask_ratio <= 1.0:
            bad(f"--mask-ratio must be between 0 and 1, got {self.mask_ratio}")
        if self.size is not None and not 16 <= self.size <= 1024:
            bad(f"--size must be between 16 and 1024 pixels, got {self.size}")
        if not 1 <= self.quality <= 100:
            bad(f"--quality must be between 1 and 100, got {self.quality}")
        if self.min_image_size < 0 or self.min_face_size < 0:
            bad("--min-image-size and --min-face-size cannot be negative")

    def resolve_template(self) -> Template:
        template = load_template(self.template)
        if self.size is not None:
            w, h = template.size
            template = template.scaled_to(self.size, int(round(self.size * h / w)))
        self.template_points = np.round(template.points.astype(np.float64), 4).tolist()
        self.template_size = list(template.size)
        return template

    @property
    def template_obj(self) -> Template:
        return Template(np.asarray(self.template_points, np.float32), tuple(self.template_size))

    @property
    def mask_with_68(self) -> bool:
        if self.mask_landmarks == "auto":
            return self.detector in (None, "dlib")
        return self.mask_landmarks == "68"

    def per_image_key(self) -> dict:
        """The options whose change would make already written chips inconsistent with new ones."""
        key = asdict(self)
        key.pop("template")  # the resolved points and size say it exactly
        return key

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "PrepareConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def load_template(spec: str) -> Template:
    """arcface | dlib | a JSON file with {"points": [[x, y] x 5], "size": [width, height]}."""
    if spec == "arcface":
        return ARCFACE_TEMPLATE
    if spec == "dlib":
        return DLIB_TEMPLATE
    path = Path(spec)
    if not path.is_file():
        raise PrepareError(f"--template {spec}: expected arcface, dlib or a JSON file with points and size")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        points = np.asarray(data["points"], dtype=np.float32)
        size = (int(data["size"][0]), int(data["size"][1]))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise PrepareError(f"{path}: not a template file ({exc}); expected "
                           '{"points": [[x, y], ... 5 points], "size": [width, height]}') from None
    if points.shape != (5, 2) or min(size) < 16:
        raise PrepareError(f"{path}: a template needs 5 [x, y] points and a size of at least 16x16")
    return Template(points, size)


def check_compatible(saved: dict, current: PrepareConfig, dst: Path) -> None:
    """Refuse to resume into DST with per-image options different from the ones it was started with."""
    old = PrepareConfig.from_json(saved).per_image_key()
    new = current.per_image_key()
    diffs = [f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in new if old.get(k) != new.get(k)]
    if diffs:
        raise PrepareError(f"{dst} was prepared with other options ({'; '.join(diffs)}); "
                           "use a new DST folder, or the same options to resume")
