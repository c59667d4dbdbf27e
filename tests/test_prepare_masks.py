"""Synthetic masks: they cover the nose and mouth and leave the eyes alone, on real faces and on aligned chips."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from facepipe.prepare.masks import (
    MASK_STYLES,
    MaskAugment,
    add_mask,
    apply_random_mask,
    mask_polygon_from_5,
    mask_polygon_from_68,
    polygon_alpha,
)
from facepipe.runtime.align import ARCFACE_TEMPLATE, align_face, reduce_68_to_5, similarity_transform

EYES = slice(36, 48)
MOUTH = slice(48, 68)
NOSE_TIP_AND_NOSTRILS = [30, 31, 32, 33, 34, 35]


@pytest.fixture(scope="module")
def real_chips(data_dir):
    """Aligned ArcFace chips of real celeba-dev faces with their dlib 68 points in chip pixels."""
    from facepipe.prepare.landmarks68 import Landmarks68
    from facepipe.runtime.detectors.dlib_detector import DlibDetector
    from facepipe.runtime.image import read_image

    root = data_dir / "celeba-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    detector, lm68 = DlibDetector(), Landmarks68()
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir())[:40:4]:
        image = read_image(sorted(folder.glob("*.jpg"))[0])
        faces = detector.detect(image)
        if not faces:
            continue
        face = max(faces, key=lambda f: f.area)
        m = similarity_transform(face.landmarks, ARCFACE_TEMPLATE.points)
        p68 = lm68(image, face.box) @ m[:, :2].T + m[:, 2]
        out.append((align_face(image, face.landmarks, ARCFACE_TEMPLATE), p68))
    assert len(out) >= 6
    return out


def _alpha_at(alpha: np.ndarray, points: np.ndarray) -> np.ndarray:
    h, w = alpha.shape
    xs = np.clip(np.round(points[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(points[:, 1]).astype(int), 0, h - 1)
    return alpha[ys, xs]


@pytest.mark.parametrize("source", ["68", "5"])
def test_masks_cover_nose_and_mouth_not_eyes_on_real_faces(real_chips, source):
    """Checked against each face's own 68 dlib points, also when the mask was estimated from 5 points."""
    for seed in range(4):  # the outline varies (top between bridge points 28/29, chin drop)
        rng = np.random.default_rng(seed)
        for chip, p68 in real_chips:
            polygon = mask_polygon_from_68(p68, rng) if source == "68" else mask_polygon_from_5(reduce_68_to_5(p68),
                                                                                                rng)
            alpha = polygon_alpha(chip.shape[:2], polygon)
            assert _alpha_at(alpha, p68[MOUTH]).min() > 0.5
            assert _alpha_at(alpha, p68[NOSE_TIP_AND_NOSTRILS]).min() > 0.5
            assert _alpha_at(alpha, p68[EYES]).max() < 0.01
            assert _alpha_at(alpha, reduce_68_to_5(p68)[:2]).max() == 0.0


@pytest.mark.parametrize("style", MASK_STYLES)
def test_every_style_paints_the_mask_and_leaves_the_eyes_untouched(real_chips, style):
    chip, p68 = real_chips[0]
    result = add_mask(chip, points68=p68, style=style, rng=np.random.default_rng(1))
    assert result.style == style and result.image.shape == chip.shape and result.image.dtype == np.uint8
    changed = np.abs(result.image.astype(int) - chip.astype(int)).sum(2) > 0
    inside = result.alpha > 0.99
    assert changed[inside].mean() > 0.9  # the mask is drawn where the polygon is
    for x, y in reduce_68_to_5(p68)[:2]:
        assert not changed[int(y) - 3:int(y) + 4, int(x) - 3:int(x) + 4].any()


def _template_chip(size: int = 112) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(60, 200, (size, size, 3), dtype=np.uint8)


def test_mask_augment_works_on_aligned_chips_without_a_detector():
    chip = _template_chip()
    aug = MaskAugment(p=1.0, seed=0)
    out = aug(chip)
    diff = np.abs(out.astype(int) - chip.astype(int)).sum(2) > 0
    t = ARCFACE_TEMPLATE.points
    for x, y in t[2:]:  # nose tip, mouth corners: masked
        assert diff[int(y) - 1:int(y) + 2, int(x) - 1:int(x) + 2].all()
    for x, y in t[:2]:  # eyes: untouched
        assert not diff[int(y) - 4:int(y) + 5, int(x) - 4:int(x) + 5].any()
    assert MaskAugment(p=0.0)(chip) is chip


def test_mask_augment_other_chip_sizes_scale_the_template():
    chip = _template_chip(160)
    out = apply_random_mask(chip, np.random.default_rng(0))
    t = ARCFACE_TEMPLATE.scaled_to(160, 160).points
    diff = np.abs(out.astype(int) - chip.astype(int)).sum(2) > 0
    assert all(diff[int(y), int(x)] for x, y in t[2:])
    assert not any(diff[int(y) - 4:int(y) + 5, int(x) - 4:int(x) + 5].any() for x, y in t[:2])


def test_mask_augment_is_seeded_picklable_and_takes_pil_and_tensors():
    from PIL import Image

    chip = _template_chip()
    a, b = MaskAugment(p=0.5, seed=7), MaskAugment(p=0.5, seed=7)
    outs_a = [a(chip) for _ in range(6)]
    outs_b = [b(chip) for _ in range(6)]
    assert all(np.array_equal(x, y) for x, y in zip(outs_a, outs_b))
    assert any(x is chip for x in outs_a) and any(x is not chip for x in outs_a)  # p=0.5 does both
    clone = pickle.loads(pickle.dumps(a))
    assert np.array_equal(clone(chip), MaskAugment(p=0.5, seed=7)(chip))  # a copy starts its stream afresh
    pil = MaskAugment(p=1.0, seed=0)(Image.fromarray(chip))
    assert isinstance(pil, Image.Image) and pil.size == (112, 112)
    torch = pytest.importorskip("torch")
    tensor = MaskAugment(p=1.0, seed=0)(torch.from_numpy(chip).permute(2, 0, 1).contiguous())
    assert tensor.shape == (3, 112, 112) and tensor.dtype == torch.uint8
    assert np.array_equal(tensor.permute(1, 2, 0).numpy(), np.asarray(pil))
    with pytest.raises(TypeError):
        MaskAugment(p=1.0)(chip.astype(np.float32))
    with pytest.raises(ValueError):
        MaskAugment(p=1.5)


def test_mask_augment_dataloader_workers_do_not_repeat_each_other():
    torch = pytest.importorskip("torch")

    class Chips(torch.utils.data.Dataset):
        def __init__(self):
            self.chip, self.aug = _template_chip(), MaskAugment(p=1.0, seed=3)

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.from_numpy(self.aug(self.chip))

    loader = torch.utils.data.DataLoader(Chips(), batch_size=2, num_workers=2)
    first, second = list(loader)  # batch 0 from worker 0, batch 1 from worker 1
    assert not torch.equal(first[0], second[0])
