"""Partial FC: the 2-process gloo run equals one process on the same batch; sampling keeps every positive."""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from facepipe.recognition.margins import CombinedMargin
from facepipe.recognition.partial_fc import PartialFC, class_shard

EMB, CLASSES, BATCH_PER_RANK, WORLD = 6, 7, 5, 2  # 7 classes: shards of 4 and 3 (uneven on purpose)


def _problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH_PER_RANK * WORLD, 10, generator=g)
    y = torch.tensor([0, 6, 3, 4, 4, 1, 5, 2, 6, 0])
    centres = torch.randn(CLASSES, EMB, generator=g)
    backbone = torch.nn.Linear(10, EMB)
    with torch.no_grad():
        backbone.weight.copy_(torch.randn(EMB, 10, generator=g))
        backbone.bias.copy_(torch.randn(EMB, generator=g))
    return x, y, centres, backbone.state_dict()


def _run(kind: str, x, y, centres, backbone_state, rank: int = 0, world: int = 1):
    backbone = torch.nn.Linear(10, EMB)
    backbone.load_state_dict(backbone_state)
    model = torch.nn.parallel.DistributedDataParallel(backbone) if world > 1 else backbone
    head = PartialFC(EMB, CLASSES, CombinedMargin(s=8.0, m1=1.1, m2=0.2, m3=0.1), sample_rate=1.0, loss=kind)
    start, n = class_shard(CLASSES, rank, world)
    assert (head.class_start, head.num_local) == (start, n)
    with torch.no_grad():
        head.weight.copy_(centres[start:start + n])
    rows = slice(rank * len(x) // world, (rank + 1) * len(x) // world)
    loss = head(model(x[rows]), y[rows])
    loss.backward()
    return {"loss": loss.detach(), "w": backbone.weight.grad, "b": backbone.bias.grad, "centres": head.weight.grad,
            "acc": float(head.last_accuracy)}


def _worker(rank: int, world: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        x, y, centres, state = _problem()
        torch.save({kind: _run(kind, x, y, centres, state, rank, world) for kind in ("ce", "focal")},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(WORLD, str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    x, y, centres, state = _problem()
    for kind in ("ce", "focal"):
        single = _run(kind, x, y, centres, state)
        for r in ranks:
            torch.testing.assert_close(r[kind]["loss"], single["loss"], atol=1e-6, rtol=1e-5)
            # DDP averaged the backbone gradients of the ranks; Partial FC compensates: equal to one process
            torch.testing.assert_close(r[kind]["w"], single["w"], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(r[kind]["b"], single["b"], atol=1e-6, rtol=1e-5)
            assert r[kind]["acc"] == pytest.approx(single["acc"])
        sharded = torch.cat([r[kind]["centres"] for r in ranks])  # each rank's shard, in class order
        torch.testing.assert_close(sharded, single["centres"], atol=1e-6, rtol=1e-5)
        assert single["w"].abs().sum() > 0 and single["centres"].abs().sum() > 0


def test_one_process_no_group_is_plain_margin_softmax():
    x, y, centres, state = _problem()
    out = _run("ce", x, y, centres, state)
    backbone = torch.nn.Linear(10, EMB)
    backbone.load_state_dict(state)
    cos = torch.nn.functional.normalize(backbone(x)) @ torch.nn.functional.normalize(centres).T
    logits = CombinedMargin(s=8.0, m1=1.1, m2=0.2, m3=0.1)(cos, y)
    assert out["loss"].item() == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), abs=1e-5)


def test_sampling_keeps_positives_and_uses_sample_rate():
    torch.manual_seed(0)
    head = PartialFC(8, 100, sample_rate=0.1)
    emb = torch.randn(6, 8, requires_grad=True)
    labels = torch.tensor([3, 97, 50, 3, 12, 64])
    head(emb, labels).backward()
    used = (head.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert len(used) == 10 and set(labels.tolist()) <= set(used)
    # more positives than the sample size: all positives still used
    head2 = PartialFC(8, 100, sample_rate=0.02)
    head2(emb, labels).backward()
    assert set((head2.weight.grad.abs().sum(1) > 0).nonzero().flatten().tolist()) == set(labels.tolist())


def test_predict_finds_nearest_centre():
    head = PartialFC(8, 20)
    assert head.predict(head.weight.detach()[[4, 19, 0]] * 3).tolist() == [4, 19, 0]
