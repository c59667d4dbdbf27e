"""`facepipe identify clip.mp4` on video: speed, names, tracks that never span two people, events out.

Clips, all 640x480 at 25 fps, written here from $FACEPIPE_DATA/people photos (one photo per person, the first in
which a face is found; the gallery holds every *other* photo of the enrolled people):

* montage: each person for --seconds with camera-like motion (pan, zoom in and out, roll up to 6 degrees, a
  short defocus blur every 17 frames), hard cuts, an empty 0.5 s shot after every 4th person; the last
  --strangers people are not enrolled (their right answer is "unknown").
* (a) hard cuts: two enrolled people, faces filling the frame at the same place, A B A B, 2 s each.
* (b) doorway: A stands in a doorway, leaves through the right edge, and B steps in there 0.4 s later; twice.
* (c) crossing: A walks left to right while B walks right to left in front of A, twice.

Measured per clip on the ground truth of every frame: tracks that span two people (a track's detected boxes
land on more than one person; target 0), right name while shown (a shown box overlapping a person by IoU >= 0.3
carries their right name), name switches per track (how often a track's shown name changes; target 0).
Configurations, in the same process: "before" (motion-only association, whole-frame detection every round with
dlib's upsampled retry on empty frames, cuts by colour histogram only: the tracker as it was) and "now" (the
defaults: appearance checks, frame-difference cuts, margins around tracks between whole-frame rounds, no
upsampled passes on video). Speed as x real time by CPU time (time.process_time: every thread of the process)
and by wall time, at --every 3 and 5, with the default models and with YuNet (--yunet FILE).

Webhook: events queued by the video loop go to a receiver on 127.0.0.1 that answers each POST after --slow
seconds: the video's speed with and without the slow receiver, events delivered per second, events dropped
(the queue is bounded; the loop never waits), and a burst of events published as fast as possible.

    python benchmarks/video.py [--seconds 3] [--strangers 2] [--every 3 5] [--baseline-frames 100] [--yunet F]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _common import data_root, identity_photos  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from servers_testing import http_receiver  # noqa: E402

import facepipe  # noqa: E402
from facepipe.types import Candidate  # noqa: E402
from facepipe.video import VideoOptions, identify_video  # noqa: E402
from facepipe.video.events import WebhookSink, publish  # noqa: E402
from facepipe.video.identify import TrackRecord  # noqa: E402
from facepipe.video.quality import CutDetector  # noqa: E402
from facepipe.video.synthetic import Actor, Shot, make_clip, make_scene_clip  # noqa: E402
from facepipe.video.tracker import iou_matrix  # noqa: E402

FPS = 25.0
SIZE = (640, 480)
TARGET_REALTIME = 2.0  # x real time at 25 fps, --every 3, by CPU time
MIN_IOU = 0.3
BEFORE = dict(appearance=False, full_every=1, small_faces=True)  # + histogram-only cuts (run_tracked)


# -- clips ------------------------------------------------------------------------------------------------
def first_faces(fp, people: Path, strangers: int):
    """{name: (photo, image, face box)} for the first photo with a face; enrolls the others' other photos."""
    photos = identity_photos(people, min_photos=2)
    names = sorted(photos)
    enrolled = names[: len(names) - strangers]
    out = {}
    for name in names:
        for photo in photos[name]:
            image = facepipe.load_image(photo)
            faces = fp.detect(image)
            if faces:
                out[name] = (image, max(faces, key=lambda f: f.area).box)
                if name in enrolled:
                    fp.enroll(name, [p for p in photos[name] if p != photo])
                break
    return out, {name: (name if name in enrolled else None) for name in out}


def montage(faces, seconds: float, path: Path):
    shots = []
    for k, (name, (image, box)) in enumerate(faces.items()):
        shots.append(Shot(seconds, image, box, name))
        if k % 4 == 3:
            shots.append(Shot(0.5))
    return [[(f.label, f.box)] if f.box is not None else [] for f in make_clip(path, shots, SIZE, FPS)]


def clearest_pair(fp, faces, expected) -> list[str]:
    """The two enrolled people whose clip photos the gallery names with the widest margin over the threshold:
    the scenes then measure the tracker, not the recognizer's borderline cases."""
    threshold = fp.threshold().value
    margins = {}
    for name, (image, _) in faces.items():
        if expected[name]:
            found = max(fp.identify(image), key=lambda f: f.area)
            margins[name] = next((c.similarity for c in found.candidates if c.identity == name), 0.0) - threshold
    return sorted(margins, key=lambda n: -margins[n])[:2]


def scenes(faces, pair: list[str], work: Path) -> dict[str, tuple[Path, list]]:
    a, b = pair
    out = {}
    path = work / "hard_cuts.mp4"
    shots = [Shot(2.0, *faces[n], n, face_width=0.45) for n in (a, b, a, b)]
    out["(a) hard cuts, same place"] = (path, [[(f.label, f.box)] for f in make_clip(path, shots, SIZE, FPS)])

    def scene(name, routes, seconds):
        path = work / f"{name.split(')')[0].strip('(')}.mp4"
        actors = [Actor(*faces[who], who, route, face_width=0.28) for who, route in routes]
        truth = make_scene_clip(path, actors, seconds, SIZE, FPS)
        out[name] = (path, [frame.faces for frame in truth])

    # (b) A stands in the doorway and steps out of view through it; B steps in at the same place 0.4 s later
    # (within the tracker's 1 s gap); then A walks out through the right edge and B walks in there.
    door = [(a, [(0.0, 0.5, 0.45), (2.0, 0.52, 0.45)]), (b, [(2.4, 0.52, 0.45), (4.4, 0.5, 0.45)]),
            (a, [(4.8, 0.5, 0.45), (6.4, 0.5, 0.45), (6.9, 1.15, 0.45)]),
            (b, [(7.3, 1.15, 0.45), (7.8, 0.5, 0.45), (9.4, 0.5, 0.45)])]
    scene("(b) doorway, within a second", door, 9.4)
    # (c) A walks right while B walks left in front of A; then they meet in the middle and both turn back.
    cross = [(a, [(0.0, 0.2, 0.42), (4.0, 0.8, 0.42)]), (b, [(0.0, 0.8, 0.5), (4.0, 0.2, 0.5)]),
             (a, [(4.2, 0.2, 0.42), (6.2, 0.47, 0.42), (8.2, 0.2, 0.42)]),
             (b, [(4.2, 0.8, 0.5), (6.2, 0.53, 0.5), (8.2, 0.8, 0.5)])]
    scene("(c) crossing", cross, 8.2)
    return out


# -- runs and scores --------------------------------------------------------------------------------------
def run_tracked(fp, clip: Path, options: VideoOptions, before: bool = False, on_event=None):
    shown_per_frame = []

    def on_frame(frames, t, shown):
        shown_per_frame.append([(number, face.box, face.identity) for number, face in shown])

    wall, cpu = time.perf_counter(), time.process_time()
    with identify_video(fp, clip, options, on_frame=on_frame, on_event=on_event) as run:
        if before:
            run._cuts = CutDetector(difference=np.inf)  # the colour histogram alone, as before
        records = list(run)
    return records, shown_per_frame, time.perf_counter() - wall, time.process_time() - cpu, run


def score(truth, shown_per_frame, records, expected) -> dict:
    """truth: per frame [(label, box)]; shown_per_frame: per frame [(track, box, identity)]."""
    right = covered = faces = 0
    last_name: dict = {}
    switches: dict = {}
    for frame, shown in zip(truth, shown_per_frame):
        for key, _, identity in shown:
            if key in last_name and last_name[key] != identity:
                switches[key] = switches.get(key, 0) + 1
            last_name[key] = identity
            switches.setdefault(key, 0)
        for label, box in frame:
            faces += 1
            if not shown:
                continue
            iou = iou_matrix(np.asarray(box)[None], np.array([b for _, b, _ in shown]))[0]
            best = int(np.argmax(iou))
            if iou[best] >= MIN_IOU:
                covered += 1
                right += shown[best][2] == expected[label]
    spanning = 0
    for record in records:
        people = set()
        for t, *box in record.boxes:
            frame = truth[min(len(truth) - 1, int(round(t * FPS)))]
            if frame:
                iou = iou_matrix(np.asarray(box)[None], np.array([b for _, b in frame]))[0]
                if iou.max() >= MIN_IOU:
                    people.add(frame[int(np.argmax(iou))][0])
        spanning += len(people) > 1
    return {"covered": covered / max(1, faces), "right_shown": right / max(1, covered), "right": right / max(1, faces),
            "switches": max(switches.values(), default=0), "tracks": len(records), "spanning": spanning}


def run_per_frame(fp, clip: Path, limit: int):
    """face_recognition's video examples: detect + embed + match every face of every frame."""
    cap = cv2.VideoCapture(str(clip))
    n = 0
    wall, cpu = time.perf_counter(), time.process_time()
    while n < limit:
        ok, frame = cap.read()
        if not ok:
            break
        fp.identify(facepipe.from_bgr(frame))
        n += 1
    cap.release()
    return n, time.perf_counter() - wall, time.process_time() - cpu


def speed(n: int, wall: float, cpu: float) -> tuple[float, float]:
    """(x real time by CPU, x real time by wall)."""
    return n / FPS / cpu, n / FPS / wall


# -- main -------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per person in the montage")
    parser.add_argument("--strangers", type=int, default=2, help="people left out of the gallery")
    parser.add_argument("--every", type=int, nargs="+", default=[3, 5], help="detection intervals to measure")
    parser.add_argument("--baseline-frames", type=int, default=100, help="per-frame approach on the first N frames")
    parser.add_argument("--yunet", type=Path, default=None, help="YuNet ONNX file (default: "
                        "$FACEPIPE_MODELS or the data folder's sibling models/)")
    parser.add_argument("--slow", type=float, default=0.25, help="seconds the slow webhook receiver takes per event")
    args = parser.parse_args()
    if args.yunet is None:
        models = Path(os.environ.get("FACEPIPE_MODELS", data_root().parent / "models"))
        args.yunet = models / "face_detection_yunet_2023mar.onnx"
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="facepipe-video-bench-") as work:
        measure(args, console, Path(work))


def measure(args, console: Console, work: Path) -> None:
    gallery = work / "gallery.db"
    loads = []
    with facepipe.open(gallery=gallery) as fp:
        faces, expected = first_faces(fp, data_root() / "people", args.strangers)
        clip = work / "montage.mp4"
        truth = montage(faces, args.seconds, clip)
        pair = clearest_pair(fp, faces, expected)
        clips = {"montage": (clip, truth), **scenes(faces, pair, work)}
        th = fp.threshold()
        fp.identify(np.zeros((48, 64, 3), np.uint8))  # models loaded and warm before any timing
        console.print(f"montage: {len(truth)} frames ({len(truth) / FPS:.0f} s) of {len(faces)} people "
                      f"({sum(v is None for v in expected.values())} not enrolled); threshold {th.value:.3f} "
                      f"({th.source}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        engines = {"default (dlib HOG)": fp}
        if args.yunet.is_file():
            engines["YuNet"] = facepipe.open(gallery=gallery, detector=args.yunet)
            engines["YuNet"].identify(np.zeros((48, 64, 3), np.uint8))
        else:
            console.print(f"[yellow]YuNet not found at {args.yunet}: its rows are left out[/]")

        # 1. speed and names on the montage
        speed_table = Table(title=f"montage: identify a {SIZE[0]}x{SIZE[1]} clip at {FPS:.0f} fps")
        for col in ("detector", "configuration", "--every", "x real time (CPU)", "x real time (wall)", "CPU ms/frame",
                    "right while shown", "face-time shown", "name switches/track (max)", "tracks spanning 2 people",
                    "tracks", "appearance checks"):
            speed_table.add_column(col, justify="left" if col in ("detector", "configuration") else "right")
        verdicts = []
        for label, engine in engines.items():
            for config, extra, before in (("before", BEFORE, True), ("now", {}, False)):
                for every in args.every:
                    if before and every != 3:
                        continue
                    records, shown, wall, cpu, run = run_tracked(engine, clip, VideoOptions(every=every, **extra),
                                                                 before)
                    loads.append(os.getloadavg()[0])
                    m = score(truth, shown, records, expected)
                    by_cpu, by_wall = speed(len(shown), wall, cpu)
                    speed_table.add_row(label, config, str(every), f"{by_cpu:.2f}", f"{by_wall:.2f}",
                                        f"{1000 * cpu / len(shown):.1f}", f"{m['right_shown']:.1%}",
                                        f"{m['covered']:.1%}", str(m["switches"]), str(m["spanning"]),
                                        str(m["tracks"]), str(run.checks))
                    if config == "now" and every == 3:
                        verdicts.append((label, by_cpu, by_wall))
        n, wall, cpu = run_per_frame(fp, clip, args.baseline_frames)
        by_cpu, by_wall = speed(n, wall, cpu)
        speed_table.add_row("default (dlib HOG)", f"per frame, first {n} frames", "1", f"{by_cpu:.2f}",
                            f"{by_wall:.2f}", f"{1000 * cpu / n:.1f}", "", "", "", "", "", "")
        console.print(speed_table)

        # 2. the scenes: tracks that never span two people
        scene_table = Table(title=f"tracks that never span two people: {pair[0]} and {pair[1]} (default models, "
                                  "--every 3)")
        for col in ("clip", "configuration", "tracks", "tracks spanning 2 people", "right while shown",
                    "face-time shown", "name switches/track (max)", "appearance checks", "x real time (CPU)"):
            scene_table.add_column(col, justify="left" if col in ("clip", "configuration") else "right")
        worst = {"spanning": 0, "switches": 0}
        for name, (path, scene_truth) in clips.items():
            if name == "montage":
                continue
            configs = [("before", BEFORE, True), ("now", {}, False)]
            if name.startswith("(a)"):  # a cut the colour histogram misses: appearance alone must separate them
                configs += [("before, no cut detector", {**BEFORE, "cuts": False}, True),
                            ("now, no cut detector", {"cuts": False}, False)]
            for config, extra, before in configs:
                records, shown, wall, cpu, run = run_tracked(fp, path, VideoOptions(every=3, **extra), before)
                m = score(scene_truth, shown, records, expected)
                if config.startswith("now"):
                    worst = {k: max(worst[k], m[k]) for k in worst}
                scene_table.add_row(name, config, str(m["tracks"]), str(m["spanning"]), f"{m['right_shown']:.1%}",
                                    f"{m['covered']:.1%}", str(m["switches"]), str(run.checks),
                                    f"{speed(len(shown), wall, cpu)[0]:.2f}")
        console.print(scene_table)

        # 3. webhook with a slow receiver
        webhook_table = Table(title=f"webhook events: a receiver that answers each POST after {args.slow:g} s")
        for col in ("run", "x real time (CPU)", "x real time (wall)", "events queued", "delivered", "dropped",
                    "delivered/s"):
            webhook_table.add_column(col, justify="left" if col == "run" else "right")
        records, shown, wall, cpu, _ = run_tracked(fp, clip, VideoOptions(every=3))
        webhook_table.add_row("montage, no webhook", *map("{:.2f}".format, speed(len(shown), wall, cpu)),
                              "", "", "", "")
        with http_receiver(delay=args.slow) as receiver:
            sink = WebhookSink(receiver.url, queue_size=8)
            records, shown, wall, cpu, _ = run_tracked(
                fp, clip, VideoOptions(every=3), on_event=lambda kind, record, crop: publish([sink], kind, record))
            start = time.perf_counter()
            sink.close(drain_seconds=30)
            s = sink.stats
            webhook_table.add_row("montage, webhook", *map("{:.2f}".format, speed(len(shown), wall, cpu)),
                                  str(s.queued + s.dropped), str(s.sent), str(s.dropped),
                                  f"{s.sent / (wall + time.perf_counter() - start):.1f}")
        with http_receiver(delay=0.0) as receiver:
            sink = WebhookSink(receiver.url, queue_size=256)
            record = TrackRecord("cam", 1, 0.0, 1.0, "ann", 0.9, [Candidate("ann", 0.9)], [(0.0, 1, 2, 3, 4)], 1)
            start = time.perf_counter()
            for _ in range(5000):
                publish([sink], "ended", record)
            put_us = 1e6 * (time.perf_counter() - start) / 5000
            sink.close(drain_seconds=30)
            elapsed = time.perf_counter() - start
            s = sink.stats
            webhook_table.add_row(f"burst of 5000 to a fast receiver (publish: {put_us:.0f} us/event)", "", "",
                                  "5000", str(s.sent), str(s.dropped), f"{s.sent / elapsed:.0f}")
        console.print(webhook_table)
        for engine in engines.values():
            if engine is not fp:
                engine.close()
    for label, by_cpu, by_wall in verdicts:
        console.print(f"{label}, --every 3: {by_cpu:.2f}x real time by CPU time "
                      f"({'met' if by_cpu >= TARGET_REALTIME else 'NOT met'}: target {TARGET_REALTIME:.0f}x), "
                      f"{by_wall:.2f}x by wall time")
    console.print(f"scenes, now: tracks spanning two people {worst['spanning']} (target 0), name switches per track "
                  f"max {worst['switches']} (target 0); load average during the runs {min(loads):.1f}-{max(loads):.1f} "
                  f"(/proc/loadavg now: {open('/proc/loadavg').read().split()[:3]})")


if __name__ == "__main__":
    main()
