"""Identify the people in a video: detect every Nth frame, track in between, embed each track a few times.

The loop, per frame: a hard cut ends every track; on detection frames the detector's faces (the whole frame,
or margins around the live tracks in between: detect.py) are associated with the tracks by motion
(tracker.py) and, where in doubt, by appearance (appearance.py: a face that is not the track's person never
continues it, so a track never spans two people); each track keeps the best frame it has seen (quality.py)
and embeds it when the track is confirmed, then about once a second up to `embeds_per_track` times. The
track's identity is decided from all its embeddings with the engine's threshold, and revised with every new
one. A record per track comes out when the track ends, so a live source produces answers as it goes.

    with identify_video(fp, "door.mp4", VideoOptions(every=3)) as run:
        for record in run:
            print(record.to_json())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from facepipe.openset.policy import track_identity, verify_threshold
from facepipe.types import Candidate, Face
from facepipe.video.appearance import (
    SIGNATURE_SAME,
    face_signature,
    pairs_in_doubt,
    same_person,
    signature_similarity,
    track_reference,
)
from facepipe.video.detect import FrameDetector
from facepipe.video.quality import CutDetector, face_quality
from facepipe.video.source import VideoInfo, VideoSource
from facepipe.video.tracker import Track, Tracker
from facepipe.video.writer import AnnotatedWriter

MATCH_TOP_K = 5  # persons asked per embedding: enough for a track's votes to agree on a name


@dataclass
class VideoOptions:
    every: int = 3  # detect on every Nth frame, track in between
    max_fps: float | None = None  # take at most this many frames per second (video time; wall time live)
    start: float | None = None  # seconds
    end: float | None = None
    top_k: int = 3
    threshold: float | None = None  # None: the engine's (calibrated or model default)
    embeds_per_track: int = 5  # embeddings taken embed_interval apart; then one every 4 intervals (revisions)
    embed_interval: float = 1.0  # seconds between two embeddings of one track
    max_gap: float = 1.0  # seconds a track survives without a detection (a turned head, a pass behind)
    full_every: int = 4  # between two whole-frame detections, this many - 1 rounds look only around live tracks
    small_faces: bool = False  # let the detector spend extra passes on faces under ~80 px (dlib: 2x upsampling)
    second_chance: bool = False  # let the detector try harder on a frame where it found no face (costly per frame)
    appearance: bool = True  # check pairs in doubt with the recognizer (off: motion only, as before)
    cuts: bool = True  # a shot change ends every track (off: only appearance separates the shots' people)
    stream_timeout: float = 5.0  # seconds a network source may stay silent (opening, or between frames)


@dataclass
class TrackRecord:
    video: str
    track: int
    start: float
    end: float
    identity: str | None
    similarity: float | None
    candidates: list[Candidate]
    boxes: list[tuple[float, float, float, float, float]] = field(repr=False)  # (t, x1, y1, x2, y2) per detection
    embedded: int = 0  # how many frames were embedded to decide

    def to_json(self) -> dict:
        return {
            "video": self.video, "track": self.track, "start": round(self.start, 3), "end": round(self.end, 3),
            "identity": self.identity,
            "similarity": None if self.similarity is None else round(float(self.similarity), 4),
            **({"distance": round(float(self.candidates[0].distance), 4)}
               if self.candidates and self.candidates[0].distance is not None
               else {}),
            "candidates": [c.to_json() for c in self.candidates],  # the same writer as a photo's faces
            "boxes": [[round(t, 3)] + [round(float(v), 1) for v in box] for t, *box in self.boxes],
        }


@dataclass
class _Identity:
    """What one track knows about who it is."""

    number: int
    embeddings: int = 0
    votes: list[dict[str, float]] = field(default_factory=list)  # per embedding: person -> similarity
    identity: str | None = None
    similarity: float | None = None
    candidates: list[Candidate] = field(default_factory=list)
    best: tuple[float, np.ndarray, Face] | None = None  # (quality, frame, face) not yet embedded
    last_embed: float = -np.inf
    own: list[np.ndarray] = field(default_factory=list)  # the track's embeddings (its person's face)
    reference: np.ndarray | None = None  # their mean
    signature: np.ndarray | None = None  # appearance.face_signature at the last detection
    suspect: bool = False  # the last embedding disagreed with the track's own: check the next round
    portrait: tuple[float, np.ndarray, Face] | None = None  # the best (quality, frame, face) of the whole track


class VideoRun:
    """One source being identified. Iterate for TrackRecords. Ctrl-C during the loop ends it cleanly (open
    tracks come out, the annotated video is kept, `interrupted` is set); `stop()` does the same from outside."""

    def __init__(self, engine, source, options: VideoOptions | None = None, annotate_to: Path | None = None,
                 on_frame: Callable[[int, float, list[tuple[int, Face]]], None] | None = None,
                 on_event: Callable[[str, TrackRecord, np.ndarray | None], None] | None = None,
                 event_crops: bool = False, info: VideoInfo | None = None):
        self.engine = engine
        self.on_event = on_event  # (event type, the track's record so far, the face crop or None): events.py
        self.event_crops = event_crops
        self.options = options or VideoOptions()
        if self.options.every < 1:
            raise ValueError("every must be 1 or more")
        self.threshold = engine.threshold(self.options.threshold)
        # source None: the caller feeds frames (`feed`, `flush`), as `facepipe watch` does; info describes them.
        self.source = None if source is None else VideoSource(source, self.options.start, self.options.end,
                                                               self.options.stream_timeout)
        self.info = self.source.info if self.source is not None else info
        self.on_frame = on_frame
        self.frames = 0  # frames processed (after --max-fps)
        self.saved: Path | None = None
        self.interrupted = False  # ended by Ctrl-C
        self._annotate_to = None if annotate_to is None else Path(annotate_to)
        self._writer = None  # opened at the first frame: streams and cameras tell their size only then
        rate = min(self.info.fps, self.options.max_fps or self.info.fps)  # frames processed per second
        detection_interval = self.options.every / rate
        self.tracker = Tracker(max_misses=max(1, int(round(self.options.max_gap / detection_interval))))
        self._cuts = CutDetector()
        self._finder = FrameDetector(engine, self.options.full_every, self.options.small_faces,
                                     self.options.second_chance)
        recognizer = engine.recognizer
        self._metric = recognizer.metric
        self._same_person = verify_threshold(recognizer).value  # two faces of one person
        self.checks = 0  # detections embedded to settle a pair in doubt
        self.refused = 0  # pairs motion would have associated that were two people
        self._ids: dict[int, _Identity] = {}
        self._numbers = 0
        self._done = False
        self._next_t = -np.inf  # --max-fps: the next frame time taken
        self._since_detection: int | None = None  # frames since the last detection round; None: detect now

    # -- the loop -------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[TrackRecord]:
        try:
            for _, t, frame in self.source.frames():
                yield from self.feed(frame, t)
        except KeyboardInterrupt:
            # Ctrl-C is how a live source ends: like the end of a file, and `interrupted` says so.
            self.interrupted = True
        except BaseException:
            self._close(keep=False)
            raise
        yield from self._end(self.tracker.finish())
        self._close(keep=True)

    def feed(self, frame: np.ndarray, t: float) -> Iterator[TrackRecord]:
        """One frame (RGB) at time t (seconds, increasing): the records of the tracks that ended with it."""
        if self.options.max_fps:
            if t < self._next_t - 1e-6:
                return
            step = 1.0 / self.options.max_fps  # keep the average rate, without bursts after a stall
            self._next_t = self._next_t + step if self._next_t + step > t else t + step
        self.frames += 1
        if self.options.cuts and self._cuts.update(frame):
            yield from self.flush()  # detect on the first frame of the new shot
        if self._since_detection is None or self._since_detection + 1 >= self.options.every:
            self._since_detection = 0
            yield from self._detect(frame, t)
        else:
            self._since_detection += 1
        self._show(frame, t)

    def flush(self) -> Iterator[TrackRecord]:
        """End every open track (a cut, a stream that dropped): their records; the run goes on with new tracks."""
        yield from self._end(self.tracker.finish())
        self._finder.reset()
        self._since_detection = None

    def stop(self) -> list[TrackRecord]:
        """End now (a Ctrl-C outside the loop, a time limit): the open tracks' records; the video is kept."""
        if self._done:
            return []
        records = list(self._end(self.tracker.finish()))
        self._close(keep=True)
        return records

    def close(self) -> None:
        """Release the source; an unfinished annotated video is deleted."""
        self._close(keep=False)

    def __enter__(self) -> "VideoRun":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        self._close(keep=False)  # after a finished loop this does nothing

    # -- steps ----------------------------------------------------------------------------------------
    def _detect(self, frame: np.ndarray, t: float) -> Iterator[TrackRecord]:
        faces = self._finder.detect(frame, [tr.box for tr in self.tracker.tracks])
        boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
        scores = np.array([f.score for f in faces], dtype=np.float64)
        signatures = [face_signature(frame, f) for f in faces]
        forbidden = self._different_people(frame, faces, boxes, signatures, t) if self.options.appearance else None
        matched, ended = self.tracker.update(boxes, scores, t, forbidden)
        yield from self._end(ended)
        for track, d in matched:
            self._observe(track, frame, faces[d], signatures[d], t)

    def _different_people(self, frame: np.ndarray, faces: list[Face], boxes: np.ndarray,
                          signatures: list[np.ndarray], t: float) -> np.ndarray:
        """Tracks x detections: True for pairs the recognizer says are two people (checked only where in doubt)."""
        tracks = self.tracker.tracks
        states = [self._ids.get(tr.id) for tr in tracks]
        changed = np.array([[signature_similarity(s.signature if s else None, sig) < SIGNATURE_SAME
                             for sig in signatures] for s in states], dtype=bool).reshape(len(tracks), len(faces))
        doubt = pairs_in_doubt(self.tracker.candidates(boxes, t), [tr.misses for tr in tracks],
                               [bool(s and s.suspect) for s in states], changed,
                               [s is not None and s.reference is not None for s in states])
        forbidden = np.zeros_like(doubt)
        if not doubt.any():
            return forbidden
        checked = [faces[d] for d in np.flatnonzero(doubt.any(axis=0)) if faces[d].embedding is None]
        self.engine.embed(frame, checked)
        self.checks += len(checked)
        for i, d in zip(*np.nonzero(doubt)):
            forbidden[i, d] = not same_person(faces[d].embedding, states[i].reference, self._metric,
                                              self._same_person)
        self.refused += int(forbidden.sum())
        return forbidden

    def _observe(self, track: Track, frame: np.ndarray, face: Face, signature: np.ndarray, t: float) -> None:
        """Remember the track's best frame; embed it when the track is confirmed and an embedding is due (a face
        embedded for an appearance check counts as the track's embedding: it is the same person)."""
        state = self._ids.get(track.id)
        if state is None:
            state = self._ids[track.id] = _Identity(number=0)
        state.signature = signature
        quality = face_quality(frame, face)
        if state.best is None or quality > state.best[0]:
            state.best = (quality, frame, face)
        if state.portrait is None or quality > state.portrait[0]:
            state.portrait = (quality, frame, face)
        if not track.confirmed:
            return
        if state.number == 0:
            self._numbers += 1
            state.number = self._numbers
            self._event("started", track, state, frame, face)
        if face.embedding is not None:  # checked this round and found to be the track's person
            state.suspect = False
            self._vote(track, state, face, frame, t)
            return
        opts = self.options
        interval = opts.embed_interval * (1 if state.embeddings < opts.embeds_per_track else 4)
        if t - state.last_embed >= interval:
            _, best_frame, best_face = state.best
            self.engine.embed(best_frame, [best_face])
            if state.reference is not None and self.options.appearance and not same_person(
                    best_face.embedding, state.reference, self._metric, self._same_person):
                # Someone else got into this track between two checks: keep their face out of its name, and
                # check every detection of the next round.
                state.suspect, state.best = True, None
                return
            self._vote(track, state, best_face, best_frame, t)

    def _vote(self, track: Track, state: _Identity, face: Face, frame: np.ndarray, t: float) -> None:
        """Match one embedding of the track against the gallery and revise the track's name."""
        opts = self.options
        before = state.identity
        match = self.engine.match([face.embedding], top_k=max(MATCH_TOP_K, opts.top_k),
                                  threshold=self.threshold.value)[0]
        state.votes.append({c.identity: float(c.similarity) for c in match.candidates})
        state.identity, state.similarity, state.candidates = track_identity(state.votes, self.threshold.value,
                                                                                   opts.top_k, self._metric)
        state.own.append(face.embedding)
        state.reference = track_reference(state.own, self._metric)
        state.embeddings += 1
        state.last_embed = t
        state.best = None
        if state.identity != before:
            self._event("named" if before is None else "renamed", track, state, frame, face)

    def _record(self, track: Track, state: _Identity) -> TrackRecord:
        return TrackRecord(self.info.name, state.number, track.start, track.end, state.identity, state.similarity,
                           list(state.candidates), [(ht, *map(float, box)) for ht, box in track.history],
                           state.embeddings)

    def _event(self, kind: str, track: Track, state: _Identity, frame: np.ndarray | None, face: Face | None) -> None:
        if self.on_event is None:
            return
        crop = None
        if self.event_crops and frame is not None and face is not None:
            crop = face_crop(frame, face.box)
        self.on_event(kind, self._record(track, state), crop)

    def _show(self, frame: np.ndarray, t: float) -> None:
        if self._annotate_to is not None and self._writer is None:
            rate = min(self.info.fps, self.options.max_fps or self.info.fps)
            self._writer = AnnotatedWriter(self._annotate_to, rate, (frame.shape[1], frame.shape[0]))
        if self._writer is None and self.on_frame is None:
            return
        shown = []  # (track number, its box now with its current name)
        for track, box in self.tracker.predicted(t):
            state = self._ids.get(track.id)
            if state is None or state.number == 0:
                continue
            shown.append((state.number, Face(box=box.astype(np.float32), score=1.0, identity=state.identity,
                                             similarity=state.similarity)))
        if self._writer is not None:
            self._writer.write(frame, [face for _, face in shown])
        if self.on_frame is not None:
            self.on_frame(self.frames, t, shown)

    def _end(self, tracks: list[Track]) -> Iterator[TrackRecord]:
        for track in sorted(tracks, key=lambda tr: tr.start):
            state = self._ids.pop(track.id, None)
            if state is None or state.number == 0:
                continue
            record = self._record(track, state)
            if self.on_event is not None:
                best = state.portrait
                self.on_event("ended", record, face_crop(best[1], best[2].box) if self.event_crops and best else None)
            yield record
        # tentative tracks the tracker dropped leave nothing behind
        live = {tr.id for tr in self.tracker.tracks}
        for key in [k for k in self._ids if k not in live]:
            del self._ids[key]

    def _close(self, keep: bool) -> None:
        if self._done:
            return
        self._done = True
        if self.source is not None:
            self.source.close()
        if self._writer is not None:
            if keep:
                self.saved = self._writer.finish()
            else:
                self._writer.discard()


def face_crop(frame: np.ndarray, box, margin: float = 0.25) -> np.ndarray:
    """The face with a margin of `margin` face widths, clipped to the frame (a copy)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    pad = margin * max(x2 - x1, y2 - y1)
    h, w = frame.shape[:2]
    return frame[max(0, int(y1 - pad)):min(h, int(y2 + pad)), max(0, int(x1 - pad)):min(w, int(x2 + pad))].copy()


def identify_video(engine, source, options: VideoOptions | None = None, annotate_to: Path | None = None,
                   on_frame=None, on_event=None, event_crops: bool = False) -> VideoRun:
    """Open `source` (a video path, a camera index or a stream URL) and return the run: iterate it for one
    TrackRecord per person on screen, as their tracks end. Raises VideoError at once if it cannot be opened.

    annotate_to: write the annotated video there (an .mp4 path). on_frame(frames, t, shown): called after
    every processed frame with the tracks on screen as (track number, Face with the track's current name).
    on_event(kind, record, crop): "started", "named", "renamed", "ended" as they happen (events.py sends them
    out); crop is the face (RGB) when event_crops, else None."""
    return VideoRun(engine, source, options, annotate_to, on_frame, on_event, event_crops)
