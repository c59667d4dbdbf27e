"""`facepipe train-detector`: the training loop of the CenterNet face detector.

One process or many under torchrun (DDP); AMP on CUDA; a run folder models/<run>/ with config.yaml,
last.pt / best.pt, metrics.jsonl, training.png (loss and AP per epoch) and pr_curve.png. An
interrupted run continues exactly where its last checkpoint left it (resume=auto, the default; model,
optimizer, scheduler, grad scaler, epoch, RNG; augmentation is a pure function of seed/epoch/index).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from facepipe import log
from facepipe.detection.augment import AugmentConfig
from facepipe.detection.checkpoint import FORMAT as CHECKPOINT_FORMAT
from facepipe.detection.checkpoint import detector_state
from facepipe.detection.data import DetectionDataset, load_datasets
from facepipe.detection.losses import LossWeights, detector_loss
from facepipe.detection.model import build_detector
from facepipe.runtime.detectors.centernet import DetectorSpec
from facepipe.train.checkpoint import capture_rng, check_format, load_checkpoint, restore_rng, save_checkpoint
from facepipe.train.config import ConfigError, RunConfig, config_to_dict
from facepipe.train.distributed import DistInfo, cleanup_distributed, setup_distributed
from facepipe.train.progress import make_progress
from facepipe.train.runlog import RunDir, plot_metrics, resume_checkpoint
from facepipe.train.schedule import lr_factor

ARCH_KEYS = ("width_mult", "neck_channels", "head_channels")


@dataclass
class InferenceConfig:
    """Inference settings stored with the model (defaults: the runtime's DetectorSpec)."""

    max_side: int = DetectorSpec.max_side
    enlarge: bool = DetectorSpec.enlarge
    score_threshold: float = DetectorSpec.score_threshold
    nms_iou: float = DetectorSpec.nms_iou


@dataclass
class DetectorConfig(RunConfig):
    """Run keys (name, output_dir, resume, device, amp, workers, threads, seed, progress): train.config.RunConfig.
    Sections augment / loss / inference hold their own defaults (augment.AugmentConfig, losses.LossWeights)."""

    name: str = "detector"  # the run folder is <output_dir>/<name>
    amp: str = "fp16"  # mixed precision on CUDA
    train_data: list[Any] = field(default_factory=list)  # label files, or {labels, images, split, holdout, seed}
    val_data: list[Any] = field(default_factory=list)
    repeat: int = 1  # passes over the training set per epoch (small sets)
    # network
    arch: str = "centerface_mbv2"
    width_mult: float = 0.25
    neck_channels: int = 24
    head_channels: int = 24
    input_size: int = 320
    init_weights: str | None = None  # a pretrained body to start from (centerface_mnet025: retinaface_mnet025.pth)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # optimisation
    epochs: int = 100
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.02
    grad_clip: float = 10.0
    eval_every: int = 1
    save_every: int = 0  # also keep epoch_NNN.pt every N epochs (0: only last.pt and best.pt)

    # the flat keys of older configs
    ALIASES: ClassVar[dict[str, str]] = {
        **RunConfig.ALIASES,
        **{k: f"augment.{k}" for k in ("crop_scales", "crop_prob", "flip", "color_jitter")},
        **{f"{k}_weight": f"loss.{k}" for k in ("hm", "wh", "off", "lm")}, "lm_smooth_beta": "loss.lm_smooth_beta",
        **{k: f"inference.{k}" for k in ("max_side", "score_threshold", "nms_iou")},
    }

    def arch_args(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ARCH_KEYS}

    def spec(self) -> DetectorSpec:
        return DetectorSpec(name=self.arch, max_side=self.inference.max_side, enlarge=self.inference.enlarge,
                            score_threshold=self.inference.score_threshold, nms_iou=self.inference.nms_iou)


class RepeatDataset:
    """The dataset `times` times over; index i and i + n are different augmentations of the same image.

    Keys are (epoch, index) pairs from EpochKeys: the epoch travels with each index, so persistent
    DataLoader workers (which keep their own copy of the dataset) augment for the right epoch."""

    def __init__(self, dataset: DetectionDataset, times: int):
        self.dataset, self.times = dataset, max(1, times)

    def __len__(self) -> int:
        return len(self.dataset) * self.times

    def __getitem__(self, key):
        epoch, i = key if isinstance(key, tuple) else (self.dataset.epoch, key)
        return self.dataset.getitem(i % len(self.dataset), i, epoch)


class EpochKeys(torch.utils.data.Sampler):
    """A DistributedSampler's indices as (epoch, index) keys."""

    def __init__(self, sampler: torch.utils.data.DistributedSampler):
        self.sampler, self.epoch = sampler, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return ((self.epoch, i) for i in self.sampler)


def validate(model: torch.nn.Module, samples, spec: DetectorSpec, device: torch.device) -> tuple[dict[str, Any], Any]:
    from facepipe.detection.evaluate import evaluate, run_detector
    from facepipe.detection.torch_detector import TorchDetector

    det = TorchDetector.from_model(model, spec, device)
    report = evaluate(samples, run_detector(det.detect, samples, threshold=0.05), spec.score_threshold)
    model.train()
    return {"ap_all": report.curves["all"].ap, "ap_min16": report.curves["min16"].ap, "nme": report.nme}, report


def train_step(net: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer, scaler, weights: LossWeights,
               grad_clip: float, amp_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """One optimizer step on a batch already on the device; returns the detached loss parts as device tensors
    (reading them is a host sync, which the loop does once per epoch)."""
    with torch.autocast(device_type=batch["image"].device.type, dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None):
        outputs = net(batch["image"])
    parts = detector_loss(outputs, batch, weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(parts["loss"]).backward()
    scaler.unscale_(optimizer)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return {k: v.detach() for k, v in parts.items()}


def _check_resume(ckpt: dict[str, Any], config: DetectorConfig, path: Path) -> None:
    if ckpt.get("kind") != "detector":
        raise ConfigError(f"{path}: not a detector checkpoint, cannot resume from it")
    check_format(ckpt, path, "detector", CHECKPOINT_FORMAT)
    if ckpt.get("arch") != config.arch or ckpt.get("arch_args") != config.arch_args():
        raise ConfigError(f"{path} was trained as {ckpt.get('arch')} {ckpt.get('arch_args')}, the config asks for "
                          f"{config.arch} {config.arch_args()}: resume with the same network settings")


def train(config: DetectorConfig, on_epoch_end: Callable[[int, dict], None] | None = None) -> Path:
    """Train (or resume) a detector; returns the run folder."""
    dist = setup_distributed(config.device)
    try:
        return _train(config, dist, on_epoch_end)
    finally:
        cleanup_distributed()


def _train(config: DetectorConfig, dist: DistInfo, on_epoch_end) -> Path:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    if not config.train_data:
        raise ConfigError("train_data is empty: give at least one annotation file")
    run_path = config.run_dir
    last_path = run_path / "last.pt"
    resume_from = resume_checkpoint(run_path, config.resume)
    run = RunDir(run_path) if dist.is_main else None

    train_samples, summary = load_datasets(config.train_data, "train_data")
    val_samples, val_summary = load_datasets(config.val_data, "val_data") if config.val_data else ([], None)
    if dist.is_main:
        summary.report()
        log.info(f"training data: {summary.line()}; {len(train_samples)} samples per pass with repeats")
        if val_summary:
            val_summary.report()
            log.info(f"validation data: {val_summary.line()}")
    if not train_samples:
        raise ConfigError("no usable training images (see the warnings above)")

    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    spec = config.spec()
    model = build_detector(config.arch, **config.arch_args())
    if config.init_weights and resume_from is None:
        if not hasattr(model, "load_backbone"):
            raise ConfigError(f"init_weights: {config.arch} has no pretrained body to load")
        if not Path(config.init_weights).is_file():
            raise ConfigError(f"init_weights: {config.init_weights} not found")
        copied = model.load_backbone(config.init_weights)
        if dist.is_main:
            log.info(f"backbone: {copied} tensors from {config.init_weights}")
    model = model.to(dist.device)
    amp_dtype = config.amp_dtype(dist.device.type)
    channels_last = dist.device.type == "cuda"
    if channels_last:
        torch.backends.cudnn.benchmark = True  # fixed input size: cuDNN picks the fastest kernels once
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    dataset = DetectionDataset(train_samples, config.input_size, config.augment, spec.stride, config.seed,
                               spec.mean, spec.std)
    data = RepeatDataset(dataset, config.repeat)
    sampler = EpochKeys(torch.utils.data.DistributedSampler(data, num_replicas=dist.world_size, rank=dist.rank,
                                                            shuffle=True, seed=config.seed, drop_last=False))
    per_rank = math.ceil(len(data) / dist.world_size)
    drop_last = per_rank > config.batch_size
    steps_per_epoch = per_rank // config.batch_size if drop_last else 1
    total_steps = steps_per_epoch * config.epochs
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, "cosine", config.min_lr_ratio))
    scaler = torch.amp.GradScaler(dist.device.type, enabled=amp_dtype == torch.float16)

    start_epoch, best_ap = 0, -1.0
    if resume_from is not None:
        ckpt = load_checkpoint(resume_from, map_location="cpu")
        _check_resume(ckpt, config, resume_from)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_epoch, best_ap = int(ckpt["epoch"]), float(ckpt.get("best_ap", -1.0))
        restore_rng(ckpt["rng"])
        if run:
            run.truncate_metrics_after("epoch", start_epoch)
            log.info(f"resuming {run_path} from {resume_from.name} after epoch {start_epoch}")
    if run:
        run.save_config(config)

    net: torch.nn.Module = model
    if dist.distributed:
        if dist.device.type == "cuda":
            net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    loader = torch.utils.data.DataLoader(
        data, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, drop_last=drop_last,
        pin_memory=dist.device.type == "cuda", persistent_workers=config.workers > 0)
    weights = config.loss

    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        net.train()
        sums = torch.zeros(7, dtype=torch.float64, device=dist.device)  # loss hm wh off lm, batches, images
        started = time.perf_counter()
        with make_progress("img", disable=not (dist.is_main and config.progress)) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{config.epochs}",
                                total=steps_per_epoch * config.batch_size if drop_last else per_rank, status="")
            for batch in loader:
                batch = {k: v.to(dist.device, non_blocking=True) for k, v in batch.items()}
                if channels_last:
                    batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
                parts = train_step(net, batch, optimizer, scaler, weights, config.grad_clip, amp_dtype)
                scheduler.step()
                sums[:5] += torch.stack([parts[k] for k in ("loss", "hm", "wh", "off", "lm")]).double()
                sums[5] += 1
                sums[6] += len(batch["image"])
                bar.update(task, advance=len(batch["image"]))
        elapsed = time.perf_counter() - started
        if dist.distributed:
            torch.distributed.all_reduce(sums)
        sums = sums.cpu()
        n = max(1.0, float(sums[5]))
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                                  **{k: float(sums[i]) / n for i, k in enumerate(("loss", "hm", "wh", "off", "lm"))},
                                  "images_per_s": float(sums[6]) / max(elapsed, 1e-9),
                                  "epoch_s": elapsed}
        if dist.is_main:
            last_epoch = epoch + 1 == config.epochs
            if val_samples and ((epoch + 1) % config.eval_every == 0 or last_epoch):
                metrics, report = validate(model, val_samples, spec, dist.device)
                record.update(metrics)
                from facepipe.detection.evaluate import plot_pr

                plot_pr({f"{k} (epoch {epoch + 1})": c for k, c in report.curves.items()}, run.path / "pr_curve.png")
                if metrics["ap_all"] > best_ap:
                    best_ap = metrics["ap_all"]
                    save_checkpoint(_state(model, config, spec, optimizer, scheduler, scaler, epoch + 1, best_ap),
                                    run.path / "best.pt")
            run.log(record)
            state = _state(model, config, spec, optimizer, scheduler, scaler, epoch + 1, best_ap)
            save_checkpoint(state, last_path)
            if config.save_every and (epoch + 1) % config.save_every == 0:
                save_checkpoint(state, run.path / f"epoch_{epoch + 1:03d}.pt")
            plot_metrics(run.read_metrics(), "epoch", [["loss", "hm", "wh", "off", "lm"], ["ap_all", "ap_min16"]],
                         run.path / "training.png", title=f"{config.name}: loss and validation AP")
            log.info(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                              if v is not None))
        if dist.distributed:
            torch.distributed.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, record)
    if dist.is_main and not val_samples:
        # without validation data, best.pt is the last model
        save_checkpoint(load_checkpoint(last_path), run_path / "best.pt")
    return run_path


def _state(model, config, spec, optimizer, scheduler, scaler, epoch: int, best_ap: float) -> dict[str, Any]:
    return detector_state(model, config.arch, config.arch_args(), spec, optimizer=optimizer.state_dict(),
                          scheduler=scheduler.state_dict(), scaler=scaler.state_dict(), epoch=epoch,
                          best_ap=best_ap, rng=capture_rng(), config=config_to_dict(config))
