"""Keep the same face under the same track id between frames: box association in pure numpy.

ByteTrack's idea in a few lines: every track predicts where its box goes (constant velocity), confident
detections are matched to the predictions first, then the weak ones only continue tracks that are already
there (a blurred face keeps its track, a weak false detection never starts one). Matching is greedy by IoU,
which equals the optimal assignment in the usual case of a few well-separated faces. Last, what is left
is paired by centre distance (in face widths) and similar size: a young track has no velocity yet, and a
fast pan seen every 3rd frame can move a face further than any IoU overlap.

A track is *tentative* until it has been seen `min_hits` times (a one-frame false detection never becomes
a person), and it ends after `max_misses` detection rounds without a match. Times are in seconds of video.

Motion cannot tell a face from the next one at the same place (a cut, a doorway, two people crossing), so
the caller may forbid pairs it knows are two different people (appearance.py decides that with the
recognizer): a forbidden pair is never associated in any stage, the detection starts a new track and the
track waits for its own face (it ends after max_misses rounds without one, at the time of its last box).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N x 4) with every box in b (M x 4), boxes x1, y1, x2, y2."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def jump_matrix(tracks: np.ndarray, boxes: np.ndarray, max_size_ratio: float = 1.5) -> np.ndarray:
    """Centre distance in track-box widths between every track box and every box; inf when the sizes
    differ by more than max_size_ratio (a different face, not the same one moved)."""
    tracks = np.asarray(tracks, dtype=np.float64).reshape(-1, 4)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ct = (tracks[:, :2] + tracks[:, 2:]) / 2
    cb = (boxes[:, :2] + boxes[:, 2:]) / 2
    wt = np.maximum(tracks[:, 2] - tracks[:, 0], 1e-6)
    wb = np.maximum(boxes[:, 2] - boxes[:, 0], 1e-6)
    distance = np.linalg.norm(ct[:, None] - cb[None], axis=2) / wt[:, None]
    ratio = np.maximum(wt[:, None] / wb[None], wb[None] / wt[:, None])
    return np.where(ratio <= max_size_ratio, distance, np.inf)


def greedy_match(score: np.ndarray, minimum: float) -> list[tuple[int, int]]:
    """Pairs (row, col) taken in order of decreasing score, each row and column at most once, none
    under `minimum`. (For distances, pass their negatives.)"""
    pairs = []
    if score.size == 0:
        return pairs
    order = np.argsort(-score, axis=None)
    used_rows, used_cols = set(), set()
    for flat in order:
        r, c = divmod(int(flat), score.shape[1])
        if score[r, c] < minimum:
            break
        if r in used_rows or c in used_cols:
            continue
        pairs.append((r, c))
        used_rows.add(r)
        used_cols.add(c)
    return pairs


@dataclass
class Track:
    id: int
    box: np.ndarray  # last measured box
    t: float  # time of the last measured box
    start: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box units per second
    hits: int = 1
    misses: int = 0
    history: list[tuple[float, np.ndarray]] = field(default_factory=list)  # measured (t, box)
    confirmed_at: float | None = None  # when it was seen min_hits times

    @property
    def confirmed(self) -> bool:
        return self.confirmed_at is not None

    def update(self, box: np.ndarray, t: float, smoothing: float) -> None:
        dt = t - self.t
        if dt > 0:
            measured = (box - self.box) / dt
            # Exponential smoothing: one jittery detection does not throw the prediction off.
            self.velocity = measured if self.hits == 1 else smoothing * measured + (1 - smoothing) * self.velocity
        self.box, self.t = box, t
        self.hits += 1
        self.misses = 0
        self.history.append((t, box))

    @property
    def end(self) -> float:
        return self.t


class Tracker:
    """Feed it the detections of each detection round with `update`; it returns the tracks that ended."""

    def __init__(self, high_score: float = -np.inf, min_iou: float = 0.3, low_min_iou: float = 0.2,
                 max_jump: float = 0.8, min_hits: int = 2, max_misses: int = 8, max_speed: float = 4.0,
                 smoothing: float = 0.5):
        self.high_score = high_score  # detections scoring below this only continue existing tracks
        self.min_iou = min_iou
        self.low_min_iou = low_min_iou
        self.max_jump = max_jump  # face widths a face may move between two detections (last stage)
        self.min_hits = min_hits
        self.max_misses = max_misses
        self.max_speed = max_speed  # predictions are capped at this many box widths per second
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._next_id = 1

    def candidates(self, boxes: np.ndarray, t: float) -> np.ndarray:
        """Tracks x detections: True where motion alone could associate the pair this round (overlap with
        the prediction, or a jump of at most max_jump face widths). The pairs worth an appearance check."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        predicted = self._predictions(t)
        return (iou_matrix(predicted, boxes) >= self.low_min_iou) | (jump_matrix(predicted, boxes) <= self.max_jump)

    def update(self, boxes: np.ndarray, scores: np.ndarray, t: float,
               forbidden: np.ndarray | None = None) -> tuple[list[tuple[Track, int]], list[Track]]:
        """Associate this round's detections at time t. forbidden: tracks x detections, True for pairs that
        are two different people (never associated).

        Returns (matched, ended): matched is (track, detection index) for every detection that belongs to a
        confirmed or tentative track (new tracks included); ended is confirmed tracks that are now over.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        predicted = self._predictions(t)
        allowed = np.ones((len(self.tracks), len(boxes)), dtype=bool) if forbidden is None else ~np.asarray(forbidden)
        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero(scores < self.high_score)

        def pairs(score: np.ndarray, rows: list[int], cols: np.ndarray, minimum: float) -> list[tuple[Track, int]]:
            score = np.where(allowed[np.ix_(np.asarray(rows, dtype=int), np.asarray(cols, dtype=int))], score, -np.inf)
            return [(self.tracks[rows[r]], int(cols[c])) for r, c in greedy_match(score, minimum)]

        matched: list[tuple[Track, int]] = []
        free_tracks = list(range(len(self.tracks)))
        # Stage 1: confident detections against every track.
        matched += pairs(iou_matrix(predicted[free_tracks], boxes[high]), free_tracks, high, self.min_iou)
        taken_tracks = {id(tr) for tr, _ in matched}
        free_tracks = [i for i in free_tracks if id(self.tracks[i]) not in taken_tracks]
        # Stage 2: weak detections may only continue a track that is already there.
        matched += pairs(iou_matrix(predicted[free_tracks], boxes[low]), free_tracks, low, self.low_min_iou)
        # Stage 3: confident detections still free, by centre distance from the tracks still free.
        taken_tracks = {id(tr) for tr, _ in matched}
        free_tracks = [i for i in free_tracks if id(self.tracks[i]) not in taken_tracks]
        taken_boxes = {d for _, d in matched}
        free_high = np.array([d for d in high if int(d) not in taken_boxes], dtype=int)
        matched += pairs(-jump_matrix(predicted[free_tracks], boxes[free_high]), free_tracks, free_high,
                         -self.max_jump)

        for track, d in matched:
            track.update(boxes[d], t, self.smoothing)
            if track.confirmed_at is None and track.hits >= self.min_hits:
                track.confirmed_at = t
        used = {d for _, d in matched}
        matched_ids = {id(tr) for tr, _ in matched}

        ended = []
        kept = []
        for track in self.tracks:
            if id(track) not in matched_ids:
                track.misses += 1
                # A tentative track gets no second chance; a confirmed one waits max_misses rounds.
                if not track.confirmed or track.misses > self.max_misses:
                    if track.confirmed:
                        ended.append(track)
                    continue
            kept.append(track)
        self.tracks = kept

        for d in high:
            if int(d) not in used:
                track = self._new_track(boxes[d], t)
                matched.append((track, int(d)))
        return matched, ended

    def finish(self) -> list[Track]:
        """End every confirmed track (end of the video, Ctrl-C, a scene cut)."""
        ended = [tr for tr in self.tracks if tr.confirmed]
        self.tracks = []
        return ended

    def predicted(self, t: float) -> list[tuple[Track, np.ndarray]]:
        """Confirmed tracks and their predicted boxes at time t (drawn on frames between detections)."""
        return [(tr, self._capped_prediction(tr, t)) for tr in self.tracks if tr.confirmed and tr.misses == 0]

    def _predictions(self, t: float) -> np.ndarray:
        return np.array([self._capped_prediction(tr, t) for tr in self.tracks]).reshape(-1, 4)

    def _capped_prediction(self, track: Track, t: float) -> np.ndarray:
        width = max(1.0, track.box[2] - track.box[0])
        shift = track.velocity * (t - track.t)
        limit = self.max_speed * width * max(0.0, t - track.t)
        largest = np.abs(shift).max()
        if largest > limit > 0:
            shift = shift * (limit / largest)
        return track.box + shift

    def _new_track(self, box: np.ndarray, t: float) -> Track:
        track = Track(id=self._next_id, box=box, t=t, start=t, history=[(t, box)])
        self._next_id += 1
        if self.min_hits <= 1:
            track.confirmed_at = t
        self.tracks.append(track)
        return track
