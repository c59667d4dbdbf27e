"""Face-box annotations -> samples, and the training Dataset.

Formats (detected from the file):
  WIDER FACE      wider_face_{train,val}_bbx_gt.txt: image path, face count, then `x y w h blur expression
                  illumination invalid occlusion pose` per face (invalid faces are kept as `ignore`)
  RetinaFace      label.txt: `# path`, then `x y w h` per face, optionally followed by 5 landmarks
                  `x y v` (x = y = -1 or v = -1: missing) and a trailing score
  dlib imglab     XML with <image file> / <box top left width height [ignore]> / 68 <part> points (reduced to 5)
Image paths are relative to `images` (default: the folder of the label file).

Unreadable images and boxes with no area inside their image are reported, skipped and counted in
a LoadSummary; boxes reaching over the border are clipped.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from facepipe import log
from facepipe.errors import DataError, ImageError
from facepipe.runtime.align import reduce_68_to_5


@dataclass
class FaceSample:
    image: Path
    boxes: np.ndarray  # N x 4 float32, x1 y1 x2 y2 in image pixels
    landmarks: np.ndarray  # N x 5 x 2 float32 (standard order)
    landmark_valid: np.ndarray  # N x 5 bool
    ignore: np.ndarray  # N bool: faces that count neither as hits nor misses (WIDER "invalid")

    @staticmethod
    def make(image: Path, boxes, landmarks=None, valid=None, ignore=None) -> "FaceSample":
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        n = len(boxes)
        landmarks = np.zeros((n, 5, 2), np.float32) if landmarks is None else np.asarray(landmarks,
                                                                                         np.float32).reshape(n, 5, 2)
        valid = np.zeros((n, 5), bool) if valid is None else np.asarray(valid, bool).reshape(n, 5)
        ignore = np.zeros(n, bool) if ignore is None else np.asarray(ignore, bool).reshape(n)
        return FaceSample(Path(image), boxes, landmarks, valid, ignore)

    def select(self, mask: np.ndarray) -> "FaceSample":
        return FaceSample(self.image, self.boxes[mask], self.landmarks[mask], self.landmark_valid[mask],
                          self.ignore[mask])

    @property
    def has_landmarks(self) -> np.ndarray:
        return self.landmark_valid.all(axis=1)


@dataclass
class LoadSummary:
    images: int = 0
    faces: int = 0
    faces_with_landmarks: int = 0
    skipped_images: int = 0
    skipped_faces: int = 0
    clipped_faces: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, other: "LoadSummary") -> None:
        for f in fields(self):
            if f.name == "problems":
                self.problems += other.problems
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def line(self) -> str:
        return (f"{self.images} images, {self.faces} faces ({self.faces_with_landmarks} with landmarks); "
                f"skipped {self.skipped_images} images and {self.skipped_faces} faces, clipped {self.clipped_faces} "
                f"faces")

    def report(self, max_lines: int = 10) -> None:
        for p in self.problems[:max_lines]:
            log.warn(p)
        if len(self.problems) > max_lines:
            log.warn(f"... and {len(self.problems) - max_lines} more problems like these")


# ---------------------------------------------------------------------------------------------- parsers

def _floats(line: str, where: str) -> list[float]:
    try:
        return [float(v) for v in line.split()]
    except ValueError:
        raise DataError(f"{where}: expected numbers, got {line.strip()[:80]!r}") from None


def _xywh(v: list[float]) -> list[float]:
    return [v[0], v[1], v[0] + v[2], v[1] + v[3]]


def parse_retinaface(path: Path, images: Path, ignore_below: float | None = None) -> list[FaceSample]:
    """ignore_below: faces whose trailing score is under it are ignore regions (facepipe's teacher labels)."""
    samples: list[FaceSample] = []
    current: dict[str, Any] | None = None

    def flush():
        if current is not None:
            samples.append(FaceSample.make(current["image"], current["boxes"], current["lms"], current["valid"],
                                           current["ignore"]))

    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            flush()
            name = line[1:].strip().split()[0] if line[1:].strip() else ""
            if not name:
                raise DataError(f"{path}:{n}: '#' line without an image path")
            current = {"image": images / name, "boxes": [], "lms": [], "valid": [], "ignore": []}
            continue
        if current is None:
            raise DataError(f"{path}:{n}: a box before the first '# image' line (not a RetinaFace label.txt?)")
        v = _floats(line, f"{path}:{n}")
        if len(v) not in (4, 5, 19, 20):
            raise DataError(f"{path}:{n}: expected 4 box values, optionally + 15 landmark values, got {len(v)}")
        current["boxes"].append(_xywh(v))
        current["ignore"].append(ignore_below is not None and len(v) in (5, 20) and v[-1] < ignore_below)
        if len(v) >= 19:
            pts = np.array(v[4:19], np.float32).reshape(5, 3)
            missing = (pts[:, 2] == -1) | ((pts[:, 0] == -1) & (pts[:, 1] == -1))
            current["lms"].append(pts[:, :2])
            current["valid"].append(~missing)
        else:
            current["lms"].append(np.zeros((5, 2), np.float32))
            current["valid"].append(np.zeros(5, bool))
    flush()
    return samples


def parse_wider(path: Path, images: Path) -> list[FaceSample]:
    lines = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()]
    lines = [l for l in lines if l]
    samples, i = [], 0
    while i < len(lines):
        name = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise DataError(f"{path}: after {name!r} expected a face count (not a WIDER bbx_gt file?)") from None
        rows = lines[i + 2:i + 2 + max(count, 1)]  # a count of 0 is followed by one line of zeros
        i += 2 + max(count, 1)
        boxes, ignore = [], []
        for row in rows[:count]:
            v = _floats(row, f"{path} ({name})")
            if len(v) < 4:
                raise DataError(f"{path} ({name}): a face line needs at least x y w h")
            boxes.append(_xywh(v))
            ignore.append(len(v) >= 8 and v[7] == 1)
        samples.append(FaceSample.make(images / name, boxes, ignore=ignore))
    return samples


def parse_imglab(path: Path, images: Path) -> list[FaceSample]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"{path}: not valid XML ({exc})") from None
    samples = []
    odd_parts = 0
    for img in root.iter("image"):
        boxes, lms, valid, ignore = [], [], [], []
        for box in img.iter("box"):
            t, l, w, h = (float(box.get(k, 0)) for k in ("top", "left", "width", "height"))
            boxes.append([l, t, l + w, t + h])
            ignore.append(box.get("ignore", "0") == "1")
            parts = box.findall("part")
            if len(parts) == 68:
                pts = np.zeros((68, 2), np.float32)
                for p in parts:
                    pts[int(p.get("name"))] = (float(p.get("x")), float(p.get("y")))
                lms.append(reduce_68_to_5(pts))
                valid.append(np.ones(5, bool))
            else:
                odd_parts += len(parts) > 0
                lms.append(np.zeros((5, 2), np.float32))
                valid.append(np.zeros(5, bool))
        samples.append(FaceSample.make(images / img.get("file", ""), boxes, lms, valid, ignore))
    if odd_parts:
        log.warn(f"{path}: {odd_parts} boxes have landmark parts that are not the 68-point scheme: used for boxes only")
    return samples


def detect_format(path: Path) -> str:
    if path.suffix.lower() == ".xml":
        return "imglab"
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                return "retinaface" if line.lstrip().startswith("#") else "wider"
    raise DataError(f"{path}: empty annotation file")


PARSERS = {"retinaface": parse_retinaface, "wider": parse_wider, "imglab": parse_imglab}


# ------------------------------------------------------------------------------------ specs and checks

@dataclass
class DataSpec:
    """One annotation file, and which part of it to use.

    split: "all", or "train" / "holdout" with `holdout` the fraction of images (chosen with `seed`,
    after sorting by path) held out: the two parts never overlap and are the same on every machine.
    Written in configs as a labels path, or a mapping of these keys.
    """

    labels: str
    images: str | None = None
    format: str = "auto"
    split: str = "all"
    holdout: float = 0.0
    seed: int = 0
    repeat: int = 1  # list each image this many times (weights a small set against a large one)
    ignore_below: float | None = None  # RetinaFace labels with a trailing score: faces under it are ignore regions
    limit: int = 0  # use the first N images (after the split) only; 0: all

    @staticmethod
    def parse(value: Any, where: str) -> "DataSpec":
        if isinstance(value, str):
            return DataSpec(labels=value)
        if not isinstance(value, dict):
            raise DataError(f"{where}: each dataset is a labels path or a mapping with a 'labels' key, got {value!r}")
        names = {f.name for f in fields(DataSpec)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise DataError(f"{where}: unknown dataset key {unknown[0]!r} (known: {', '.join(sorted(names))})")
        if "labels" not in value:
            raise DataError(f"{where}: a dataset needs a 'labels' path")
        spec = DataSpec(**value)
        if spec.split not in ("all", "train", "holdout"):
            raise DataError(f"{where}: split must be all, train or holdout, got {spec.split!r}")
        if spec.format not in ("auto", *PARSERS):
            raise DataError(f"{where}: format must be auto, {', '.join(PARSERS)}; got {spec.format!r}")
        return spec


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as the image will be read (EXIF rotation applied), from the header only."""
    from facepipe.runtime.image import read_image_size  # the safe reader's format allow-list and limits

    return read_image_size(path)


def check_sample(sample: FaceSample, summary: LoadSummary) -> FaceSample | None:
    """Drop an unreadable image, or faces with no area inside it; clip boxes over the border."""
    if not Path(sample.image).is_file():
        summary.skipped_images += 1
        summary.problems.append(f"{sample.image}: image not found (skipped)")
        return None
    try:
        width, height = image_size(sample.image)
    except ImageError as exc:  # the safe reader's one line, which names the file
        summary.skipped_images += 1
        summary.problems.append(f"{exc} (skipped)")
        return None
    b = sample.boxes
    clipped = np.clip(b, 0, [width, height, width, height])
    good = (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
    for box in b[~good]:
        summary.problems.append(f"{sample.image}: box {np.round(box, 1).tolist()} lies outside the "
                                f"{width}x{height} image or has no area (skipped)")
    summary.skipped_faces += int((~good).sum())
    summary.clipped_faces += int((np.abs(clipped - b).max(axis=1) > 0.5)[good].sum()) if len(b) else 0
    sample = FaceSample(sample.image, clipped.astype(np.float32), sample.landmarks, sample.landmark_valid,
                        sample.ignore).select(good)
    summary.images += 1
    summary.faces += len(sample.boxes)
    summary.faces_with_landmarks += int(sample.has_landmarks.sum())
    return sample


def split_samples(samples: list[FaceSample], split: str, holdout: float, seed: int) -> list[FaceSample]:
    if split == "all":
        return samples
    samples = sorted(samples, key=lambda s: str(s.image))
    order = np.random.default_rng(seed).permutation(len(samples))
    n_hold = int(round(holdout * len(samples)))
    chosen = order[:n_hold] if split == "holdout" else order[n_hold:]
    return [samples[i] for i in sorted(chosen)]


def load_dataset(spec: DataSpec) -> tuple[list[FaceSample], LoadSummary]:
    labels = Path(spec.labels).expanduser()
    if not labels.is_file():
        raise DataError(f"{labels}: annotation file not found")
    images = Path(spec.images).expanduser() if spec.images else labels.parent
    fmt = detect_format(labels) if spec.format == "auto" else spec.format
    if spec.ignore_below is not None and fmt != "retinaface":
        raise DataError(f"{labels}: ignore_below needs RetinaFace labels with a score column (this is {fmt})")
    parsed = PARSERS[fmt](labels, images, spec.ignore_below) if fmt == "retinaface" else PARSERS[fmt](labels, images)
    samples = split_samples(parsed, spec.split, spec.holdout, spec.seed)
    if spec.limit:
        samples = samples[:spec.limit]
    summary = LoadSummary()
    checked = [s for s in (check_sample(s, summary) for s in samples) if s is not None]
    return checked * max(1, spec.repeat), summary


def load_datasets(values: list[Any], where: str) -> tuple[list[FaceSample], LoadSummary]:
    """Several DataSpecs (as config values) -> all their samples and one summary."""
    samples, summary = [], LoadSummary()
    for value in values:
        part, part_summary = load_dataset(DataSpec.parse(value, where))
        samples += part
        summary.add(part_summary)
    return samples, summary


# ------------------------------------------------------------------------------------------ Dataset

def _faces_and_ignored(sample: FaceSample):
    """(boxes, landmarks, valid) of the faces, and the ignore regions (e.g. WIDER "invalid": neither face nor
    background)."""
    keep = ~sample.ignore
    return sample.boxes[keep], sample.landmarks[keep], sample.landmark_valid[keep], sample.boxes[sample.ignore]


class DetectionDataset:
    """Map-style dataset for torch's DataLoader: sample i -> {"image": 3 x S x S float32, targets...}.

    Augmentation randomness comes from np.random.default_rng((seed, epoch, i)), so it does not depend
    on the number of workers and a resumed run replays it exactly; call set_epoch each epoch.
    """

    def __init__(self, samples: list[FaceSample], input_size: int, augment=None, stride: int = 4, seed: int = 0,
                 mean=None, std=None):
        from facepipe.runtime.detectors.centernet import MEAN, STD

        self.samples = samples
        self.input_size = input_size
        self.augment = augment
        self.stride = stride
        self.seed = seed
        self.epoch = 0
        self.mean = list(mean or MEAN)
        self.std = list(std or STD)
        if input_size % 32:
            raise DataError(f"input_size must be a multiple of 32, got {input_size}")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, FaceSample]:
        """The image (RGB uint8) and its faces, trying the next image when one cannot be decoded."""
        from facepipe.runtime.image import read_image
        for k in range(len(self.samples)):
            sample = self.samples[(i + k) % len(self.samples)]
            try:
                return read_image(sample.image), sample
            except ImageError as exc:
                log.warn(f"{exc} (skipped in training)")
        raise DataError("no image of the training set can be read")

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return self.getitem(i, i)

    def getitem(self, i: int, key: int, epoch: int | None = None) -> dict[str, np.ndarray]:
        """Sample i, augmented with the randomness of (seed, epoch, key); epoch defaults to set_epoch's."""
        epoch = self.epoch if epoch is None else epoch
        from facepipe.detection.augment import letterbox, train_transform
        from facepipe.detection.targets import encode_targets
        from facepipe.runtime.preprocess import network_input

        image, sample = self.load(i)
        boxes, lms, valid, ignored = _faces_and_ignored(sample)
        rng = np.random.default_rng((self.seed, epoch, key)) if self.augment is not None else None
        if rng is not None and self.augment.mosaic_prob > 0 and rng.random() < self.augment.mosaic_prob:
            from facepipe.detection.augment import mosaic

            grid = int(rng.choice(self.augment.mosaic_grids))
            tiles = [(image, boxes, lms, valid, ignored)]
            for j in rng.integers(0, len(self.samples), grid * grid - 1):
                other, other_sample = self.load(int(j))
                tiles.append((other, *_faces_and_ignored(other_sample)))
            image, boxes, lms, valid, ignored = mosaic(tiles, self.input_size, grid, self.augment, rng, self.mean)
        elif rng is not None:
            image, boxes, lms, valid, ignored = train_transform(image, boxes, lms, valid, self.input_size, self.augment,
                                                                rng, self.mean, ignore_boxes=ignored)
        else:
            image, boxes, lms, valid, ignored = letterbox(image, boxes, lms, valid, self.input_size, self.mean,
                                                          ignore_boxes=ignored)
        out_size = (self.input_size // self.stride, self.input_size // self.stride)
        targets = encode_targets(boxes, lms, valid, out_size, self.stride, ignore_boxes=ignored)
        x = network_input(image, "RGB", self.mean, self.std)[0]
        return {"image": x, **targets}
