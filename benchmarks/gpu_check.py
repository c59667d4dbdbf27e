"""One command for the GPU: training throughput, memory, detector speed, identify on CUDA, export parity.

    python benchmarks/gpu_check.py                       # on one GPU, <= 8 minutes (--budget-s)
    python benchmarks/gpu_check.py --device cpu --quick  # the same code on the CPU at toy sizes (< 2 minutes)

Prints one JSON line per figure and nothing else on stdout (progress goes to stderr):
  env        the GPU, torch and CUDA versions
  train      samples/s of facepipe's recognizer trainer (Trainer.train_step: device normalisation, autocast,
             fp32 embedding layers, Partial FC, SGD, clipping) for mbf (batch 512) and r50 (batch 256) at 112x112,
             bf16 and fp16, Partial FC with 100,000 classes at sample_rate 1.0 and 0.1, on batches held in GPU memory
             ("data": "memory") and through the real DataLoader from a small synthetic RecordIO ("data": "recordio");
             with peak GPU memory and the ratio to arcface_torch's published per-GPU figures (its README's speed
             table, V100 32 GB, fp16, batch 128 per GPU: mbf ~1,520 samples/s, r50 ~690 samples/s)
  detector   the CenterNet detector's training images/s at 640x640 (facepipe.detection.train.train_step, fp16)
  identify   faces/s of the recognizer stage of `identify` with a .pt recognizer (facepipe.runtime.loader) on the device
  export     ONNX export of that checkpoint, and ONNX Runtime (CPU) against the PyTorch model on the device
Each figure runs in its own try block: a failure prints {"figure", "error"} and the exit status is 1.
Needs only torch, numpy, opencv-python-headless, onnx, onnxruntime, typer, rich, pyyaml (no dlib, faiss,
Pillow or matplotlib): the run folders are temporary and nothing is plotted.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# arcface_torch README, "Speed benchmark": samples/s per V100 (fp16, Partial FC); our targets are ~3x on an H100/H200
ARCFACE_TORCH_PER_GPU = {"mbf": 1520.0, "r50": 690.0}
REFERENCE = "arcface_torch README speed table, per V100 GPU (fp16)"
MiB = 1024 ** 2


class Budget:
    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated() / MiB, 1) if device.type == "cuda" else None


def recognizer_config(out: Path, device: str, backbone: str, batch: int, amp: str, size: int, **kw):
    from facepipe.recognition.config import RecognizerConfig

    base = dict(name=f"{backbone}_{amp}", output_dir=str(out), device=device, backbone=backbone, embedding_size=512,
                input_size=[size, size], batch_size=batch, amp=amp, lr=0.1, grad_clip=5.0, max_steps=10 ** 6,
                resume="never", progress=False, flip=True, log_every=10 ** 6)
    base.update(kw)
    return RecognizerConfig(**base)


def timed_steps(trainer, next_batches, warmup: int, steps: int) -> float:
    """Seconds for `steps` optimizer steps after `warmup` (cuDNN autotuning, allocator growth)."""
    for _ in range(warmup):
        trainer.train_step(next_batches())
    sync(trainer.device)
    start = time.perf_counter()
    for _ in range(steps):
        loss, _ = trainer.train_step(next_batches())
    sync(trainer.device)
    if not torch.isfinite(loss):
        raise RuntimeError(f"loss is {float(loss)} after {warmup + steps} steps")
    return time.perf_counter() - start


def train_memory(out: Path, args, backbone: str, batch: int, amp: str, sample_rate: float) -> dict:
    from facepipe.recognition.train import Trainer

    cfg = recognizer_config(out, args.device, backbone, batch, amp, args.size, data_format="synthetic",
                            synthetic_classes=args.classes, synthetic_samples=batch, sample_rate=sample_rate,
                            workers=0)
    reset_peak(torch.device("cuda") if args.device == "cuda" else torch.device("cpu"))
    trainer = Trainer(cfg)
    g = torch.Generator(device=trainer.device).manual_seed(0)
    x = torch.randint(0, 256, (batch, 3, args.size, args.size), dtype=torch.uint8, device=trainer.device, generator=g)
    y = torch.randint(0, args.classes, (batch,), device=trainer.device, generator=g)
    seconds = timed_steps(trainer, lambda: [(x, y)], args.warmup, args.steps)
    return figure_train(trainer, backbone, batch, amp, sample_rate, "memory", args.classes, seconds, args.steps)


def write_recordio(prefix: Path, count: int, classes: int, size: int) -> None:
    """Smooth random faces-sized JPEGs (decode cost like real chips, unlike noise), identities written together."""
    import cv2

    from facepipe.train.recordio import RecordIOWriter

    rng = np.random.default_rng(0)
    with RecordIOWriter(prefix, quality=90) as writer:
        for i in range(count):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            writer.write(cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC), i * classes // count)


def train_recordio(out: Path, args, backbone: str, batch: int, amp: str) -> dict:
    from facepipe.recognition.train import Trainer

    count = batch * (args.warmup + args.steps + 1)
    prefix = out / "rec" / "train"
    if not prefix.with_suffix(".rec").is_file():
        write_recordio(prefix, count, max(2, count // 8), args.size)
    workers = args.workers if args.workers is not None else min(8, os.cpu_count() or 1)
    cfg = recognizer_config(out, args.device, backbone, batch, amp, args.size, data=str(prefix), workers=workers,
                            sample_rate=1.0)
    device = torch.device("cuda") if args.device == "cuda" else torch.device("cpu")
    reset_peak(device)
    trainer = Trainer(cfg)
    batches = trainer.batches(0, 0)
    seconds = timed_steps(trainer, lambda: [next(batches)], args.warmup, args.steps)
    record = figure_train(trainer, backbone, batch, amp, 1.0, "recordio", trainer.data.num_classes, seconds, args.steps)
    record["workers"] = workers
    trainer.loader = None  # stop the persistent workers
    return record


def figure_train(trainer, backbone, batch, amp, sample_rate, data, classes, seconds, steps) -> dict:
    rate = batch * steps / seconds
    record = {"figure": "train", "backbone": backbone, "batch": batch, "input": list(trainer.cfg.input_size),
              "amp": amp, "classes": classes, "sample_rate": sample_rate, "data": data, "steps": steps,
              "samples_per_s": round(rate, 1), "peak_gpu_mib": peak_mib(trainer.device)}
    if backbone in ARCFACE_TORCH_PER_GPU:
        record["ratio_to_arcface_torch"] = round(rate / ARCFACE_TORCH_PER_GPU[backbone], 3)
        record["reference"] = f"{REFERENCE}: {ARCFACE_TORCH_PER_GPU[backbone]:.0f} samples/s"
    return record


def detector_speed(args) -> dict:
    from facepipe.detection.losses import LossWeights
    from facepipe.detection.model import build_detector
    from facepipe.detection.targets import encode_targets
    from facepipe.detection.train import train_step

    device = torch.device("cuda") if args.device == "cuda" else torch.device("cpu")
    reset_peak(device)
    size, batch = args.detector_size, args.detector_batch
    rng = np.random.default_rng(0)
    items = []
    for _ in range(batch):  # a few faces per image, targets built by the real encoder
        n = int(rng.integers(1, 6))
        xy = rng.uniform(0, size * 0.8, (n, 2))
        wh = rng.uniform(12, size * 0.2, (n, 2))
        items.append(encode_targets(np.concatenate([xy, xy + wh], 1), None, None, (size // 4, size // 4)))
    batch_maps = {k: torch.from_numpy(np.stack([t[k] for t in items])).to(device) for k in items[0]}
    batch_maps["image"] = torch.randn(batch, 3, size, size, device=device)
    model = build_detector("centerface_mbv2", width_mult=0.25, neck_channels=24, head_channels=24).to(device).train()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
        batch_maps["image"] = batch_maps["image"].contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    amp_dtype = torch.float16 if device.type == "cuda" else None
    step = lambda: train_step(model, batch_maps, optimizer, scaler, LossWeights(), 10.0, amp_dtype)  # noqa: E731
    for _ in range(args.warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        parts = step()
    sync(device)
    rate = batch * args.steps / (time.perf_counter() - start)
    if not torch.isfinite(parts["loss"]):
        raise RuntimeError("detector loss is not finite")
    return {"figure": "detector", "input": [size, size], "batch": batch, "amp": "fp16" if amp_dtype else "none",
            "data": "memory (model step only)", "images_per_s": round(rate, 1), "peak_gpu_mib": peak_mib(device)}


def make_checkpoint(out: Path, args) -> Path:
    """A real recognizer checkpoint from two training steps of the trainer (what `identify --recognizer` loads)."""
    from facepipe.recognition.train import Trainer

    cfg = recognizer_config(out, args.device, "mbf", 8, "none", args.size, name="identify", data_format="synthetic",
                            synthetic_classes=100, synthetic_samples=8, workers=0)
    trainer = Trainer(cfg)
    for _ in range(2):
        trainer.train_step([next(trainer.batches(0, 0))])
    trainer.step = 2
    return trainer.save()


def chips_for(size: int, count: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def identify_speed(checkpoint: Path, args) -> dict:
    from facepipe.runtime.loader import load_recognizer

    recognizer = load_recognizer(checkpoint, device=args.device)
    recognizer.batch_size = args.identify_batch
    chips = chips_for(args.size, args.identify_faces)
    recognizer.embed(chips[:args.identify_batch])  # warm-up
    start = time.perf_counter()
    emb = recognizer.embed(chips)
    seconds = time.perf_counter() - start
    assert emb.shape == (len(chips), 512) and np.isfinite(emb).all()
    return {"figure": "identify", "stage": "recognizer embed (aligned chips -> unit vectors, incl. preprocessing "
            "and the copy back)", "model": ".pt via facepipe.runtime.loader", "provider": recognizer.provider,
            "faces": len(chips), "batch": args.identify_batch, "faces_per_s": round(len(chips) / seconds, 1)}


def export_parity(checkpoint: Path, args) -> dict:
    from facepipe.recognition.export import export_recognizer
    from facepipe.runtime.loader import load_recognizer

    chips = chips_for(args.size, 16)
    report = export_recognizer(checkpoint, checkpoint.with_name("recognizer.onnx"), chips)
    on_device = load_recognizer(checkpoint, device=args.device).embed(chips)
    onnx_cpu = load_recognizer(report.path, device="cpu").embed(chips)
    cos = (on_device * onnx_cpu).sum(1)
    return {"figure": "export", "torch_device": args.device, "onnx_provider": "CPUExecutionProvider",
            "chips": len(chips), "min_cosine": round(float(cos.min()), 6),
            "max_abs_diff": float(np.abs(on_device - onnx_cpu).max()),
            "cpu_parity_min_cosine": report.parity["min_cosine"], "ok": bool(cos.min() >= 0.999)}


def run(args) -> int:
    budget = Budget(args.budget_s)
    failures = 0
    env = {"figure": "env", "device": args.device, "torch": torch.__version__, "cuda": torch.version.cuda,
           "quick": args.quick}
    if args.device == "cuda":
        if not torch.cuda.is_available():
            emit({**env, "error": "--device cuda but torch sees no GPU"})
            return 1
        env["gpu"] = torch.cuda.get_device_name()
    emit(env)

    def attempt(name: str, fn, *a, min_s: float = 0.0):
        nonlocal failures
        if budget.left() < min_s:
            emit({"figure": name, "skipped": f"time budget ({args.budget_s:.0f} s) spent"})
            return None
        note(f"[gpu_check] {name} {' '.join(str(v) for v in a[2:])} ({budget.left():.0f} s left)")
        try:
            record = fn(*a)
        except Exception as exc:  # one broken figure must not cost the others their (scarce) GPU time
            failures += 1
            traceback.print_exc(file=sys.stderr)
            emit({"figure": name, "args": [str(v) for v in a[2:]], "error": f"{type(exc).__name__}: {exc}"[:500]})
            return None
        finally:
            gc.collect()
            if args.device == "cuda":
                torch.cuda.empty_cache()
        emit(record)
        return record

    with tempfile.TemporaryDirectory(prefix="facepipe_gpu_check_") as tmp:
        out = Path(tmp)
        for backbone, batch, amp, rate in args.memory_plan:
            attempt("train", train_memory, out, args, backbone, batch, amp, rate, min_s=30)
        for backbone, batch, amp in args.recordio_plan:
            attempt("train", train_recordio, out, args, backbone, batch, amp, min_s=30)
        attempt("detector", detector_speed, args, min_s=20)
        checkpoint = None
        try:
            checkpoint = make_checkpoint(out, args)
        except Exception as exc:
            failures += 1
            traceback.print_exc(file=sys.stderr)
            emit({"figure": "checkpoint", "error": f"{type(exc).__name__}: {exc}"[:500]})
        if checkpoint is not None:
            attempt("identify", identify_speed, checkpoint, args, min_s=10)
            record = attempt("export", export_parity, checkpoint, args, min_s=20)
            if record is not None and not record["ok"]:
                failures += 1
    return 1 if failures else 0


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (a dry run of the same code, for the CPU)")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip the remaining figures after this long (default 450; 110 with --quick)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers for the RecordIO figures")
    args = ap.parse_args(argv)
    if args.quick:
        # the same functions at toy sizes, fp32, fewer combinations: autocast on a CPU without bf16/fp16 units
        # is emulated and ~10x slower than fp32 (the fp16/bf16 paths differ by a dtype and the GradScaler only)
        args.size, args.classes, args.warmup, args.steps = 16, 100, 0, 1
        args.memory_plan = [("mbf", 4, "none", 1.0), ("mbf", 4, "none", 0.1), ("r50", 2, "none", 1.0)]
        args.recordio_plan = [("mbf", 4, "none")]
        args.detector_size, args.detector_batch = 64, 2
        args.identify_faces, args.identify_batch = 8, 4
        args.workers = 1 if args.workers is None else args.workers
        args.budget_s = 110.0 if args.budget_s is None else args.budget_s
    else:
        args.size, args.classes, args.warmup, args.steps = 112, 100_000, 5, 20
        args.memory_plan = [(backbone, batch, amp, rate) for backbone, batch in (("mbf", 512), ("r50", 256))
                            for amp in ("bf16", "fp16") for rate in (1.0, 0.1)]
        args.recordio_plan = [("mbf", 512, "bf16"), ("r50", 256, "bf16")]
        args.detector_size, args.detector_batch = 640, 32
        args.identify_faces, args.identify_batch = 4096, 256
        args.budget_s = 450.0 if args.budget_s is None else args.budget_s
    return args


if __name__ == "__main__":
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 16)))
    sys.exit(run(parse()))
