"""Recognizer benchmarks: training throughput, Partial FC head memory at 1M identities, ONNX embedding latency.

    python benchmarks/recognizer_bench.py                 # everything (CPU: a short mbf throughput run)
    python benchmarks/recognizer_bench.py --only latency  # train | memory | latency

1. Training samples/s (backbone + Partial FC + SGD step, synthetic 112x112 batches, no data loading): mbf and r50
   in fp16 on a GPU when there is one, against arcface_torch's published per-GPU figures (V100: ~1,520 samples/s
   mbf, ~690 r50). Without a GPU it says so and measures mbf in fp32 on the CPU.
2. Head memory per rank at 1,000,000 identities, sample_rate 1.0 and 0.1: computed (fp32 centres, their
   gradient, SGD momentum; B x C_sampled logits and the temporaries the forward/backward keeps), and measured:
   peak RSS of a child process running one step of that shard on the CPU, or torch.cuda.max_memory_allocated.
3. Embedding latency per face through ONNX Runtime on the CPU: MobileFaceNet (paper) and mbf, batch 16,
   2 threads (target <= 12 ms per face for MobileFaceNet), plus MobileFaceNet on 1 thread, whose CPU time per
   face is the figure other processes on a shared machine distort least.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from facepipe.recognition.backbones import build_backbone, count_parameters  # noqa: E402
from facepipe.recognition.margins import CombinedMargin  # noqa: E402
from facepipe.recognition.partial_fc import PartialFC  # noqa: E402

PUBLISHED_V100 = {"mbf": 1520.0, "r50": 690.0}  # arcface_torch README, samples/s per V100
MiB = 1024**2


def train_throughput(backbone: str, batch: int, steps: int, device: str, amp: str, classes: int = 93431) -> dict:
    dev = torch.device(device)
    model = build_backbone(backbone).to(dev).train()
    head = PartialFC(512, classes, CombinedMargin(64, 1.0, 0.5, 0.0)).to(dev)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == "fp16")
    x = torch.randn(batch, 3, 112, 112, device=dev)
    y = torch.randint(0, classes, (batch,), device=dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

    def step():
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            e = model(x)
        loss = head(e.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *head.parameters()], 5.0)
        scaler.step(opt)
        scaler.update()

    for _ in range(2):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {"backbone": backbone, "device": device, "amp": amp, "batch": batch, "steps": steps,
            "head_classes": classes, "samples_per_s": batch * steps / dt}


def head_memory_computed(num_classes: int, world_size: int, batch_per_rank: int, sample_rate: float,
                         emb: int = 512) -> dict:
    local = -(-num_classes // world_size)
    sampled = max(1, int(round(sample_rate * local)))
    centres = local * emb * 4
    logits = world_size * batch_per_rank * sampled * 4
    # forward: the sampled centres (a copy only when sampling) and their normalised copy, C_s x D each; cos, clamped
    # cos, margin logits, scaled logits, exp(logits - max), B x C_s each, of which about 5 are alive at the peak
    # (measured on the CPU: within ~15 % of this); backward: a C_s x D gradient
    sampled_bytes = sampled * emb * 4
    temporaries = sampled_bytes * (2 if sample_rate < 1 else 1) + sampled_bytes + 5 * logits
    total = 3 * centres + temporaries  # weights + dense gradient + SGD momentum
    return {"world_size": world_size, "classes_per_rank": local, "sampled_per_rank": sampled,
            "global_batch": world_size * batch_per_rank,
            "centres_MiB": centres / MiB, "grad_MiB": centres / MiB, "momentum_MiB": centres / MiB,
            "logits_MiB": logits / MiB, "temporaries_MiB": temporaries / MiB, "total_MiB": total / MiB}


_MEASURE = r"""
import sys, torch
sys.path.insert(0, {repo!r})
from facepipe.recognition.partial_fc import PartialFC
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])  # KiB
torch.set_num_threads(2)
local, batch, rate, emb = {local}, {batch}, {rate}, 512
dev = torch.device({device!r})
x = torch.randn(batch, emb, device=dev, requires_grad=True)
y = torch.randint(0, local, (batch,), device=dev)
base = status("VmRSS")
head = PartialFC(emb, local, sample_rate=rate).to(dev)
opt = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9)
if dev.type == "cuda":
    torch.cuda.reset_peak_memory_stats(); start = torch.cuda.memory_allocated()
for _ in range(2):
    loss = head(x, y); opt.zero_grad(); loss.backward(); opt.step()
if dev.type == "cuda":
    print((torch.cuda.max_memory_allocated() - start) / 2**20)
else:
    print((status("VmHWM") - base) / 1024)
"""


def head_memory_measured(local_classes: int, global_batch: int, sample_rate: float, device: str) -> float:
    """Peak memory (MiB) of one rank's head doing two training steps, in a fresh process (CPU: peak RSS
    above the RSS before the head existed; CUDA: torch.cuda.max_memory_allocated)."""
    code = _MEASURE.format(repo=str(Path(__file__).resolve().parents[1]), local=local_classes, batch=global_batch,
                           rate=sample_rate, device=device)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def onnx_latency(backbone: str, batch: int = 16, threads: int = 2, onnx_path: str | None = None) -> dict:
    """Latency of a fresh export of `backbone` (random weights), or of an existing recognizer ONNX file."""
    import warnings

    model = build_backbone(backbone).eval()
    if onnx_path:
        return {"backbone": backbone, "file": onnx_path, "params_M": None, **time_session(onnx_path, batch, threads)}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{backbone}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (torch.zeros(2, 3, 112, 112),), str(path), dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["embedding"],
                              dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
        return {"backbone": backbone, "params_M": count_parameters(model) / 1e6, **time_session(str(path), batch,
                                                                                                threads)}


def time_session(path: str, batch: int, threads: int, rounds: int = 6, runs: int = 10) -> dict:
    """Wall time per face: median of all runs, and the median of the least-disturbed round (other processes on a
    shared machine come and go); CPU time per face (all threads)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, 3, 112, 112)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {name: x})
    wall, cpu = [], 0.0
    for _ in range(rounds):
        times = []
        for _ in range(runs):
            t, c = time.perf_counter(), time.process_time()
            sess.run(None, {name: x})
            times.append(time.perf_counter() - t)
            cpu += time.process_time() - c
        wall.append(times)
    per_face = np.array(wall) / batch * 1000  # rounds x runs
    return {"batch": batch, "threads": threads,
            "ms_per_face_median": float(np.median(per_face)),
            "ms_per_face_best_round": float(np.median(per_face, axis=1).min()),
            "cpu_ms_per_face": cpu * 1000 / (rounds * runs * batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["train", "memory", "latency"], action="append")
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-steps", type=int, default=30)
    parser.add_argument("--no-measure", action="store_true", help="memory: computed figures only")
    parser.add_argument("--json", default="", help="also write the results here")
    parser.add_argument("--onnx", default="", help="latency: also time this exported MobileFaceNet recognizer")
    args = parser.parse_args()
    parts = set(args.only or ["train", "memory", "latency"])
    cuda = torch.cuda.is_available()
    results: dict = {"device": torch.cuda.get_device_name(0) if cuda else "CPU only (no GPU)",
                     "cpu_count": os.cpu_count(), "torch": torch.__version__}
    print(f"device: {results['device']}, torch {torch.__version__}, {os.cpu_count()} CPU cores")

    def load() -> str:  # other processes on the machine distort every CPU timing: say how busy it was
        one = os.getloadavg()[0]
        results.setdefault("load_average", []).append(round(one, 2))
        return f"(1-min load average {one:.2f} on {os.cpu_count()} cores)"

    if "train" in parts:
        rows = []
        if cuda:
            for name, batch in (("mbf", 128), ("r50", 128)):
                r = train_throughput(name, batch, args.gpu_steps, "cuda", "fp16")
                r["published_v100"] = PUBLISHED_V100[name]
                r["ratio_to_v100"] = r["samples_per_s"] / PUBLISHED_V100[name]
                rows.append(r)
        else:
            print("no GPU: the fp16 GPU comparison with arcface_torch cannot run here; measuring mbf on the CPU")
            torch.set_num_threads(os.cpu_count() or 1)
            rows.append(train_throughput("mbf", 32, args.cpu_steps, "cpu", "none", classes=10000))
        results["train"] = rows
        print(f"\ntraining throughput (synthetic 112x112 batches, backbone + Partial FC + SGD) {load()}:")
        for r in rows:
            ref = (f", {r['ratio_to_v100']:.2f}x arcface_torch's V100 figure ({r['published_v100']:.0f})"
                   if "ratio_to_v100" in r else "")
            print(f"  {r['backbone']:4s} {r['device']} {r['amp']:4s} batch {r['batch']}: {r['samples_per_s']:8.1f} "
                  f"samples/s{ref}")

    if "memory" in parts:
        rows = []
        for world in (1, 8):
            for rate in (1.0, 0.1):
                c = head_memory_computed(1_000_000, world, 128, rate)
                c["sample_rate"] = rate
                if not args.no_measure and world == 8:
                    c["measured_MiB"] = head_memory_measured(c["classes_per_rank"], c["global_batch"], rate,
                                                             "cuda" if cuda else "cpu")
                rows.append(c)
        results["memory"] = rows
        print("\nPartial FC head memory per rank, 1,000,000 identities, embedding 512, fp32, batch 128 per rank:")
        print(f"  {'ranks':>5s} {'rate':>5s} {'classes/rank':>12s} {'centres':>9s} {'+grad+mom':>10s} {'logits':>8s} "
              f"{'total':>9s} {'measured':>9s}")
        for c in rows:
            meas = f"{c['measured_MiB']:8.0f}M" if "measured_MiB" in c else "        -"
            print(f"  {c['world_size']:5d} {c['sample_rate']:5.1f} {c['classes_per_rank']:12,d} "
                  f"{c['centres_MiB']:8.0f}M "
                  f"{3 * c['centres_MiB']:9.0f}M {c['logits_MiB']:7.0f}M {c['total_MiB']:8.0f}M {meas}")

    if "latency" in parts:
        rows = [onnx_latency("mobilefacenet", threads=2), onnx_latency("mobilefacenet", threads=1),
                onnx_latency("mbf", threads=2)]
        if args.onnx:  # a trained MobileFaceNet export, e.g. models/mbf_celeba/recognizer.onnx
            rows.insert(0, onnx_latency("mobilefacenet", threads=2, onnx_path=args.onnx))
        results["latency"] = rows
        print(f"\nembedding latency, ONNX Runtime CPU, batch 16, 2 threads (target <= 12 ms/face for MobileFaceNet) "
              f"{load()}:")
        for r in rows:
            verdict = ""
            if r["backbone"] == "mobilefacenet" and r["threads"] == 2:
                verdict = f"-> {'meets' if r['ms_per_face_best_round'] <= 12 else 'misses'} the 12 ms target"
            label = f"{r['backbone']} ({Path(r['file']).name})" if "file" in r else r["backbone"]
            params = f"{r['params_M']:.2f}M params" if r["params_M"] else "trained"
            print(f"  {label:13s} ({params}) {r['threads']} thread(s): "
                  f"{r['ms_per_face_median']:6.2f} ms/face median, "
                  f"{r['ms_per_face_best_round']:6.2f} least-disturbed round, CPU time {r['cpu_ms_per_face']:6.2f} "
                  f"ms/face "
                  f"{verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
