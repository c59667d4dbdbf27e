"""dlib's HOG face detector + 68-point landmarks, reduced to the standard 5 points, with a second chance.

Speed: the HOG detector's cost grows with pixels, so it runs on a copy whose long side is at most
`detect_size` (faces in such photos are large), without dlib's 2x upsampling (4x the cost) unless
nothing was found or the image is small and not a portrait (crowds: small faces); see
`_may_hide_small_faces`; benchmarks/widerface_ap.py measures it against HOG upsampled once.
Landmarks are fitted on the original image, so alignment and embedding lose no resolution.

Second chance (a photo where those passes found no face: turned or tilted heads, low light, occlusion;
docs/open_set.md measures each step on CelebA-dev): first, the HOG boxes that scored up to `WEAK_MARGIN`
under the threshold in the last pass (free: the same scan) are shown, best first and at most
`MAX_CONFIRM` of them, to dlib's CNN face detector (mmod_human_face_detector.dat, shipped by pip with
face_recognition_models) on a small crop around each; the boxes it confirms are faces. If none is
confirmed, HOG upsampled once scans two copies rotated by +-`ROTATION` degrees (long side at most
`ROTATED_SIZE`) and the CNN confirms its best boxes the same way; boxes and landmarks are mapped back to
the original image. A photo with no face thus costs at most 2 HOG passes + MAX_CONFIRM CNN crops + 2
rotated HOG passes + MAX_CONFIRM CNN crops (`DETECTOR_CALLS_AT_MOST`), each on a bounded number of pixels.
"""
from __future__ import annotations

import copy

import cv2
import numpy as np

from facepipe.runtime.align import reduce_68_to_5
from facepipe.runtime.detectors.centernet_decode import nms
from facepipe.runtime.dlib_files import DETECTOR_CNN, LANDMARKS_68, dlib_model_path
from facepipe.types import Detection

SMALL_IMAGE = 800  # long side (after the detect_size copy) up to which a photo may hold faces HOG needs upsampling for
PORTRAIT_FACE = 0.25  # a confident face this tall (fraction of the short side): a portrait, no small faces to look for

# Second chance (measured on CelebA-dev's photos the passes above miss: docs/open_set.md).
WEAK_MARGIN = 0.5  # HOG boxes this far under the threshold are candidates for the CNN to confirm
MAX_CONFIRM = 2  # candidates shown to the CNN, best first: bounds the cost on a photo with no face
CONFIRM_FACE = 90  # px: a candidate's crop is scaled so that its box is this tall (the CNN sees ~40-px faces and up)
CONFIRM_CROP = 1.4  # the crop is this many times the box's side (the CNN's cost grows with its area)
ROTATION = 20.0  # degrees: HOG sees faces tilted up to ~+-15 degrees; +-20 covers heads tilted up to ~35
ROTATED_SIZE = 640  # long side of the copies the rotated passes scan (upsampled once)

DETECTOR_CALLS_AT_MOST = 2 + MAX_CONFIRM + 2 + MAX_CONFIRM  # HOG or CNN runs on a photo with no face

# Which pass found a face (Detection.detector_pass, the JSON's "detector_pass").
HOG, HOG_UPSAMPLED, HOG_CONFIRMED, HOG_ROTATED = "hog", "hog-upsampled", "hog-weak+cnn", "hog-rotated"
SECOND_CHANCE_PASSES = (HOG_CONFIRMED, HOG_ROTATED)


def _may_hide_small_faces(shape: tuple[int, ...], rects, scores) -> bool:
    """After a pass without upsampling: is a second pass with one upsampling worth its 4x cost?
    Yes when nothing was found, and on small images (a crowd in 416 px) unless a confident large face
    says it is a portrait (CelebA-like photos stay fast). Large photos: no, their faces are big enough
    at detect_size."""
    if len(rects) == 0:
        return True
    if max(shape[:2]) > SMALL_IMAGE:
        return False
    confident = [r.bottom() - r.top() for r, s in zip(rects, scores) if s >= 0.0]
    return not confident or max(confident) < PORTRAIT_FACE * min(shape[:2])


def _resized(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """A copy whose long side is at most long_side, and its scale (1.0: the image itself)."""
    scale = min(1.0, long_side / max(image.shape[:2]))
    if scale == 1.0:
        return image, scale
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), scale


def rotated_copy(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """The whole image rotated by `degrees` (counter-clockwise) on a canvas large enough to hold it, and
    the 2 x 3 affine matrix from the rotated copy's pixels back to the image's."""
    h, w = image.shape[:2]
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    cos, sin = abs(forward[0, 0]), abs(forward[0, 1])
    size = (int(round(h * sin + w * cos)), int(round(h * cos + w * sin)))
    forward[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    return cv2.warpAffine(image, forward, size, flags=cv2.INTER_LINEAR), cv2.invertAffineTransform(forward)


def _box(rect) -> tuple[float, float, float, float]:
    return float(rect.left()), float(rect.top()), float(rect.right() + 1), float(rect.bottom() + 1)


class Landmarks68:
    """dlib's 68-point shape predictor for a face box (any detector's; it was trained on HOG's boxes)."""

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(dlib_model_path(LANDMARKS_68)))

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        """RGB uint8 image, box x1, y1, x2, y2 (original pixels) -> 68 x 2 float32 points."""
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x1, y1, x2, y2))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)


class DlibDetector:
    name = "dlib_hog"
    fingerprint = "dlib_hog+shape_predictor_68"
    provider = "dlib (CPU)"
    default_threshold = 0.0  # HOG SVM score; dlib's own detector threshold

    def __init__(self, detect_size: int = 1024, upsample: int | None = None, second_chance: bool = True):
        import dlib

        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path(DETECTOR_CNN)))  # 0.7 MB, ~10 ms to load
        self._landmarks = Landmarks68()
        self.detect_size = detect_size
        self.upsample = upsample  # None: the policy above; 0 or 1: always that
        self.second_chance = second_chance

    def with_passes(self, small_faces: bool = True, second_chance: bool = True) -> "DlibDetector":
        """The same loaded models with fewer passes: small_faces=False drops the upsampled passes (video
        frames: a face under ~80 px is too small to name, and an empty frame would cost 4x);
        second_chance=False drops the second chance. Returns self when nothing changes."""
        upsample = self.upsample if small_faces else 0
        second_chance = self.second_chance and second_chance
        if (upsample, second_chance) == (self.upsample, self.second_chance):
            return self
        view = copy.copy(self)
        view.upsample, view.second_chance = upsample, second_chance
        return view

    def detect(self, image: np.ndarray, threshold: float | None = None) -> list[Detection]:
        threshold = self.default_threshold if threshold is None else threshold
        small, scale = _resized(image, self.detect_size)
        floor = threshold - WEAK_MARGIN if self.second_chance else threshold  # one scan gives both
        up = 0 if self.upsample is None else self.upsample
        found = list(zip(*self._hog.run(small, up, floor)[:2]))  # (rect, score), weak ones included
        strong = [(r, s) for r, s in found if s >= threshold]
        if self.upsample is None and _may_hide_small_faces(small.shape, [r for r, _ in strong],
                                                           [s for _, s in strong]):
            # One upsampling: HOG then also finds 40-80 px faces (it finds a superset of the first pass).
            up = 1
            found = list(zip(*self._hog.run(small, up, floor)[:2]))
            strong = [(r, s) for r, s in found if s >= threshold]
        if strong or not self.second_chance:
            return self._faces(image, [(_box(r), s) for r, s in strong], scale, HOG_UPSAMPLED if up else HOG)
        weak = sorted(found, key=lambda rs: rs[1], reverse=True)[:MAX_CONFIRM]
        confirmed = [(_box(r), s) for r, s in weak if self._cnn_confirms(small, _box(r))]
        if confirmed:
            return self._faces(image, confirmed, scale, HOG_CONFIRMED)
        return self._rotated(image, threshold)

    def _faces(self, image: np.ndarray, found, scale: float, detector_pass: str) -> list[Detection]:
        """Detections from (box in the scaled copy, score) pairs: boxes in original pixels, 68 points fitted
        on the original image."""
        faces = []
        h, w = image.shape[:2]
        for box, score in found:
            x1, y1, x2, y2 = (v / scale for v in box)
            points = self._landmarks(image, (x1, y1, x2, y2))
            faces.append(Detection(box=np.array([max(0, x1), max(0, y1), min(w, x2), min(h, y2)], dtype=np.float32),
                                   score=float(score), landmarks=reduce_68_to_5(points), landmarks68=points,
                                   detector_pass=detector_pass))
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces

    def _cnn_confirms(self, image: np.ndarray, box) -> bool:
        """Does dlib's CNN find a face centred inside this box, on a crop CONFIRM_CROP times its size around it?"""
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half = CONFIRM_CROP * side / 2
        left, top = int(max(0, cx - half)), int(max(0, cy - half))
        crop = image[top:int(min(image.shape[0], cy + half)), left:int(min(image.shape[1], cx + half))]
        zoom = CONFIRM_FACE / side
        crop = cv2.resize(crop, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        for found in self._cnn(np.ascontiguousarray(crop), 0):
            r = found.rect
            fx, fy = left + (r.left() + r.right()) / 2 / zoom, top + (r.top() + r.bottom()) / 2 / zoom
            if x1 <= fx <= x2 and y1 <= fy <= y2:
                return True
        return False

    def _rotated(self, image: np.ndarray, threshold: float) -> list[Detection]:
        """HOG upsampled once on copies rotated by +-ROTATION; its boxes (down to WEAK_MARGIN under the threshold,
        best first, at most MAX_CONFIRM) count when the CNN confirms them in the rotated copy. The 68 points are
        fitted there (where the face is upright) and mapped back with the box; a face found at both angles
        keeps its better detection."""
        small, scale = _resized(image, ROTATED_SIZE)
        candidates = []  # (score, box in the rotated copy, the copy, its matrix back to `small`)
        for degrees in (-ROTATION, ROTATION):
            turned, back = rotated_copy(small, degrees)
            rects, scores, _ = self._hog.run(turned, 1, threshold - WEAK_MARGIN)
            candidates += [(float(s), _box(r), turned, back) for r, s in zip(rects, scores)]
        candidates.sort(key=lambda c: c[0], reverse=True)
        faces = []
        h, w = image.shape[:2]
        for score, (x1, y1, x2, y2), turned, back in candidates[:MAX_CONFIRM]:
            if not self._cnn_confirms(turned, (x1, y1, x2, y2)):
                continue
            points = self._landmarks(turned, (x1, y1, x2, y2)) @ back[:, :2].T + back[:, 2]
            cx, cy = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) @ back[:, :2].T + back[:, 2]
            half = (x2 - x1) / 2
            box = np.array([cx - half, cy - half, cx + half, cy + half]) / scale
            box = np.clip(box, 0, [w, h, w, h]).astype(np.float32)
            points = (points / scale).astype(np.float32)
            faces.append(Detection(box=box, score=score, landmarks=reduce_68_to_5(points), landmarks68=points,
                                   detector_pass=HOG_ROTATED))
        if not faces:
            return faces
        keep = nms(np.stack([f.box for f in faces]), np.array([f.score for f in faces]), 0.3)
        return [faces[i] for i in keep]
