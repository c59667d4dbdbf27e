"""facepipe's released detector against every teacher it learned from, on the held-out widerface-dev images.

    nice python benchmarks/detector_release.py [--student models/facepipe_detector.onnx] [--threads 2]
        [--plot docs/detector_pr.png] [--sheet docs/detector_sheet.jpg] [--rounds 3]

Held out: widerface-dev split holdout 0.3 seed 0 (30 images, never trained on; configs/detector/release.yaml).
Each detector runs at its own default input rule on the 416 x 416 images (facepipe's: long side <= 640, never
enlarged; YuNet, RetinaFace: the image as it is; UltraFace: its fixed 640 x 480 input), with a low score floor so the
whole PR curve counts. Also the fused teacher labels (every teacher on 4 views: the labels the student learns
from, an upper reference, 10-20x the time) and dlib HOG upsampled once (face_recognition's default).
Then the time per 640 x 480 photo (a widerface-dev image letterboxed), every detector on `--threads` threads,
detectors alternating, median of `--rounds` rounds over the images.
Targets (issue 25): student AP16 >= the best single teacher's; >= 4x dlib HOG-up1's; detect <= 8 ms per 640 x 480.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import data_root  # noqa: E402
from widerface_ap import SCORE_FLOOR, hog_upsampled_once  # noqa: E402

from facepipe.detection.data import parse_retinaface, split_samples  # noqa: E402
from facepipe.detection.evaluate import evaluate, plot_pr  # noqa: E402
from facepipe.runtime.image import read_image  # noqa: E402
from facepipe.types import Detection  # noqa: E402

MTCNN = "MTCNN (facenet-pytorch's weights, not a teacher of the release)"
FLOORS = {"retinaface": 0.02, "yunet": 0.05, "ultraface": 0.05}  # PR curves start here


def models_root() -> Path:
    return Path(os.environ.get("FACEPIPE_MODELS", REPO.parent / "shared" / "models"))


def detectors(student: Path, threads: int) -> dict:
    import torch

    from facepipe.detection.retinaface import RetinaFaceDetector
    from facepipe.detection.teachers import UltraFace
    from facepipe.runtime.detectors.onnx_detector import OnnxDetector
    from facepipe.runtime.detectors.yunet import YunetDetector

    torch.set_num_threads(threads)
    hog = hog_upsampled_once()
    root = models_root()
    yunet = YunetDetector(root / "face_detection_yunet_2023mar.onnx", threads=threads)
    retina = RetinaFaceDetector(root / "retinaface_mnet025.pth")
    ultra = UltraFace(root / "ultraface_rfb_640.onnx", threads)
    out = {}
    if student.is_file():
        det = OnnxDetector(student, threads=threads)
        out["facepipe detector (student)"] = lambda im: det.detect(im, 0.05)
    out.update({
        "YuNet 2023mar": lambda im: yunet.detect(im, FLOORS["yunet"]),
        "RetinaFace-MobileNet-0.25": lambda im: retina.detect(im, FLOORS["retinaface"]),
        "UltraFace RFB-640": lambda im: ultra.detect(im, FLOORS["ultraface"]),
        "dlib HOG, upsampled once": lambda im: hog(im, SCORE_FLOOR),
    })
    try:  # a teacher facepipe can use but the release did not: it did not improve the fused labels
        from facepipe.detection.mtcnn import MtcnnDetector

        mtcnn = MtcnnDetector(min_size=10)
        out[MTCNN] = lambda im: mtcnn.detect(im, 0.05)
    except FileNotFoundError as exc:
        print(f"MTCNN skipped: {exc}")
    return out


def fused_labels(samples) -> list[list[Detection]]:
    from facepipe.detection.fusion import FusionSettings, label_image
    from facepipe.detection.teachers import DEFAULT_TEACHERS, load_teachers

    teachers = load_teachers(DEFAULT_TEACHERS, models_root())
    settings = FusionSettings(ignore=0.0)
    return [[Detection(f.box, f.score, f.landmarks) for f in label_image(read_image(s.image), teachers, settings)]
            for s in samples]


def letterboxed_640x480(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(640 / w, 480 / h)
    canvas = np.zeros((480, 640, 3), np.uint8)
    resized = cv2.resize(image, (round(w * s), round(h * s)))
    canvas[:resized.shape[0], :resized.shape[1]] = resized
    return canvas


def _drawn(image: np.ndarray, faces: list[Detection], threshold: float, title: str, width: int = 480) -> np.ndarray:
    s = width / image.shape[1]
    out = cv2.resize(image, (width, round(image.shape[0] * s)), interpolation=cv2.INTER_AREA).copy()
    kept = [f for f in faces if f.score >= threshold]
    for f in kept:
        x1, y1, x2, y2 = (int(round(v * s)) for v in f.box)
        cv2.rectangle(out, (x1, y1), (x2, y2), (40, 255, 40), 2)
    cv2.rectangle(out, (0, 0), (width, 22), (0, 0, 0), -1)
    cv2.putText(out, f"{title}: {len(kept)} faces", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                cv2.LINE_AA)
    return out


def contact_sheet(samples, images, dets, path: Path, threshold: float, rows: int = 4) -> None:
    """Rows of (dlib HOG upsampled once | the student) at each one's default threshold (the student's: its
    metadata's): the 3 held-out images with the most faces, then the scenes/ photos."""
    student = next(d for d in dets if d.startswith("facepipe"))
    order = np.argsort([-len(s.boxes) for s in samples])[:3]
    photos = [images[i] for i in order]
    scenes = sorted((data_root() / "scenes").glob("*.jpg"))
    photos += [read_image(p) for p in scenes][: max(0, rows - len(photos))]
    lines = []
    for image in photos:
        left = _drawn(image, dets["dlib HOG, upsampled once"](image), 0.0, "dlib HOG up 1")
        right = _drawn(image, dets[student](image), threshold, "facepipe detector")
        h = max(left.shape[0], right.shape[0])
        pad = lambda x: np.pad(x, ((0, h - x.shape[0]), (0, 0), (0, 0)))  # noqa: E731
        lines.append(np.concatenate([pad(left), np.full((h, 6, 3), 255, np.uint8), pad(right)], 1))
    sheet = np.concatenate([np.pad(x, ((0, 6), (0, 0), (0, 0)), constant_values=255) for x in lines])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", type=Path, default=REPO / "facepipe" / "models" / "facepipe_detector.onnx")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--plot", type=Path, default=None, help="PR curves PNG (e.g. docs/detector_pr.png)")
    parser.add_argument("--no-fused", action="store_true", help="skip the fused teacher labels (slow)")
    parser.add_argument("--sheet", type=Path, default=None, help="contact sheet JPEG: student against dlib HOG on "
                                                                 "the held-out images with most faces, and scenes/")
    args = parser.parse_args()
    root = data_root() / "widerface-dev"
    samples = split_samples(parse_retinaface(root / "label.txt", root), "holdout", 0.3, 0)
    images = [read_image(s.image) for s in samples]
    dets = detectors(args.student, args.threads)
    found = {name: [detect(im) for im in images] for name, detect in dets.items()}
    if not args.no_fused:
        found["fused teacher labels (4 teachers x 4 views)"] = fused_labels(samples)
    reports = {name: evaluate(samples, d, 0.0) for name, d in found.items()}

    frames = [letterboxed_640x480(im) for im in images]
    ms = {name: [] for name in dets}
    for _ in range(args.rounds):
        per = dict.fromkeys(dets, 0.0)
        for frame in frames:
            for name, detect in dets.items():
                t = time.perf_counter()
                detect(frame)
                per[name] += time.perf_counter() - t
        for name in dets:
            ms[name].append(1000 * per[name] / len(frames))

    print(f"widerface-dev held out: {len(samples)} images, {sum(len(s.boxes) for s in samples)} faces; "
          f"{args.threads} threads; load average {os.getloadavg()[0]:.1f}")
    print(f"{'detector':46s} {'AP16':>6s} {'AP all':>7s} {'ms/640x480':>11s}")
    for name, rep in reports.items():
        t = f"{statistics.median(ms[name]):11.1f}" if name in ms else f"{'-':>11s}"
        print(f"{name:46s} {rep.curves['min16'].ap:6.3f} {rep.curves['all'].ap:7.3f} {t}")
    student = "facepipe detector (student)"
    if student in reports:
        teachers = [n for n in dets if n not in (student, "dlib HOG, upsampled once", MTCNN)]
        best = max(teachers, key=lambda n: reports[n].curves["min16"].ap)
        ap = reports[student].curves["min16"].ap
        best_ap = reports[best].curves["min16"].ap
        hog = reports["dlib HOG, upsampled once"].curves["min16"].ap
        print(f"target AP16 >= best teacher ({best}, {best_ap:.3f}): {'met' if ap >= best_ap else 'NOT met'} "
              f"({ap:.3f}, {ap - best_ap:+.3f})")
        print(f"target AP16 >= 4x dlib HOG-up1 ({4 * hog:.3f}): {'met' if ap >= 4 * hog else 'NOT met'} "
              f"({ap / max(hog, 1e-9):.1f}x)")
        t = statistics.median(ms[student])
        print(f"target detect <= 8 ms per 640x480: {'met' if t <= 8 else 'NOT met'} ({t:.1f} ms); "
              f"YuNet {statistics.median(ms['YuNet 2023mar']):.1f} ms in the same run")
    if args.sheet and "facepipe detector (student)" in dets:
        from facepipe.runtime.detectors.onnx_detector import OnnxDetector

        contact_sheet(samples, images, dets, args.sheet, OnnxDetector(args.student).spec.score_threshold)
        print(f"contact sheet -> {args.sheet}")
    if args.plot:
        plot_pr({name: rep.curves["min16"] for name, rep in reports.items()}, args.plot,
                title=f"widerface-dev held out ({len(samples)} images), faces >= 16 px, IoU 0.5")
        print(f"PR curves -> {args.plot}")


if __name__ == "__main__":
    main()
