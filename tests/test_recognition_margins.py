"""Margin maths on hand-made angles, the softmax / focal losses and triplet mining on hand-made embeddings."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facepipe.recognition.losses import TripletLoss, softmax_loss
from facepipe.recognition.margins import CombinedMargin, margin_target, psi


def cos_of(deg):
    return torch.cos(torch.deg2rad(torch.as_tensor(deg, dtype=torch.float64))).float()


def test_arcface_cosface_sphereface_on_hand_made_angles():
    theta = torch.tensor([10.0, 45.0, 60.0, 90.0, 120.0])
    c = cos_of(theta)
    rad = torch.deg2rad(theta)
    torch.testing.assert_close(margin_target(c, 1.0, 0.5, 0.0), torch.cos(rad + 0.5), atol=1e-5, rtol=0)  # ArcFace
    torch.testing.assert_close(margin_target(c, 1.0, 0.0, 0.35), c - 0.35, atol=1e-6, rtol=0)  # CosFace
    # SphereFace
    torch.testing.assert_close(margin_target(c[:3], 2.0, 0.0, 0.0), torch.cos(2 * rad[:3]), atol=1e-5, rtol=0)
    # 60 degrees + m2 = 0.5 rad by hand: cos(1.0471976 + 0.5) = 0.0234...
    assert margin_target(cos_of([60.0]), 1.0, 0.5, 0.0).item() == pytest.approx(math.cos(math.pi / 3 + 0.5), abs=1e-5)


def test_combined_margin_is_really_combined():
    theta = torch.deg2rad(torch.tensor([20.0, 50.0]))
    got = margin_target(torch.cos(theta), 1.2, 0.3, 0.2)
    torch.testing.assert_close(got, torch.cos(1.2 * theta + 0.3) - 0.2, atol=1e-5, rtol=0)
    # and differs from every single-margin special case
    assert not torch.allclose(got, margin_target(torch.cos(theta), 1.0, 0.3, 0.0))
    assert not torch.allclose(got, margin_target(torch.cos(theta), 1.0, 0.0, 0.2))


@pytest.mark.parametrize("m", [(1.0, 0.5, 0.0), (1.35, 0.0, 0.0), (1.2, 0.4, 0.1), (1.0, 0.0, 0.4), (2.0, 0.5, 0.0)])
def test_target_decreases_monotonically_past_pi(m):
    """theta + m > pi: plain cos(theta + m) would rise again; the target must keep falling and stay continuous."""
    theta = torch.linspace(0.0, math.pi, 4001, dtype=torch.float64)
    target = margin_target(torch.cos(theta).float(), *m).double()
    steps = target[1:] - target[:-1]
    assert (steps <= 1e-5).all(), f"target rises somewhere for margins {m}"
    assert steps.abs().max() < 0.02, "target jumps (not continuous)"
    assert (target <= torch.cos(theta) + 1e-5).all(), "a margin must never make the target easier"


def test_arcface_past_pi_is_not_naive_cos():
    m2 = 0.5
    theta = torch.tensor([math.pi - 0.2])  # theta + m > pi
    naive = math.cos(theta.item() + m2)  # = cos(pi + 0.3): would be *higher* than at theta = pi - m2
    got = margin_target(torch.cos(theta), 1.0, m2, 0.0).item()
    assert got < -1.0 < naive
    assert psi(torch.tensor([math.pi])).item() == pytest.approx(-1.0)


def test_easy_margin_leaves_obtuse_angles_alone():
    c = cos_of([30.0, 100.0])
    got = margin_target(c, 1.0, 0.5, 0.0, easy_margin=True)
    assert got[0].item() == pytest.approx(math.cos(math.radians(30) + 0.5), abs=1e-5)
    assert got[1].item() == pytest.approx(c[1].item(), abs=1e-6)


def test_margin_module_only_touches_targets_and_scales():
    cos = torch.tensor([[0.5, 0.2, -0.1], [0.3, 0.9, 0.0]])
    labels = torch.tensor([0, -1])  # second row: target on another rank
    out = CombinedMargin(s=10.0, m1=1.0, m2=0.0, m3=0.3)(cos, labels)
    expected = cos.clone() * 10
    expected[0, 0] = (0.5 - 0.3) * 10
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError):
        CombinedMargin(m1=0.9)


def test_gradient_finite_at_cos_one():
    c = torch.tensor([1.0, -1.0, 0.999999], requires_grad=True)
    margin_target(c, 1.2, 0.5, 0.1).sum().backward()
    assert torch.isfinite(c.grad).all()


def test_softmax_and_focal_loss_match_reference():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 5) * 3, torch.tensor([0, 1, 2, 3, 4, 0])
    assert softmax_loss(logits, labels).item() == pytest.approx(torch.nn.functional.cross_entropy(logits,
                                                                                                  labels).item(),
                                                                                                  abs=1e-5)
    p = torch.softmax(logits, 1)[torch.arange(6), labels]
    focal = (-(1 - p) ** 2 * torch.log(p)).mean()
    assert softmax_loss(logits, labels, "focal", 2.0).item() == pytest.approx(focal.item(), abs=1e-5)


def _embed(angles_deg):
    a = np.radians(angles_deg)
    return torch.tensor(np.stack([np.cos(a), np.sin(a)], 1), dtype=torch.float32)


def test_triplet_batch_hard_on_hand_made_points():
    # identity 0 at 0 and 40 degrees, identity 1 at 30 and 90: hardest positive of anchor 0 is 40 deg away,
    # hardest negative 30 deg away
    x, y = _embed([0, 40, 30, 90]), torch.tensor([0, 0, 1, 1])
    d = lambda deg: 2 - 2 * math.cos(math.radians(deg))  # squared distance of unit vectors
    loss = TripletLoss(margin=0.2, mining="hard")(x, y)
    per_anchor = [max(0, d(40) - d(30) + 0.2), max(0, d(40) - d(10) + 0.2), max(0, d(60) - d(10) + 0.2),
                  max(0, d(60) - d(50) + 0.2)]
    assert loss.item() == pytest.approx(np.mean(per_anchor), abs=1e-5)


def test_triplet_semi_hard_picks_negative_beyond_positive():
    # anchor 0 deg, positive 20 deg; negatives at 10 (harder than positive) and 25 (semi-hard) and 170
    x, y = _embed([0, 20, 10, 25, 170]), torch.tensor([0, 0, 1, 2, 3])
    loss_fn = TripletLoss(margin=0.2, mining="semi-hard")
    loss_fn(x, y)
    d = lambda deg: 2 - 2 * math.cos(math.radians(deg))
    # anchor 0 / positive 20 deg: the negative at 10 deg is closer than the positive (hard, not semi-hard); the
    # semi-hard one is at 25 deg.  anchor 20 / positive 0: negatives are 10, 5 and 150 deg away; only 150 is
    # farther than the positive (20), so it is chosen (loss 0).
    expected = np.mean([max(0, d(20) - d(25) + 0.2), max(0, d(20) - d(150) + 0.2)])
    assert loss_fn(x, y).item() == pytest.approx(expected, abs=1e-5)
    assert 0 < loss_fn.last_active <= 1
