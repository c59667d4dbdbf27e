"""Two gloo ranks through the real trainer: with gradient clipping on, both ranks keep the same backbone."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    from facepipe.recognition.config import RecognizerConfig
    from facepipe.recognition.train import train

    # a tiny clip norm so clipping acts on every step; each rank holds a different Partial FC shard
    cfg = RecognizerConfig(name="ddp", output_dir=out_dir, data_format="synthetic", synthetic_classes=12,
                           synthetic_samples=64, input_size=[32, 32], backbone="mobilefacenet", embedding_size=16,
                           batch_size=4, max_steps=4, lr=0.1, grad_clip=0.05, workers=0, threads=1,
                           log_every=2, checkpoint_every=4, eval_every=100, progress=False, resume="never")
    train(cfg)


def test_clipping_keeps_ddp_ranks_identical(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    run = tmp_path / "ddp"
    ranks = [torch.load(run / name, weights_only=True) for name in ("last.pt", "last.rank1.pt")]
    assert ranks[0]["step"] == ranks[1]["step"] == 4
    from facepipe.recognition.backbones import build_backbone

    params = {n for n, _ in build_backbone("mobilefacenet", embedding_size=16, input_size=[32, 32]).named_parameters()}
    for name in params:
        a, b = ranks[0]["model"][name], ranks[1]["model"][name]
        assert torch.equal(a, b), f"backbone parameter {name} differs between the ranks"
    assert not torch.equal(ranks[0]["head"]["weight"][:1], ranks[1]["head"]["weight"][:1])  # different shards
