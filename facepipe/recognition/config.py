"""The recognizer training config: one dataclass, loaded from YAML with key=value overrides.

Load with `facepipe.train.config.load_config(RecognizerConfig, path, overrides)`; unknown keys are errors.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from facepipe.train.config import RunConfig


@dataclass
class RecognizerConfig(RunConfig):
    """Run keys (name, output_dir, resume, device, amp, workers, threads, seed, progress): train.config.RunConfig."""

    name: str = "recognizer"  # run folder: <output_dir>/<name>
    # data
    data: str = ""  # folder of identity folders, RecordIO prefix (.../train) or folder with train.rec
    data_format: str = "auto"  # auto | folder | recordio | synthetic
    synthetic_classes: int = 1000
    synthetic_samples: int = 10000
    split: str = "none"  # none | identity | image: how validation is held out
    val_fraction: float = 0.0
    split_seed: int = 0
    input_size: list[int] = field(default_factory=lambda: [112, 112])  # width, height
    color: str = "RGB"  # RGB | BGR | GRAY
    mean: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    std: list[float] = field(default_factory=lambda: [127.5, 127.5, 127.5])
    template: str = "arcface"  # arcface | dlib: how the training chips were aligned (goes into the model)
    flip: bool = True
    color_jitter: float = 0.0
    mask_prob: float = 0.0  # online synthetic masks (needs facepipe.prepare.masks)
    # model
    backbone: str = "mbf"
    embedding_size: int = 512
    dropout: float = 0.0  # IResNet only
    # loss
    loss: str = "margin"  # margin | triplet
    margin_m1: float = 1.0  # SphereFace (multiplies the angle)
    margin_m2: float = 0.5  # ArcFace (adds to the angle)
    margin_m3: float = 0.0  # CosFace (subtracts from the cosine)
    scale: float = 64.0
    easy_margin: bool = False
    softmax_loss: str = "ce"  # ce | focal
    focal_gamma: float = 2.0
    sample_rate: float = 1.0  # Partial FC: fraction of each rank's class centres used per step
    # distillation: a teacher's vector per chip (`facepipe teacher-embed`), learnt beside the margin loss
    teacher: str = ""  # DST/teacher_<name>.npz; "" = no distillation
    distill_weight: float = 1.0  # weight of 1 - cos(student, teacher), per image
    relation_weight: float = 0.0  # weight of the mean squared gap between the batch's two similarity matrices
    margin_weight: float = 1.0  # weight of the margin loss (0: learn from the teacher alone)
    triplet_margin: float = 0.2
    triplet_mining: str = "semi-hard"  # hard | semi-hard
    identities_per_batch: int = 16  # triplet batches: P identities x K images
    images_per_identity: int = 4
    # optimisation
    batch_size: int = 128  # per rank (and per micro-batch with gradient_acc)
    # micro-batches per optimizer step (arcface_torch's gradient_acc): a larger batch in less memory
    gradient_acc: int = 1
    epochs: float = 20
    max_steps: int = 0  # > 0: train this many steps instead of `epochs`
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1  # head learning rate (and backbone unless backbone_lr_mult != 1)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "poly"  # poly | cosine | step | constant
    poly_power: float = 2.0
    step_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75, 0.9])  # fractions of the run
    step_gamma: float = 0.1
    warmup_steps: int = 0
    grad_clip: float = 5.0  # max gradient norm (0 = off)
    # fine-tuning
    init_from: str = ""  # a recognizer checkpoint: start the backbone from it, with a new head
    backbone_lr_mult: float = 1.0  # backbone lr = lr * this (e.g. 0.1 when fine-tuning)
    freeze_stages: int = 0  # freeze this many leading backbone stages (stem counts as one)
    # evaluation, checkpoints, logging
    verify: list[str] = field(default_factory=list)  # .bin files or pairs lists (pairs.txt@root)
    val_pairs: int = 3000  # pairs built from validation images (positive and negative each, at most)
    eval_every: int = 0  # steps between evaluations (0 = at the end of every epoch)
    flip_test: bool = True
    train_eval_max: int = 2000  # training sets up to this size also get an eval-mode accuracy at each evaluation
    checkpoint_every: int = 0  # steps between checkpoints (0 = at the end of every epoch)
    keep_checkpoints: int = 2  # numbered checkpoints to keep besides last.pt (0 = keep all)
    log_every: int = 10
