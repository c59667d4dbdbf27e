"""Training data: aligned image folders, insightface RecordIO, synthetic tensors; augmentation; splits.

An *image source* lists images with integer labels and loads one as RGB uint8 (FolderSource,
RecordIOSource). `FaceDataset` turns a subset of a source into uint8 tensors in DataLoader workers: decode,
resize to the network input, optional flip / colour jitter / synthetic mask. Workers ship uint8 (a quarter
of float32's bytes); `normalize_batch` then applies, on the training device, exactly the normalisation the
runtime uses (runtime.preprocess.to_network_input). Samplers hand it
(index, augmentation seed) keys, so augmentation is reproducible whatever the number of workers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from facepipe.errors import DataError, FacepipeError
from facepipe.runtime.align import ARCFACE_TEMPLATE, Template
from facepipe.train.recordio import RecordIOError, RecordIOReader


class FolderSource:
    """root/<identity>/**/<image> (runtime/folders.py's rule): identities sorted by name get labels 0..C-1
    (like torchvision's ImageFolder)."""

    def __init__(self, root: str | Path):
        from facepipe.runtime.folders import scan_identity_folders  # the rule enroll and prepare use too

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: training folder not found")
        try:
            persons = {n: p for n, p in scan_identity_folders(self.root).check_readable().persons.items() if p}
        except FacepipeError as exc:
            raise DataError(str(exc)) from None
        self.classes = sorted(persons)
        paths = [f for name in self.classes for f in persons[name]]
        labels = [label for label, name in enumerate(self.classes) for _ in persons[name]]
        if not paths:
            raise DataError(f"{self.root}: no images found in identity sub-folders (expected root/<identity>/*.jpg)")
        self.paths, self.labels = paths, np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> np.ndarray:
        from facepipe.runtime.image import read_image  # the safe reader: EXIF upright, pixel limit, clear errors

        return read_image(self.paths[i])

    def describe(self, i: int) -> str:
        return str(self.paths[i].relative_to(self.root))


class RecordIOSource:
    """An insightface train.rec/train.idx pair (read with facepipe.train.recordio, no mxnet)."""

    def __init__(self, prefix: str | Path):
        try:
            self.reader = RecordIOReader(prefix)
        except RecordIOError as exc:
            raise DataError(str(exc)) from None
        self.labels = self.reader.labels()
        self.classes = [str(i) for i in range(int(self.reader.num_classes or 0))]

    def __len__(self) -> int:
        return len(self.reader)

    def load(self, i: int) -> np.ndarray:
        return self.reader[i][0]

    def describe(self, i: int) -> str:
        return f"{self.reader.rec_path.name}#{int(self.reader.keys[i])}"


def open_source(path: str | Path, kind: str = "auto") -> FolderSource | RecordIOSource:
    """A folder of identity folders, or a RecordIO prefix / .rec / folder holding train.rec."""
    p = Path(path).expanduser()
    if kind == "auto":
        if p.suffix in (".rec", ".idx") or p.with_name(p.name + ".rec").is_file():
            kind = "recordio"
        elif (p / "train.rec").is_file():
            kind, p = "recordio", p / "train"
        else:
            kind = "folder"
    if kind == "recordio":
        return RecordIOSource(p)
    if kind == "folder":
        return FolderSource(p)
    raise DataError(f"unknown data format {kind!r} (auto | folder | recordio | synthetic)")


def normalize_batch(x: torch.Tensor, color: str, mean, std) -> torch.Tensor:
    """N x 3 x H x W RGB uint8 (on any device) -> network input float32, as runtime.preprocess.to_network_input."""
    x = x.float()
    if color == "BGR":
        x = x.flip(1)
    elif color == "GRAY":
        weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(1, keepdim=True)
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


class FaceTransform:
    """RGB uint8 chip -> 3 x H x W uint8 tensor, with seeded augmentation when train=True.

    Colour order and mean/std are applied later, on the device, by normalize_batch."""

    def __init__(self, input_size=(112, 112), color: str = "RGB", mean=(127.5,) * 3, std=(127.5,) * 3,
                 train: bool = True, flip: bool = True, color_jitter: float = 0.0, mask_prob: float = 0.0,
                 template: Template = ARCFACE_TEMPLATE):
        self.size = (int(input_size[0]), int(input_size[1]))
        self.template = template.scaled_to(*self.size)  # where the landmarks sit in the (resized) chips
        self.color, self.mean, self.std = color, list(mean), list(std)
        self.train, self.flip, self.color_jitter, self.mask_prob = train, flip, color_jitter, mask_prob
        self._mask_fn: Callable | None = load_mask_transform() if train and mask_prob > 0 else None

    def __call__(self, image: np.ndarray, seed: int = 0) -> torch.Tensor:
        if (image.shape[1], image.shape[0]) != self.size:
            shrink = image.shape[1] > self.size[0]
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if self.train:
            rng = np.random.default_rng(seed)
            if self._mask_fn is not None and rng.random() < self.mask_prob:
                image = np.asarray(self._mask_fn(image, rng, self.template), dtype=np.uint8)
            if self.flip and rng.random() < 0.5:
                image = image[:, ::-1]
            if self.color_jitter > 0:
                image = jitter(image, self.color_jitter, rng)
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random brightness, contrast and saturation, each a factor in [1 - strength, 1 + strength]."""
    x = image.astype(np.float32)
    b, c, s = rng.uniform(1 - strength, 1 + strength, 3)
    x = x * b
    x = (x - x.mean()) * c + x.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * s + gray[..., None]
    return np.clip(x, 0, 255).astype(np.uint8)


def load_mask_transform() -> Callable:
    """The optional online mask augmentation of the dataset-preparation module.

    facepipe.prepare.masks.apply_random_mask(chip RGB uint8, rng, template) -> masked chip.
    """
    try:
        from facepipe.prepare import masks
    except ImportError:
        raise DataError("mask_prob > 0 needs facepipe.prepare.masks (the dataset-preparation module), which is "
                        "not part of this installation; set mask_prob=0") from None
    fn = getattr(masks, "apply_random_mask", None)
    if fn is None:
        raise DataError("facepipe.prepare.masks has no apply_random_mask(chip, rng, template): cannot use mask_prob > "
                        "0")
    return fn


class FaceDataset(Dataset):
    """A subset of an image source as training tensors; labels optionally re-numbered (split by identity).

    With `targets` (one teacher vector per image of the subset) an item is (image, label, target)."""

    def __init__(self, source, indices: np.ndarray, transform: FaceTransform, label_map: dict[int, int] | None = None,
                 targets: np.ndarray | None = None):
        self.source, self.indices, self.transform = source, np.asarray(indices, dtype=np.int64), transform
        labels = source.labels[self.indices]
        self.labels = np.array([label_map[int(v)] for v in labels], dtype=np.int64) if label_map else labels
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.indices)

    def with_transform(self, transform: FaceTransform) -> "FaceDataset":
        """The same images and labels with another transform (e.g. no augmentation for evaluation)."""
        other = FaceDataset.__new__(FaceDataset)
        other.source, other.indices, other.labels, other.transform = self.source, self.indices, self.labels, transform
        other.targets = None  # evaluation datasets yield (image, label)
        return other

    def __getitem__(self, key) -> tuple:
        i, seed = key if isinstance(key, tuple) else (key, 0)
        image = self.source.load(int(self.indices[i]))
        if self.targets is None:
            return self.transform(image, seed), int(self.labels[i])
        return self.transform(image, seed), int(self.labels[i]), self.targets[i]


class SyntheticDataset(Dataset):
    """Random uint8 RGB chips with random labels, for throughput runs (no decoding, no disk)."""

    def __init__(self, num_samples: int, num_classes: int, input_size=(112, 112), seed: int = 0):
        self.n, self.num_classes = num_samples, num_classes
        self.shape = (3, int(input_size[1]), int(input_size[0]))
        self.labels = np.random.default_rng(seed).integers(0, num_classes, num_samples)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        i, _ = key if isinstance(key, tuple) else (key, 0)
        g = torch.Generator().manual_seed(int(i))
        return torch.randint(0, 256, self.shape, generator=g, dtype=torch.uint8), int(self.labels[i])


def split_indices(labels: np.ndarray, by: str = "none", val_fraction: float = 0.0, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Train / validation indices with a fixed seed.

    by="identity": whole identities go to validation (unseen people: verification pairs);
    by="image": a fraction of every identity's images (seen people: classification accuracy), keeping at
    least one training image per identity; by="none": everything trains.
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    if by == "none" or val_fraction <= 0:
        return everything, everything[:0]
    rng = np.random.default_rng(seed)
    if by == "identity":
        ids = np.unique(labels)
        n_val = int(round(len(ids) * val_fraction))
        if n_val < 2 or n_val >= len(ids):
            raise DataError(f"split by identity with val_fraction={val_fraction} leaves {n_val} of {len(ids)} "
                            "identities for validation: need at least 2 and fewer than all")
        val_ids = set(rng.permutation(ids)[:n_val].tolist())
        val = np.array([i for i in everything if labels[i] in val_ids], dtype=np.int64)
        return np.setdiff1d(everything, val), val
    if by == "image":
        val = []
        for ident in np.unique(labels):
            idx = everything[labels == ident]
            k = min(int(round(len(idx) * val_fraction)), len(idx) - 1)
            val.extend(rng.permutation(idx)[:k].tolist())
        val = np.sort(np.array(val, dtype=np.int64))
        return np.setdiff1d(everything, val), val
    raise DataError(f"unknown split {by!r} (none | identity | image)")


def contiguous_labels(labels: np.ndarray) -> dict[int, int]:
    """Map the labels present to 0..C-1 (for training on a subset of identities)."""
    return {int(v): i for i, v in enumerate(np.unique(labels))}
