"""Detector speed: ONNX Runtime latency on CPU at 640x480 and 320x240, against dlib's HOG on the same
images, and training throughput (images/s) on the GPU when torch sees one, else on the CPU.

    python benchmarks/detector_latency.py [--onnx models/<run>/detector.onnx] [--threads 2] [--repeats 50]

Without --onnx, an untrained network of configs/detector/mbv2_dev.yaml's size is exported to a temporary
file (latency does not depend on the weights). The target is <= 15 ms at 320x240 with 2 threads.
Numbers on a shared machine are noisy: the script prints the load average next to them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("FACEPIPE_DATA", REPO.parent / "shared" / "data"))
SIZES = [(640, 480), (320, 240)]
TARGET_MS_320 = 15.0


def _timeit(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def _test_image(width: int, height: int) -> np.ndarray:
    """A real photo with faces, resized to exactly width x height."""
    import cv2

    from facepipe.runtime.image import read_image

    photo = DATA / "scenes" / "couple.jpg"
    if photo.is_file():
        return cv2.resize(read_image(photo), (width, height), interpolation=cv2.INTER_AREA)
    return np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _untrained_onnx(folder: Path) -> Path:
    import torch

    from facepipe.detection.checkpoint import detector_state
    from facepipe.detection.export import export_detector
    from facepipe.detection.model import build_detector
    from facepipe.detection.train import DetectorConfig
    from facepipe.train.checkpoint import save_checkpoint
    from facepipe.train.config import load_config

    cfg = load_config(DetectorConfig, REPO / "configs" / "detector" / "mbv2_dev.yaml")
    torch.manual_seed(0)
    model = build_detector(cfg.arch, **cfg.arch_args())
    save_checkpoint(detector_state(model, cfg.arch, cfg.arch_args(), cfg.spec()), folder / "untrained.pt")
    image = folder / "probe.png"
    import cv2

    cv2.imwrite(str(image), _test_image(320, 240)[..., ::-1])
    export_detector(folder / "untrained.pt", folder / "untrained.onnx", [image])
    return folder / "untrained.onnx"


def latency(onnx_path: Path, threads: int, repeats: int) -> None:
    import dlib

    from facepipe.runtime.detectors.centernet import prepare_input
    from facepipe.runtime.detectors.onnx_detector import OnnxDetector

    det = OnnxDetector(onnx_path, device="cpu", threads=threads)
    hog = dlib.get_frontal_face_detector()
    print(f"ONNX Runtime {det.provider}, {threads} threads, model {onnx_path}; median of {repeats} runs; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'size':>9} {'net ms':>8} {'detect ms':>10} {'dlib HOG ms':>12} {'HOG x2 ms':>10} {'HOG/ours':>9} "
          f"faces(ours/HOG)")
    for w, h in SIZES:
        image = _test_image(w, h)
        x, _ = prepare_input(image, det.spec)
        net_ms = _timeit(lambda: det._forward(x), repeats)
        det_ms = _timeit(lambda: det.detect(image), repeats)
        hog_ms = _timeit(lambda: hog(image, 0), max(5, repeats // 5))
        hog_up_ms = _timeit(lambda: hog(image, 1), max(3, repeats // 10), warmup=1)
        print(f"{w:>4}x{h:<4} {net_ms:8.1f} {det_ms:10.1f} {hog_ms:12.1f} {hog_up_ms:10.1f} {hog_ms / det_ms:9.2f} "
              f"{len(det.detect(image))}/{len(hog(image, 0))}")
        if (w, h) == (320, 240):
            verdict = "meets" if det_ms <= TARGET_MS_320 else "MISSES"
            print(f"target <= {TARGET_MS_320:.0f} ms at 320x240 with {threads} threads: {verdict} ({det_ms:.1f} ms)")
    print("HOG = dlib.get_frontal_face_detector() without upsampling (finds faces >= ~80 px); "
          "HOG x2 = one upsampling pass (>= ~40 px), closer to what the CenterNet model finds")


def train_throughput(steps: int, batch: int, size: int) -> None:
    import torch

    from facepipe.detection.augment import AugmentConfig
    from facepipe.detection.data import DataSpec, DetectionDataset, load_dataset
    from facepipe.detection.losses import LossWeights, detector_loss
    from facepipe.detection.model import build_detector

    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    samples, _ = load_dataset(DataSpec(str(DATA / "widerface-dev" / "label.txt")))
    data = DetectionDataset(samples, size, AugmentConfig())
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, num_workers=min(8, os.cpu_count() or 1),
                                         drop_last=True, pin_memory=cuda, persistent_workers=True)
    model = build_detector("centerface_mbv2", width_mult=0.25, neck_channels=24, head_channels=24).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    done, started, it = 0, None, iter(loader)
    for step in range(steps + 2):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        if step == 2:  # the first steps include start-up
            if cuda:
                torch.cuda.synchronize()
            started = time.perf_counter()
        b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            out = model(b["image"])
        loss = detector_loss(out, b, LossWeights())["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if step >= 2:
            done += batch
    if cuda:
        torch.cuda.synchronize()
    where = (f"GPU ({torch.cuda.get_device_name()}, AMP)" if cuda
             else f"CPU ({torch.get_num_threads()} threads; no GPU here)")
    print(f"training throughput on {where}: {done / (time.perf_counter() - started):.1f} images/s "
          f"(input {size}, batch {batch}, {steps} steps, data loading with augmentation included)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-batch", type=int, default=0, help="default: 64 on GPU, 8 on CPU")
    ap.add_argument("--train-size", type=int, default=0, help="default: 640 on GPU, 320 on CPU")
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        latency(args.onnx or _untrained_onnx(Path(tmp)), args.threads, args.repeats)
    if not args.skip_train:
        import torch

        cuda = torch.cuda.is_available()
        train_throughput(args.train_steps, args.train_batch or (64 if cuda else 8),
                         args.train_size or (640 if cuda else 320))


if __name__ == "__main__":
    main()
