"""`facepipe identify clip.mp4` (track + embed a few frames per track) against the per-frame approach.

The clip: one photo per person of $FACEPIPE_DATA/people (the first in which a face is found), each shown for
--seconds at 640x480 / 25 fps with camera-like motion (pan, zoom in and out, roll up to 6 degrees, a short
defocus blur every 17 frames), hard cuts between people and an empty 0.5 s shot after every 4th person.
The gallery: every *other* photo of the enrolled people; the last --strangers people are not enrolled, so
their right answer is "unknown". Default models (dlib HOG + 68 landmarks, dlib ResNet on ONNX Runtime).

* tracked: `facepipe.video.identify_video(fp, clip, VideoOptions(every=3))`, the path of `facepipe identify
  clip.mp4 --every 3` without the progress bar: detect every 3rd frame, track in between, embed each track
  a few times and decide its name from those embeddings.
* per frame: face_recognition's video examples: detect + embed + match every face of every frame
  (`fp.identify(frame)`); each frame's name stands alone.

Both decode the same file in the same process, one after the other. Measured, on the ground-truth face of
every frame (the photo's face box moved with the camera): the share of face-time with the right name (a
shown box overlapping it by IoU >= 0.3 with the right name; a new track is shown from its second detection,
so the first --every frames of each person count as not shown), the share right while shown, name switches
per track (tracked: how often a
track's shown name changes; per frame: how often the name on the person changes between frames), and speed:
frames per second (wall) and CPU seconds per frame (time.process_time: all threads of this process). On a
shared machine wall time depends on the neighbours; CPU time per frame is the steadier figure.

    python benchmarks/video.py [--seconds 3] [--strangers 2] [--every 3 5] [--baseline-frames 250]
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

from _common import data_root, identity_photos  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import facepipe  # noqa: E402
from facepipe.video import VideoOptions, identify_video  # noqa: E402
from facepipe.video.synthetic import Shot, make_clip  # noqa: E402
from facepipe.video.tracker import iou_matrix  # noqa: E402

FPS = 25.0
SIZE = (640, 480)
TARGET_REALTIME = 2.0  # x real time at 25 fps
MIN_IOU = 0.3


def build(fp, people: Path, seconds: float, strangers: int, clip: Path):
    """Enroll, make the clip; return (truth per frame, {label: expected identity})."""
    photos = identity_photos(people, min_photos=2)
    names = sorted(photos)
    enrolled = names[: len(names) - strangers]
    shots, expected = [], {}
    for k, name in enumerate(names):
        for photo in photos[name]:
            image = facepipe.load_image(photo)
            faces = fp.detect(image)
            if faces:
                break
        else:
            continue
        face = max(faces, key=lambda f: f.area)
        if name in enrolled:
            fp.enroll(name, [p for p in photos[name] if p != photo])
        expected[name] = name if name in enrolled else None
        shots.append(Shot(seconds, image, face.box, name))
        if k % 4 == 3:
            shots.append(Shot(0.5))
    return make_clip(clip, shots, SIZE, FPS), expected


def score(truth, shown_per_frame, expected):
    """shown_per_frame: per frame a list of (track key, box, identity). Returns the metrics dict."""
    right = covered = faces = 0
    last_name: dict[object, str | None] = {}
    switches: dict[object, int] = {}
    for frame, shown in zip(truth, shown_per_frame):
        for key, _, identity in shown:
            if key in last_name and last_name[key] != identity:
                switches[key] = switches.get(key, 0) + 1
            last_name[key] = identity
            switches.setdefault(key, 0)
        if frame.box is None:
            continue
        faces += 1
        if not shown:
            continue
        iou = iou_matrix(frame.box[None], np.array([box for _, box, _ in shown]))[0]
        best = int(np.argmax(iou))
        if iou[best] >= MIN_IOU:
            covered += 1
            right += shown[best][2] == expected[frame.label]
    return {"right": right / max(1, faces), "covered": covered / max(1, faces), "right_shown": right / max(1, covered),
            "switches": sum(switches.values()) / max(1, len(switches)), "tracks": len(switches),
            "max_switches": max(switches.values(), default=0)}


def run_tracked(fp, clip: Path, every: int):
    shown_per_frame = []

    def on_frame(frames, t, shown):
        shown_per_frame.append([(number, face.box, face.identity) for number, face in shown])

    wall, cpu = time.perf_counter(), time.process_time()
    with identify_video(fp, clip, VideoOptions(every=every), on_frame=on_frame) as run:
        records = list(run)
    return records, shown_per_frame, time.perf_counter() - wall, time.process_time() - cpu


def run_per_frame(fp, clip: Path, limit: int | None):
    """Every face of every frame detected, embedded and matched; each person's name per frame is keyed by
    the ground-truth person it lands on (so a change of name on one person counts as a switch)."""
    cap = cv2.VideoCapture(str(clip))
    shown_per_frame = []
    wall, cpu = time.perf_counter(), time.process_time()
    while limit is None or len(shown_per_frame) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        faces = fp.identify(facepipe.from_bgr(frame))
        shown_per_frame.append([(None, f.box, f.identity) for f in faces])
    cap.release()
    return shown_per_frame, time.perf_counter() - wall, time.process_time() - cpu


def detector_cost(fp, clip: Path, repeats: int = 10) -> float:
    """CPU ms of one detector call on a frame of the clip, now (the load of the moment inflates it)."""
    cap = cv2.VideoCapture(str(clip))
    frame = facepipe.from_bgr(cap.read()[1])
    cap.release()
    cpu = time.process_time()
    for _ in range(repeats):
        fp.detect(frame)
    return 1000 * (time.process_time() - cpu) / repeats


def key_by_truth(truth, shown_per_frame):
    """Per-frame faces have no track: key each by the ground-truth shot it overlaps (one 'track' per person)."""
    out = []
    for frame, shown in zip(truth, shown_per_frame):
        keyed = []
        for _, box, identity in shown:
            on_truth = frame.box is not None and iou_matrix(frame.box[None], box[None])[0, 0] >= MIN_IOU
            keyed.append((frame.label if on_truth else "other", box, identity))
        out.append(keyed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per person")
    parser.add_argument("--strangers", type=int, default=2, help="people left out of the gallery")
    parser.add_argument("--every", type=int, nargs="+", default=[3, 5],
                        help="detection intervals to measure (the target is judged on 3)")
    parser.add_argument("--baseline-frames", type=int, default=250,
                        help="per-frame approach on the first N frames only (0: all; it is ~6x slower)")
    args = parser.parse_args()
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="facepipe-video-bench-") as work:
        measure(args, console, Path(work))


def measure(args, console: Console, work: Path) -> None:
    clip = work / "clip.mp4"
    with facepipe.open(gallery=work / "gallery.db") as fp:
        truth, expected = build(fp, data_root() / "people", args.seconds, args.strangers, clip)
        th = fp.threshold()
        fp.identify(np.zeros((48, 64, 3), np.uint8))  # both models loaded and warm before any timing
        console.print(f"clip: {len(truth)} frames ({len(truth) / FPS:.0f} s) of {len(expected)} people "
                      f"({sum(v is None for v in expected.values())} not enrolled); threshold {th.value:.3f} "
                      f"({th.source}); {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
        tracked_runs = {every: run_tracked(fp, clip, every) for every in args.every}
        base_shown, b_wall, b_cpu = run_per_frame(fp, clip, args.baseline_frames or None)
        detect_ms = detector_cost(fp, clip)
    nb = len(base_shown)
    base = score(truth[:nb], key_by_truth(truth, base_shown), expected)

    table = Table(title=f"identify a {SIZE[0]}x{SIZE[1]} clip at {FPS:.0f} fps, default models")
    for col in ("approach", "frames", "frames/s (wall)", "x real time (wall)", "CPU ms/frame", "x real time (CPU)",
                "right name", "face-time shown", "right while shown", "name switches/track (max)", "tracks right",
                "embeddings"):
        table.add_column(col, justify="left" if col == "approach" else "right")
    summary = {}
    for every, (records, shown, t_wall, t_cpu) in tracked_runs.items():
        n = len(shown)
        m = score(truth, shown, expected)
        right_tracks = sum(r.identity == expected.get(_majority(truth, r)) and _majority(truth, r) is not None
                           for r in records)
        summary[every] = (n / t_wall / FPS, 1000 / (1000 * t_cpu / n) / FPS, m, (b_cpu / nb) / (t_cpu / n))
        table.add_row(f"tracked, --every {every}", str(n), f"{n / t_wall:.1f}", f"{n / t_wall / FPS:.2f}",
                      f"{1000 * t_cpu / n:.1f}", f"{summary[every][1]:.2f}", f"{m['right']:.1%}",
                      f"{m['covered']:.1%}", f"{m['right_shown']:.1%}", f"{m['switches']:.2f} ({m['max_switches']})",
                      f"{right_tracks}/{len(records)}", str(sum(r.embedded for r in records)))
    table.add_row("per frame (embed every face)", str(nb), f"{nb / b_wall:.1f}", f"{nb / b_wall / FPS:.2f}",
                  f"{1000 * b_cpu / nb:.1f}", f"{1000 / (1000 * b_cpu / nb) / FPS:.2f}", f"{base['right']:.1%}",
                  f"{base['covered']:.1%}", f"{base['right_shown']:.1%}",
                  f"{base['switches']:.2f} ({base['max_switches']})", "-",
                  str(sum(len(s) for s in base_shown)))
    console.print(table)
    if nb < len(truth):
        console.print(f"(per frame ran on the first {nb} frames of {len(truth)})")
    console.print(f"one detector call on a 640x480 frame with a face, now: {detect_ms:.1f} ms CPU; "
                  f"load {os.getloadavg()[0]:.1f}")
    for every, (wall_x, cpu_x, m, speedup) in summary.items():
        verdict = "met" if wall_x >= TARGET_REALTIME else "NOT met"
        cpu_verdict = "met" if cpu_x >= TARGET_REALTIME else "NOT met"
        console.print(f"--every {every}: {speedup:.1f}x less CPU per frame than per frame; target >= "
                      f"{TARGET_REALTIME:.0f}x real time: wall {wall_x:.2f}x ({verdict}), by CPU time {cpu_x:.2f}x "
                      f"({cpu_verdict}); name switches per track (target 0): max {m['max_switches']}")


def _majority(truth, record):
    """The ground-truth person on screen most of the record's time (None: nobody)."""
    labels = [f.label for f in truth if f.box is not None and record.start - 1e-6 <= f.t <= record.end + 1e-6]
    return max(set(labels), key=labels.count) if labels else None


if __name__ == "__main__":
    main()
