"""Synthetic face masks drawn from landmarks: offline (masked copies) and online (`MaskAugment`).

The mask is a polygon from the nose bridge down along the jaw, around the chin and back, joined with a
slightly grown hull of the nose and mouth (on a turned head the nose sticks out past the far jaw line):
from dlib's 68 points when we have them (jaw points 1..15, the nose bridge between points 28 and 29, nose
and mouth points), otherwise
estimated from the 5 standard points through a mean 68-point shape. That mean shape (`ARCFACE_MEAN_MASK`)
is the median of dlib's 68-point fits on 336 celeba-dev faces aligned to the ArcFace 112x112 template, so
on an aligned chip the mask needs no detector at all: the template *is* the 5 landmarks.

Styles: surgical-blue (with pleats), black, white, stripes, noise (fabric), solid (a random colour, as
the seed project did); every style gets a little colour jitter, ear loops, and shading that follows the
light on the face underneath plus a curvature fall-off towards the cheeks.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np

from facepipe.runtime.align import ARCFACE_112, ARCFACE_TEMPLATE, Template

MASK_STYLES = ("surgical-blue", "black", "white", "stripes", "noise", "solid")

# Median dlib 68-point positions on ArcFace 112x112 chips: jaw points 0..16, then nose bridge 27..30.
_MEAN_JAW = np.array([
    [16.6, 53.5], [17.3, 64.3], [18.8, 74.7], [20.5, 85.1], [23.9, 95.0], [29.7, 103.8], [37.5, 111.2],
    [46.3, 117.2], [56.3, 119.1], [66.3, 117.2], [75.4, 111.4], [83.5, 104.2], [89.7, 95.5], [93.3, 85.1],
    [95.0, 74.5], [96.1, 63.7], [96.9, 53.2]], dtype=np.float32)
_MEAN_NOSE_BRIDGE = np.array([[55.7, 51.8], [55.7, 59.0], [55.8, 66.2], [55.7, 73.6]], dtype=np.float32)
ARCFACE_MEAN_MASK = np.concatenate([_MEAN_JAW, _MEAN_NOSE_BRIDGE])  # 21 x 2: jaw 0..16, nose bridge 27..30

_SUPERSAMPLE = 4  # the polygon is filled at 4x and averaged down: anti-aliased edges


@dataclass
class MaskResult:
    image: np.ndarray  # H x W x 3 RGB uint8, masked
    alpha: np.ndarray  # H x W float32 in [0, 1]: how much of each pixel is mask (ear loops excluded)
    style: str
    polygons: list[np.ndarray]  # [outline, nose-and-mouth cover], image pixels


# -- geometry --------------------------------------------------------------------------------------
def _mask_outline(jaw: np.ndarray, bridge: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """jaw: 17 points (0..16), bridge: 4 points (27..30) -> closed polygon nose bridge -> jaw -> chin -> jaw."""
    top_t = 0.3 if rng is None else rng.uniform(0.05, 0.6)  # between bridge points 28 and 29
    drop = 1.03 if rng is None else rng.uniform(1.0, 1.07)  # the mask sits a little below the chin
    top = bridge[1] + top_t * (bridge[2] - bridge[1])
    sides = jaw[1:16].astype(np.float32).copy()
    centre = sides.mean(0)
    sides[3:12] = centre + (sides[3:12] - centre) * drop  # push the lower jaw and chin outwards a little
    # The top edge bows down slightly between the nose bridge and the cheeks (a fabric mask sags there).
    left_mid = 0.5 * (sides[0] + top) + np.array([0.0, 0.04], np.float32) * np.linalg.norm(sides[0] - top)
    right_mid = 0.5 * (sides[-1] + top) + np.array([0.0, 0.04], np.float32) * np.linalg.norm(sides[-1] - top)
    return np.vstack([sides, right_mid[None], top[None], left_mid[None]]).astype(np.float32)


def _cover(points: np.ndarray, margin: float) -> np.ndarray:
    """Convex hull of `points`, grown by `margin` pixels: the nose and mouth, whatever the jaw line does.

    On a turned head the nose sticks out past the jaw line of the far side; a real mask bulges over it."""
    hull = cv2.convexHull(np.asarray(points, np.float32)).reshape(-1, 2)
    centre = hull.mean(0)
    radius = np.maximum(np.linalg.norm(hull - centre, axis=1, keepdims=True), 1e-6)
    return (centre + (hull - centre) * (1 + margin / radius)).astype(np.float32)


def mask_polygon_from_68(points68: np.ndarray, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Mask shape from dlib's 68 landmarks (any coordinates: image or chip): [outline, nose-and-mouth cover]."""
    p = np.asarray(points68, dtype=np.float32).reshape(68, 2)
    eye_distance = float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))
    return [_mask_outline(p[0:17], p[27:31], rng), _cover(np.vstack([p[30:36], p[48:60]]), 0.1 * eye_distance)]


def _affine_from_5(src5: np.ndarray, dst5: np.ndarray) -> np.ndarray:
    """Least-squares 2x3 affine mapping src5 onto dst5 (6 dof: keeps the squeeze of a turned head)."""
    a = np.hstack([np.asarray(src5, np.float64), np.ones((5, 1))])
    sol, *_ = np.linalg.lstsq(a, np.asarray(dst5, np.float64), rcond=None)
    return sol.T.astype(np.float32)


def estimate_mask_points(landmarks5: np.ndarray) -> np.ndarray:
    """The 21 mask-relevant points of a 68-point shape (jaw 0..16, bridge 27..30), estimated from 5 points."""
    m = _affine_from_5(ARCFACE_112, landmarks5)
    return ARCFACE_MEAN_MASK @ m[:, :2].T + m[:, 2]


def mask_polygon_from_5(landmarks5: np.ndarray, rng: np.random.Generator | None = None) -> list[np.ndarray]:
    """Mask shape estimated from the 5 standard landmarks: [outline, nose-and-mouth cover]."""
    lm = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    pts = estimate_mask_points(lm)
    eye_distance = float(np.linalg.norm(lm[1] - lm[0]))
    return [_mask_outline(pts[:17], pts[17:], rng), _cover(lm[2:], 0.3 * eye_distance)]


def polygon_alpha(shape: tuple[int, int], polygons) -> np.ndarray:
    """H x W float32 coverage of the union of the polygons (one N x 2 array or a list), anti-aliased."""
    h, w = shape
    if isinstance(polygons, np.ndarray):
        polygons = [polygons]
    big = np.zeros((h * _SUPERSAMPLE, w * _SUPERSAMPLE), np.uint8)
    for polygon in polygons:
        pts = np.round((np.asarray(polygon, np.float64) + 0.5) * _SUPERSAMPLE - 0.5).astype(np.int32)
        cv2.fillPoly(big, [pts], 255)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


# -- appearance ------------------------------------------------------------------------------------
def _jitter_colour(rgb, rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _hsv_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.uint8([[[rng.integers(0, 180), rng.integers(60, 220), rng.integers(70, 235)]]])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(style: str, shape: tuple[int, int], polygon: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """H x W x 3 float32 colours of the mask material (before shading)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = float(polygon[:, 1].min()), float(polygon[:, 1].max())
    height = max(bottom - top, 1.0)
    if style == "surgical-blue":
        base = _jitter_colour((148, 190, 218), rng, 8)
        tex = np.broadcast_to(base, (h, w, 3)).copy()
        v = (yy - top) / height  # 0 at the nose bridge, 1 at the chin
        phase = rng.uniform(0, 0.1)
        pleats = np.zeros_like(v)
        for centre in (0.3, 0.5, 0.7):  # three horizontal folds, slightly curved
            c = centre + phase + 0.02 * np.sin((xx / w) * np.pi)
            pleats += np.exp(-((v - c) / 0.025) ** 2)
        return tex * (1 - 0.22 * np.clip(pleats, 0, 1))[..., None]
    if style == "black":
        return np.broadcast_to(_jitter_colour((28, 28, 32), rng, 5), (h, w, 3)).copy()
    if style == "white":
        return np.broadcast_to(_jitter_colour((236, 236, 232), rng, 6), (h, w, 3)).copy()
    if style == "stripes":
        a, b = _hsv_colour(rng), _hsv_colour(rng)
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(5, 12) * w / 112
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        sel = (np.sin(2 * np.pi * t) > 0).astype(np.float32)
        sel = cv2.GaussianBlur(sel, (3, 3), 0.6)[..., None]
        return a * sel + b * (1 - sel)
    if style == "noise":
        base = _hsv_colour(rng)
        noise = rng.normal(0, 1, (h, w)).astype(np.float32)
        noise = cv2.GaussianBlur(noise, (0, 0), 0.8) * 18
        return base + noise[..., None]
    if style == "solid":
        return np.broadcast_to(_hsv_colour(rng), (h, w, 3)).copy()
    raise ValueError(f"unknown mask style {style!r} (one of {', '.join(MASK_STYLES)})")


def _shading(image: np.ndarray, alpha: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Light of the face underneath (large-scale only) times a fall-off towards the mask's sides."""
    h, w = alpha.shape
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    light = cv2.GaussianBlur(gray, (0, 0), max(w, h) / 14)
    inside = alpha > 0.5
    mean = float(light[inside].mean()) if inside.any() else float(light.mean())
    shade = 0.75 + 0.25 * np.clip(light / max(mean, 1.0), 0.4, 1.6)
    xs = polygon[:, 0]
    cx, half = 0.5 * (xs.min() + xs.max()), max(0.5 * (xs.max() - xs.min()), 1.0)
    xx = np.arange(w, dtype=np.float32)[None, :]
    curve = 1.0 - 0.28 * np.clip(np.abs(xx - cx) / half, 0, 1.2) ** 2
    return (shade * curve).astype(np.float32)


def _ear_loops(out: np.ndarray, polygon: np.ndarray, colour: np.ndarray, rng: np.random.Generator) -> None:
    """Thin straps from the mask's top corners towards the ears (drawn in place, anti-aliased)."""
    h, w = out.shape[:2]
    n_side = len(polygon) - 3  # the jaw part of the outline
    thickness = max(1, int(round(w / 90)))
    for corner, direction in ((polygon[0], -1), (polygon[n_side - 1], 1)):
        end = corner + np.array([direction * w * rng.uniform(0.15, 0.3), -h * rng.uniform(0.0, 0.06)], np.float32)
        cv2.line(out, tuple(int(v) for v in np.round(corner)), tuple(int(v) for v in np.round(end)),
                 tuple(float(c) for c in colour), thickness, cv2.LINE_AA)


def draw_mask(image: np.ndarray, polygons: list[np.ndarray], style: str | None = None,
              rng: np.random.Generator | None = None, ear_loops: bool = True) -> MaskResult:
    """Paint a mask of `style` (random when None) over the union of `polygons` (the first is the outline)
    on an RGB uint8 image; returns a copy."""
    rng = np.random.default_rng() if rng is None else rng
    style = style or MASK_STYLES[int(rng.integers(len(MASK_STYLES)))]
    image = np.ascontiguousarray(image)
    h, w = image.shape[:2]
    alpha = polygon_alpha((h, w), polygons)
    extent = np.vstack(polygons)
    tex = _texture(style, (h, w), extent, rng) * _shading(image, alpha, extent)[..., None]
    out = image.astype(np.float32) * (1 - alpha[..., None]) + np.clip(tex, 0, 255) * alpha[..., None]
    if ear_loops:
        strap = np.clip(np.median(tex[alpha > 0.5], axis=0) if (alpha > 0.5).any() else tex.mean((0, 1)), 0, 255)
        _ear_loops(out, polygons[0], strap * 0.9, rng)
    return MaskResult(np.clip(out + 0.5, 0, 255).astype(np.uint8), alpha, style, list(polygons))


def add_mask(image: np.ndarray, landmarks5: np.ndarray | None = None, points68: np.ndarray | None = None,
             style: str | None = None, rng: np.random.Generator | None = None) -> MaskResult:
    """Mask a face given its 68 points (preferred) or its 5 standard points, in this image's pixels."""
    if points68 is not None:
        polygons = mask_polygon_from_68(points68, rng)
    elif landmarks5 is not None:
        polygons = mask_polygon_from_5(landmarks5, rng)
    else:
        raise ValueError("add_mask needs landmarks5 or points68")
    return draw_mask(image, polygons, style, rng)


# -- online augmentation ---------------------------------------------------------------------------
def _chip_landmarks(image: np.ndarray, template: Template) -> np.ndarray:
    h, w = image.shape[:2]
    return template.points if template.size == (w, h) else template.scaled_to(w, h).points


def apply_random_mask(chip: np.ndarray, rng: np.random.Generator, template: Template = ARCFACE_TEMPLATE) -> np.ndarray:
    """Always mask an aligned chip (random style); the caller decides how often. RGB uint8 in and out."""
    return add_mask(chip, _chip_landmarks(chip, template), rng=rng).image


class MaskAugment:
    """Online transform: with probability p, draw a random synthetic mask on an aligned face chip.

    Input: an aligned chip as H x W x 3 RGB uint8 numpy array, a PIL image, or a C x H x W uint8 torch
    tensor; the output has the same type. The chip must be aligned to `template` (default ArcFace 112x112;
    other sizes are handled by scaling the template), so no detector runs. `seed` makes it reproducible; in
    DataLoader workers each worker offsets the seed by its worker id, so workers do not repeat each other.
    """

    def __init__(self, p: float = 0.5, seed: int | None = None, template: Template = ARCFACE_TEMPLATE,
                 styles: tuple[str, ...] = MASK_STYLES):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        unknown = set(styles) - set(MASK_STYLES)
        if unknown or not styles:
            raise ValueError(f"unknown mask styles {sorted(unknown)} (choose from {', '.join(MASK_STYLES)})")
        self.p, self.seed, self.template, self.styles = p, seed, template, tuple(styles)
        self._rng: np.random.Generator | None = None
        self._worker: int | None = None

    def _generator(self) -> np.random.Generator:
        worker = 0
        torch = sys.modules.get("torch")  # only if the caller uses torch: never import it ourselves
        if torch is not None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info is not None else 0
        if self._rng is None or self._worker != worker:
            seed = None if self.seed is None else [int(self.seed), worker]
            self._rng, self._worker = np.random.default_rng(seed), worker
        return self._rng

    def __call__(self, chip):
        rng = self._generator()
        if rng.random() >= self.p:
            return chip
        array, restore = _to_array(chip)
        style = self.styles[int(rng.integers(len(self.styles)))]
        masked = add_mask(array, _chip_landmarks(array, self.template), style=style, rng=rng).image
        return restore(masked)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_rng"], state["_worker"] = None, None  # each process starts its own stream
        return state

    def __repr__(self) -> str:
        return f"MaskAugment(p={self.p}, seed={self.seed}, template={self.template.size}, styles={self.styles})"


def _to_array(chip):
    """-> (H x W x 3 RGB uint8 array, function turning a result back into the input's type)."""
    if isinstance(chip, np.ndarray):
        if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3:
            raise TypeError(f"MaskAugment expects an H x W x 3 uint8 RGB chip, got {chip.dtype} {chip.shape}")
        return chip, lambda out: out
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(chip, torch.Tensor):
        if chip.dtype != torch.uint8 or chip.ndim != 3 or chip.shape[0] != 3:
            raise TypeError("MaskAugment expects a 3 x H x W uint8 tensor (apply it before ToTensor/Normalize)")
        return chip.permute(1, 2, 0).contiguous().numpy(), lambda out: torch.from_numpy(out).permute(2, 0,
                                                                                                     1).contiguous()
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a dependency
        Image = None
    if Image is not None and isinstance(chip, Image.Image):
        mode = chip.mode
        return np.asarray(chip.convert("RGB")), lambda out: Image.fromarray(out).convert(mode)
    raise TypeError(f"MaskAugment cannot handle {type(chip).__name__}: use a numpy array, PIL image or uint8 tensor")
