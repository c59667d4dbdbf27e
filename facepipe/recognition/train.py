"""`facepipe train-recognizer`: the training loop that wires backbone, Partial FC / triplet loss, data and verification.

Runs as one process (CPU or one GPU) or under torchrun (DDP on the backbone, class centres sharded by
Partial FC; NCCL on CUDA, gloo on CPU). Everything lands in <output_dir>/<name>/: config.yaml,
step_*.pt + last.pt checkpoints, metrics.jsonl, loss.png / accuracy.png, roc_<set>.png.
Resuming restores model, head shards, optimizer, AMP scaler, step and RNG states; the data order is a
function of (seed, epoch), so an interrupted run continues exactly as if it had not stopped.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from facepipe import log
from facepipe.errors import ModelError
from facepipe.recognition import checkpoint as ckpt
from facepipe.recognition.backbones import BACKBONES, build_backbone
from facepipe.recognition.config import RecognizerConfig
from facepipe.recognition.data import (
    DataError,
    FaceDataset,
    FaceTransform,
    SyntheticDataset,
    contiguous_labels,
    normalize_batch,
    open_source,
    split_indices,
)
from facepipe.recognition.losses import TripletLoss
from facepipe.recognition.margins import CombinedMargin
from facepipe.recognition.partial_fc import PartialFC
from facepipe.recognition.sampler import EpochBatchSampler, IdentityBalancedBatchSampler
from facepipe.recognition.teacher import TeacherTargets
from facepipe.recognition.verification import (
    PairSet,
    VerificationSetError,
    evaluate_pair_set,
    load_pair_set,
    make_pairs,
    plot_roc,
)
from facepipe.runtime.align import ARCFACE_TEMPLATE, DLIB_TEMPLATE
from facepipe.runtime.preprocess import l2_normalize, to_network_input
from facepipe.train.checkpoint import capture_rng, restore_rng, save_checkpoint
from facepipe.train.config import ConfigError
from facepipe.train.distributed import DistInfo, cleanup_distributed, setup_distributed
from facepipe.train.progress import make_progress
from facepipe.train.runlog import RunDir, plot_metrics, resume_checkpoint
from facepipe.train.schedule import SCHEDULES, lr_factor

TEMPLATES = {"arcface": ARCFACE_TEMPLATE, "dlib": DLIB_TEMPLATE}


def check_config(cfg: RecognizerConfig) -> None:
    """Errors a user can fix, before anything is loaded."""
    choices = {"backbone": BACKBONES, "loss": ("margin", "triplet"), "optimizer": ("sgd", "adamw"),
               "schedule": SCHEDULES,
               "color": ("RGB", "BGR", "GRAY"), "template": TEMPLATES, "softmax_loss": ("ce", "focal"),
               "split": ("none", "identity", "image"), "triplet_mining": ("hard", "semi-hard"),
               "data_format": ("auto", "folder", "recordio", "synthetic")}
    for key, allowed in choices.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key {key!r}: {getattr(cfg, key)!r} is not one of {', '.join(allowed)}")
    channels = 1 if cfg.color == "GRAY" else 3
    if len(cfg.mean) != channels or len(cfg.std) != channels:
        raise ConfigError(f"color {cfg.color} needs {channels} mean and std values (got {len(cfg.mean)} and "
                          f"{len(cfg.std)})")
    if len(cfg.input_size) != 2 or any(v % 16 for v in cfg.input_size):
        raise ConfigError(f"input_size must be [width, height], multiples of 16 (got {cfg.input_size})")
    if cfg.data_format != "synthetic" and not cfg.data:
        raise ConfigError("config key 'data' is empty: give a folder of identity folders or a RecordIO prefix")
    if cfg.split != "none" and not 0 < cfg.val_fraction < 1:
        raise ConfigError(f"split={cfg.split} needs 0 < val_fraction < 1 (got {cfg.val_fraction})")
    if not cfg.margin_weight and not cfg.teacher:
        raise ConfigError("margin_weight=0 leaves nothing to learn from: give a teacher (teacher=DST/teacher_dlib.npz)")
    if cfg.gradient_acc < 1:
        raise ConfigError(f"gradient_acc must be >= 1 (got {cfg.gradient_acc})")
    if not 0 < cfg.sample_rate <= 1:
        raise ConfigError(f"sample_rate must be in (0, 1] (got {cfg.sample_rate})")


def backbone_args(cfg: RecognizerConfig) -> dict[str, Any]:
    args: dict[str, Any] = {"embedding_size": cfg.embedding_size, "in_channels": 1 if cfg.color == "GRAY" else 3,
                            "input_size": [int(v) for v in cfg.input_size]}
    if cfg.backbone.startswith("r") and cfg.dropout:
        args["dropout"] = cfg.dropout
    return args


def preprocess_meta(cfg: RecognizerConfig) -> dict[str, Any]:
    w, h = (int(v) for v in cfg.input_size)
    return {"color": cfg.color, "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std],
            "input_size": [w, h], "template": TEMPLATES[cfg.template].scaled_to(w, h).points.tolist()}


def make_embedder(model: torch.nn.Module, cfg: RecognizerConfig, device: torch.device,
                  batch_size: int = 128) -> Callable[[np.ndarray], np.ndarray]:
    """RGB uint8 chips -> L2-normalised embeddings, preprocessed exactly as the exported model will be (so the
    flip test sums unit vectors, as it does with OnnxRecognizer / TorchRecognizer)."""

    @torch.no_grad()
    def embed(chips: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(chips), batch_size):
            x = torch.from_numpy(to_network_input(chips[i:i + batch_size], cfg.color, cfg.mean, cfg.std)).to(device)
            out.append(model(x).float().cpu().numpy())
        return l2_normalize(np.concatenate(out))

    return embed


@dataclasses.dataclass
class Data:
    train: Any
    num_classes: int
    val: FaceDataset | None = None  # split by image: classification accuracy on held-out images
    pair_sets: list[PairSet] = dataclasses.field(default_factory=list)
    heldout: list[str] = dataclasses.field(default_factory=list)  # split by identity: the identities never trained on


def build_data(cfg: RecognizerConfig, evaluates: bool = True) -> Data:
    """The training set, and (when this process `evaluates`: rank 0) the verification pair sets."""
    size = tuple(int(v) for v in cfg.input_size)
    if cfg.data_format == "synthetic":
        return Data(SyntheticDataset(cfg.synthetic_samples, cfg.synthetic_classes, size, cfg.seed),
                    cfg.synthetic_classes)
    source = open_source(cfg.data, cfg.data_format)
    train_idx, val_idx = split_indices(source.labels, cfg.split, cfg.val_fraction, cfg.split_seed)
    label_map = contiguous_labels(source.labels[train_idx])
    train_tf = FaceTransform(size, cfg.color, cfg.mean, cfg.std, True, cfg.flip, cfg.color_jitter, cfg.mask_prob,
                             TEMPLATES[cfg.template])
    eval_tf = FaceTransform(size, cfg.color, cfg.mean, cfg.std, train=False)
    targets = None
    if cfg.teacher:
        teacher = TeacherTargets(cfg.teacher)
        if teacher.dim != cfg.embedding_size:
            raise ConfigError(f"teacher {cfg.teacher} gives {teacher.dim}-d vectors: set embedding_size={teacher.dim}")
        targets = teacher.for_paths([source.describe(int(i)) for i in train_idx], cfg.teacher)
    data = Data(FaceDataset(source, train_idx, train_tf, label_map, targets), len(label_map))
    if cfg.split == "identity":
        data.heldout = sorted({source.classes[int(v)] for v in source.labels[val_idx]})
    if len(val_idx):
        if cfg.split == "image":
            data.val = FaceDataset(source, val_idx, eval_tf, label_map)
        labels = source.labels[val_idx]
        if not evaluates:
            return data
        try:
            left, right, same = make_pairs(labels, cfg.val_pairs, cfg.split_seed)
        except VerificationSetError as exc:  # too few identities / images: train on, say why there is no val metric
            log.warn(f"no verification pairs from the validation split: {exc}")
        else:
            used = np.unique(np.concatenate([left, right]))
            pos = {int(u): k for k, u in enumerate(used)}
            images = [eval_tf_resize(source.load(int(val_idx[u])), size) for u in used]
            data.pair_sets.append(PairSet(f"val-{cfg.split}", np.stack(images), np.array([pos[int(v)] for v in left]),
                                          np.array([pos[int(v)] for v in right]), same))
    for spec in cfg.verify if evaluates else []:  # lfw/cfp_fp/agedb bins are ~1.4 GB decoded: rank 0 only
        data.pair_sets.append(load_pair_set(spec, size=size))
    return data


def eval_tf_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if image.shape[1] > size[0] else cv2.INTER_LINEAR)


def _stages(model: torch.nn.Module) -> torch.nn.Sequential:
    return model.body  # every registered backbone keeps its stages (stem first) in .body


class TrainForward(torch.nn.Module):
    """What the trainer (and DDP) runs: a uint8 batch from the workers -> embeddings.

    Normalisation happens on the device; convolutions run under autocast (fp16 / bf16) in channels_last on
    CUDA; the embedding layers (flatten -> linear -> BatchNorm1d, the end of every backbone's .neck) stay in
    fp32, as arcface_torch keeps them. The backbone itself stays a plain module (its state_dict is saved).
    """

    def __init__(self, backbone: torch.nn.Module, cfg: RecognizerConfig, amp_dtype: torch.dtype | None,
                 channels_last: bool):
        super().__init__()
        self.backbone = backbone
        self.color, self.mean, self.std = cfg.color, list(cfg.mean), list(cfg.std)
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        self.split = next(i for i, m in enumerate(backbone.neck) if isinstance(m, torch.nn.Flatten))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_batch(x, self.color, self.mean, self.std)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            features = self.backbone.neck[:self.split](self.backbone.body(x))
        with torch.autocast(x.device.type, enabled=False):
            return self.backbone.neck[self.split:](features.float())


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, weight: float, relation_weight: float
                      ) -> torch.Tensor:
    """weight * mean(1 - cos(student, teacher)) + relation_weight * mean((S - T)^2), S and T the batch's cosine
    similarity matrices: the first pulls each vector onto the teacher's, the second keeps who-resembles-whom
    (relational knowledge distillation, Park et al. 2019) even where the vectors themselves cannot match."""
    s = torch.nn.functional.normalize(student.float(), dim=1)
    t = torch.nn.functional.normalize(teacher.float(), dim=1)
    loss = weight * (1.0 - (s * t).sum(1)).mean()
    if relation_weight:
        loss = loss + relation_weight * ((s @ s.T - t @ t.T) ** 2).mean()
    return loss


class Trainer:
    def __init__(self, cfg: RecognizerConfig):
        check_config(cfg)
        self.cfg = cfg
        self.dist: DistInfo = setup_distributed(cfg.device)
        self.device = self.dist.device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
            torch.set_float32_matmul_precision("high")  # TF32 for the fp32 Partial FC matmul (logits stay float)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed + self.dist.rank)
        np.random.seed((cfg.seed + self.dist.rank) % 2**32)
        self.run_path = cfg.run_dir
        self.resume_from = resume_checkpoint(self.run_path, cfg.resume)  # before the folder is touched
        self.run = RunDir(self.run_path) if self.dist.is_main else None
        self.data = build_data(cfg, evaluates=self.dist.is_main)
        self.backbone = build_backbone(cfg.backbone, **backbone_args(cfg)).to(self.device)
        channels_last = self.device.type == "cuda"
        if channels_last:
            self.backbone = self.backbone.to(memory_format=torch.channels_last)
        if cfg.init_from:
            self._init_from(cfg.init_from)
        for p in _stages(self.backbone)[:cfg.freeze_stages].parameters():
            p.requires_grad = False
        if cfg.loss == "margin":
            margin = CombinedMargin(cfg.scale, cfg.margin_m1, cfg.margin_m2, cfg.margin_m3, cfg.easy_margin)
            self.head: torch.nn.Module = PartialFC(cfg.embedding_size, self.data.num_classes, margin, cfg.sample_rate,
                                                   cfg.softmax_loss, cfg.focal_gamma).to(self.device)
        else:
            self.head = TripletLoss(cfg.triplet_margin, cfg.triplet_mining)
        self.amp_dtype = cfg.amp_dtype(self.device.type)
        self.forward_module = TrainForward(self.backbone, cfg, self.amp_dtype, channels_last)
        self.model: torch.nn.Module = self.forward_module
        if self.dist.distributed:
            ids = [self.dist.local_rank] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.forward_module, device_ids=ids)
        groups = [{"params": [p for p in self.backbone.parameters() if p.requires_grad],
                   "base_lr": cfg.lr * cfg.backbone_lr_mult}]
        if any(True for _ in self.head.parameters()):
            groups.append({"params": list(self.head.parameters()), "base_lr": cfg.lr})
        if cfg.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        self.sampler = self._sampler()
        self.steps_per_epoch = len(self.sampler) // cfg.gradient_acc
        if self.steps_per_epoch < 1:
            raise DataError(f"an epoch has {len(self.sampler)} batches per rank, fewer than gradient_acc="
                            f"{cfg.gradient_acc}: lower gradient_acc or batch_size")
        self.loader = self._make_loader()
        self.total_steps = cfg.max_steps or max(1, int(math.ceil(cfg.epochs * self.steps_per_epoch)))
        self.step = 0
        self.verification: dict[str, Any] | None = None
        self.window_teacher_cos = torch.zeros((), device=self.device)  # summed over the logging window's steps
        self._resume()

    # --- set-up -------------------------------------------------------------------------------------
    def _sampler(self):
        cfg, d = self.cfg, self.dist
        if cfg.loss == "triplet":
            return IdentityBalancedBatchSampler(self.data.train.labels, cfg.identities_per_batch,
                                                cfg.images_per_identity, cfg.seed, d.rank, d.world_size)
        try:
            return EpochBatchSampler(len(self.data.train), cfg.batch_size, cfg.seed, d.rank, d.world_size)
        except ValueError as exc:
            raise DataError(str(exc)) from None

    def _init_from(self, path: str) -> None:
        """Fine-tuning: the backbone of another run (same architecture), a new head."""
        state = ckpt.load_recognizer_checkpoint(path, self.cfg.backbone, self.cfg.embedding_size)
        mine = backbone_args(self.cfg)
        theirs = state["backbone_args"]
        for key in ("in_channels", "input_size"):
            if list(np.atleast_1d(theirs.get(key))) != list(np.atleast_1d(mine[key])):
                raise ModelError(f"{path}: checkpoint was made for {key} {theirs.get(key)} (this run uses {mine[key]})")
        self.backbone.load_state_dict(state["model"])
        if state.get("preprocess", {}).get("template") != preprocess_meta(self.cfg)["template"]:
            log.warn(f"{path} was trained on chips aligned differently (template) from this run's")

    def _resume(self) -> None:
        cfg, path = self.cfg, self.resume_from
        if path is None:
            return
        # on the CPU: load_state_dict moves weights and optimizer state to the model's device, RNG states stay here
        state = ckpt.load_recognizer_checkpoint(ckpt.rank_path(path, self.dist.rank), cfg.backbone, cfg.embedding_size,
                                                map_location="cpu")
        if int(state.get("world_size", 1)) != self.dist.world_size:
            raise ModelError(f"{path}: made with {state.get('world_size')} processes; resume with the same number "
                             "(or start a new run with init_from to fine-tune from it)")
        if "optimizer" not in state:
            raise ModelError(f"{path}: holds no training state to resume (an exported or stripped checkpoint)")
        if int(state.get("num_classes", self.data.num_classes)) != self.data.num_classes:
            raise ModelError(f"{path}: trained on {state['num_classes']} identities, this data has "
                             f"{self.data.num_classes}; to train a new head on it use init_from instead of resume")
        self.backbone.load_state_dict(state["model"])
        try:
            self.head.load_state_dict(state["head"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise ModelError(f"{path}: its head / optimizer state does not fit this config (loss or "
                             f"optimizer changed?): {str(exc).splitlines()[0][:160]}") from None
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.verification = state.get("verification")
        restore_rng(state["rng"])
        if self.run:
            self.run.truncate_metrics_after("step", self.step)
        log.info(f"resumed from {path} at step {self.step}")

    # --- checkpoints --------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {
            "kind": ckpt.KIND, "format": ckpt.FORMAT,
            "backbone": self.cfg.backbone, "backbone_args": backbone_args(self.cfg),
            "embedding_size": self.cfg.embedding_size, "preprocess": preprocess_meta(self.cfg),
            "model": self.backbone.state_dict(), "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "step": self.step, "epoch": self.step / max(1, self.steps_per_epoch), "rng": capture_rng(),
            "world_size": self.dist.world_size, "num_classes": self.data.num_classes,
            "verification": self.verification, "config": dataclasses.asdict(self.cfg),
        }

    def save(self) -> Path:
        path = self.run_path / f"step_{self.step:07d}.pt"
        save_checkpoint(self.state(), ckpt.rank_path(path, self.dist.rank))
        if self.dist.distributed:
            dist.barrier()
        src, dst = ckpt.rank_path(path, self.dist.rank), ckpt.rank_path(self.run_path / "last.pt", self.dist.rank)
        tmp = dst.with_suffix(".pt.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
        if self.cfg.keep_checkpoints > 0 and self.dist.is_main:
            numbered = sorted(self.run_path.glob("step_*.pt"))
            numbered = [p for p in numbered if ".rank" not in p.name]
            for old in numbered[:-self.cfg.keep_checkpoints]:
                for extra in [old, *old.parent.glob(f"{old.stem}.rank*.pt")]:
                    extra.unlink(missing_ok=True)
        return self.run_path / "last.pt"

    # --- evaluation ---------------------------------------------------------------------------------
    def _set_train_mode(self) -> None:
        self.model.train()
        _stages(self.backbone)[:self.cfg.freeze_stages].eval()  # frozen stages keep their BN statistics

    @torch.no_grad()
    def classification_accuracy(self, dataset) -> float:
        """Nearest class centre (over all ranks) of each image, no augmentation, eval mode."""
        self.backbone.eval()
        loader = DataLoader(dataset, batch_size=256, num_workers=0)
        correct = total = 0
        for x, y in loader:
            pred = self.head.predict(self.forward_module(x.to(self.device)))
            correct += int((pred.cpu() == y).sum())
            total += len(y)
        self._set_train_mode()
        return correct / max(1, total)

    def evaluate(self) -> dict[str, Any]:
        record: dict[str, Any] = {}
        if isinstance(self.head, PartialFC) and 0 < self._train_eval_size() <= self.cfg.train_eval_max:
            record["train_eval_acc"] = self.train_eval_accuracy()
        if self.data.val is not None and isinstance(self.head, PartialFC):
            record["val_acc"] = self.classification_accuracy(self.data.val)
        if self.dist.is_main and self.data.pair_sets:
            self.backbone.eval()
            embed = make_embedder(self.backbone, self.cfg, self.device)
            first = None
            for pairs in self.data.pair_sets:
                result, scores = evaluate_pair_set(embed, pairs, flip=self.cfg.flip_test)
                record[f"{pairs.name}_acc"] = result["accuracy"]
                record[f"{pairs.name}_tar@far1e-3"] = result["tar_at_far"]["0.001"]
                plot_roc({f"{pairs.name} step {self.step}": (scores, pairs.same)},
                         self.run_path / f"roc_{pairs.name}.png", title=f"{self.cfg.name}: {pairs.name}")
                first = first or result
            self.verification = {k: v for k, v in first.items() if k != "roc"}
            record["threshold"] = first["threshold"]
            self._set_train_mode()
        if self.dist.distributed:
            dist.barrier()
        return record

    # --- the loop -----------------------------------------------------------------------------------
    def _make_loader(self) -> DataLoader:
        """One DataLoader for the whole run: its workers persist across epochs (the batch sampler runs in this
        process, so set_epoch before each pass still takes effect)."""
        workers = self.cfg.workers
        return DataLoader(self.data.train, batch_sampler=self.sampler, num_workers=workers,
                          pin_memory=self.device.type == "cuda", generator=torch.Generator(),
                          persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)

    def batches(self, epoch: int, start_step: int):
        """The loader's (uint8 images, labels) for `epoch` from optimizer step `start_step` on."""
        self.sampler.set_epoch(epoch, start_step * self.cfg.gradient_acc)
        return iter(self.loader)

    def train_step(self, micro_batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step over `gradient_acc` micro-batches; returns (loss, accuracy) as device tensors
        (reading them is a host sync: the loop does it on logging steps only)."""
        cfg = self.cfg
        factor = lr_factor(self.step, self.total_steps, cfg.warmup_steps, cfg.schedule, 0.0, cfg.poly_power,
                           cfg.step_milestones, cfg.step_gamma)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        total_loss = torch.zeros((), device=self.device)
        total_acc = torch.zeros((), device=self.device)
        for k, (x, y, *target) in enumerate(micro_batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = k == len(micro_batches) - 1
            sync = self.model.no_sync() if self.dist.distributed and not last else contextlib.nullcontext()
            with sync:  # DDP all-reduces the accumulated backbone gradient once, on the last micro-batch
                embeddings = self.model(x)
                loss = self.head(embeddings, y) * cfg.margin_weight if cfg.margin_weight else 0.0
                if target:
                    teacher = target[0].to(self.device, non_blocking=True)
                    loss = loss + distillation_loss(embeddings, teacher, cfg.distill_weight, cfg.relation_weight)
                    self.window_teacher_cos += torch.nn.functional.cosine_similarity(
                        embeddings.detach().float(), teacher, dim=1).mean() / len(micro_batches)
                loss = loss / len(micro_batches)
                self.scaler.scale(loss).backward()
            total_loss += loss.detach()
            acc = self.head.last_accuracy if isinstance(self.head, PartialFC) else self.head.last_active
            total_acc += torch.as_tensor(acc, device=self.device, dtype=torch.float32) / len(micro_batches)
        if cfg.grad_clip > 0:
            # the backbone only, as arcface_torch: its gradient is the same on every rank after DDP's
            # all-reduce, while each rank's Partial FC shard differs; including the shard would give each
            # rank its own norm, scale the same backbone step differently and drift the ranks apart
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_([p for p in self.backbone.parameters() if p.requires_grad], cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total_loss, total_acc

    def fit(self) -> dict[str, Any]:
        cfg, d = self.cfg, self.dist
        if self.run:
            self.run.save_config(cfg)
            if self.data.heldout:
                (self.run_path / "heldout_identities.txt").write_text("\n".join(self.data.heldout) + "\n")
        eval_every = cfg.eval_every or self.steps_per_epoch
        ckpt_every = cfg.checkpoint_every or self.steps_per_epoch
        global_batch = self.sampler.batch_size * d.world_size * cfg.gradient_acc
        interactive = sys.stderr.isatty()
        progress = make_progress("samples", disable=not (d.is_main and cfg.progress and interactive))
        window_loss = torch.zeros((), device=self.device)  # summed on the device: no host sync per step
        window_acc = torch.zeros((), device=self.device)
        window_steps = 0
        t_window, n_window = time.perf_counter(), 0
        self._set_train_mode()
        last: dict[str, Any] = {}
        last_eval: dict[str, Any] = {}
        with progress:
            task = progress.add_task(cfg.name, total=self.total_steps * global_batch,
                                     completed=self.step * global_batch, status="")
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                batches = self.batches(epoch, start)
                for _ in range(start, self.steps_per_epoch):
                    if self.step >= self.total_steps:
                        break
                    loss, acc = self.train_step([next(batches) for _ in range(cfg.gradient_acc)])
                    self.step += 1
                    window_loss += loss
                    window_acc += acc
                    window_steps += 1
                    n_window += global_batch
                    progress.update(task, advance=global_batch)
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        rate = n_window / max(1e-9, time.perf_counter() - t_window)
                        last = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                                "loss": float(window_loss) / window_steps,
                                "train_acc": float(window_acc) / window_steps,
                                "lr": self.optimizer.param_groups[-1]["lr"], "samples_per_s": round(rate, 1)}
                        if cfg.teacher:  # how close the student's vectors are to the teacher's, augmented batches
                            last["teacher_cos"] = float(self.window_teacher_cos) / window_steps
                        self.window_teacher_cos.zero_()
                        window_loss.zero_(), window_acc.zero_()
                        window_steps, t_window, n_window = 0, time.perf_counter(), 0
                        progress.update(task, status=f"epoch {last['epoch']:.2f} loss {last['loss']:.3f} "
                                                     f"acc {last['train_acc']:.3f}")
                        if self.run:
                            self.run.log(last)
                            if not interactive and cfg.progress:
                                log.info(f"step {self.step}/{self.total_steps} loss {last['loss']:.4f} "
                                         f"acc {last['train_acc']:.3f} lr {last['lr']:.4g} {rate:.1f} samples/s")
                    done = self.step == self.total_steps
                    if self.step % eval_every == 0 or done:
                        record = last_eval = self.evaluate()
                        if record and self.run:
                            self.run.log({"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4),
                                          **record})
                            if not interactive and cfg.progress:
                                log.info(f"step {self.step} eval " + " ".join(
                                    f"{k} {v:.4f}" for k, v in record.items() if isinstance(v, float)))
                        self.plot()
                        t_window = time.perf_counter()  # evaluation time is not training throughput
                    if self.step % ckpt_every == 0 or done:
                        self.save()
        summary = {"run_dir": str(self.run_path), "checkpoint": str(self.run_path / "last.pt"),
                   "step": self.step, "last": last, "verification": self.verification}
        if last_eval.get("train_eval_acc") is not None:
            summary["train_eval_acc"] = last_eval["train_eval_acc"]
        return summary

    def _train_eval_size(self) -> int:
        return len(self.data.train) if isinstance(self.data.train, FaceDataset) else 0

    def train_eval_accuracy(self) -> float:
        """Accuracy on the training images themselves, eval mode, no augmentation."""
        cfg = self.cfg
        plain = FaceTransform(tuple(cfg.input_size), cfg.color, cfg.mean, cfg.std, train=False)
        return self.classification_accuracy(self.data.train.with_transform(plain))

    def plot(self) -> None:
        if not self.run:
            return
        records = self.run.read_metrics()
        plot_metrics(records, "step", [["loss"], ["lr"]], self.run_path / "loss.png", title=f"{self.cfg.name}: loss")
        acc_keys = sorted({k for r in records for k in r if k.endswith("_acc")} - {"train_acc"})
        tar_keys = sorted({k for r in records for k in r if "tar@" in k})
        panels = [["train_acc", *[k for k in acc_keys if k.startswith("train_")],
                   *(["teacher_cos"] if any("teacher_cos" in r for r in records) else [])]]
        if [k for k in acc_keys if not k.startswith("train_")]:
            panels.append([k for k in acc_keys if not k.startswith("train_")])
        if tar_keys:
            panels.append(tar_keys)
        plot_metrics(records, "step", panels, self.run_path / "accuracy.png", title=f"{self.cfg.name}: accuracy")


def train(cfg: RecognizerConfig) -> dict[str, Any]:
    """Train (or resume) a recognizer; returns a summary with the run folder and final metrics."""
    try:
        return Trainer(cfg).fit()
    finally:
        cleanup_distributed()
