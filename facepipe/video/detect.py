"""Where in a frame to run the detector: the whole frame now and then, only around live tracks in between.

The detector is most of a video's cost and grows with pixels. Between two whole-frame detections, a face
that is already tracked can only be near its last box, so those rounds run the detector on a margin around
each live track (merged where margins overlap): a 640x480 frame with one face costs about half. A new face
is found at the next whole-frame round (every `full_every` detection rounds, and every round while nothing
is tracked); a cut forces one. Video frames skip the detector's passes for faces under ~80 px (dlib's 2x
upsampling, 4x the cost on every empty frame): such faces are too small to name.
"""
from __future__ import annotations

import numpy as np

from facepipe.types import Face

MARGIN = 0.6  # face widths added on every side of a track's last box (a face moving 0.6 widths per round)


def track_regions(boxes: list[np.ndarray], size: tuple[int, int], margin: float = MARGIN) -> list[tuple[int, ...]]:
    """Integer regions (x1, y1, x2, y2) covering each box plus `margin` face widths on every side, clipped to
    the frame (width, height); regions that overlap are merged into their bounding box until none overlap."""
    width, height = size
    regions = []
    for x1, y1, x2, y2 in (np.asarray(b, dtype=np.float64) for b in boxes):
        pad = margin * max(x2 - x1, y2 - y1)
        regions.append([max(0, int(x1 - pad)), max(0, int(y1 - pad)),
                        min(width, int(np.ceil(x2 + pad))), min(height, int(np.ceil(y2 + pad)))])
    merged = True
    while merged:
        merged = False
        for i in range(len(regions)):
            for j in range(i + 1, len(regions)):
                a, b = regions[i], regions[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    regions[i] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
                    del regions[j]
                    merged = True
                    break
            if merged:
                break
    return [tuple(r) for r in regions if r[2] > r[0] and r[3] > r[1]]


def shifted(face: Face, dx: float, dy: float) -> Face:
    """A face found in a crop, moved to the full frame's pixels."""
    offset = np.array([dx, dy], dtype=np.float32)
    face.box = face.box + np.array([dx, dy, dx, dy], dtype=np.float32)
    if face.landmarks is not None:
        face.landmarks = face.landmarks + offset
    if face.landmarks68 is not None:
        face.landmarks68 = face.landmarks68 + offset
    return face


class FrameDetector:
    """The detection rounds of one video: `detect(frame, boxes of the live tracks)`."""

    def __init__(self, engine, full_every: int = 4, small_faces: bool = False, second_chance: bool = False):
        if full_every < 1:
            raise ValueError("full_every must be 1 or more")
        self.engine = engine
        self.full_every = full_every
        self.small_faces = small_faces
        self.second_chance = second_chance
        self.full_rounds = 0
        self.region_rounds = 0
        self._since_full: int | None = None  # None: the next round is a whole frame

    def reset(self) -> None:
        """After a cut: the next round looks at the whole frame."""
        self._since_full = None

    def detect(self, frame: np.ndarray, track_boxes: list[np.ndarray]) -> list[Face]:
        due = self._since_full is None or self._since_full + 1 >= self.full_every
        if due or not track_boxes:
            self._since_full = 0
            self.full_rounds += 1
            return self.engine.detect(frame, small_faces=self.small_faces,
                                      second_chance=self.second_chance)
        self._since_full += 1
        self.region_rounds += 1
        faces = []
        for x1, y1, x2, y2 in track_regions(track_boxes, (frame.shape[1], frame.shape[0])):
            crop = np.ascontiguousarray(frame[y1:y2, x1:x2])
            faces += [shifted(f, x1, y1) for f in self.engine.detect(crop, small_faces=self.small_faces,
                                                                        second_chance=self.second_chance)]
        faces.sort(key=lambda f: f.score, reverse=True)
        return faces
