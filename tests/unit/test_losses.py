import math

import pytest
import torch

from lorarl import losses


def t(*x):
    return torch.tensor([list(x)], dtype=torch.float32)


def test_clip_caps_positive_advantage_at_one_plus_eps():
    # log-ratio 1 -> ratio e, clipped to 1.2 with eps 0.2; advantage 1 -> loss -1.2
    loss, st = losses.clipped_policy_loss(t(1.0), t(0.0), t(1.0), torch.tensor([[True]]), clip_eps=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert st["clip_frac"].item() == 1.0
    assert st["approx_kl"].item() == pytest.approx(math.exp(-1) - 1 + 1)  # k3 of KL(old||new)


def test_negative_advantage_takes_unclipped_large_ratio_and_dual_clip_bounds_it():
    # ratio e, A = -1: max(-A*e, -A*1.2) = e; dual clip c=2 bounds it to -c*A = 2
    loss, _ = losses.clipped_policy_loss(t(1.0), t(0.0), t(-1.0), torch.tensor([[True]]), 0.2)
    assert loss.item() == pytest.approx(math.e)
    loss, _ = losses.clipped_policy_loss(t(1.0), t(0.0), t(-1.0), torch.tensor([[True]]), 0.2, dual_clip=2.0)
    assert loss.item() == pytest.approx(2.0)


def test_small_ratio_positive_advantage_is_unclipped_and_mask_excludes_tokens():
    # tokens: ratio 1 (A=2) counted, ratio e (A=100) masked out -> loss = -2
    loss, st = losses.clipped_policy_loss(t(0.0, 1.0), t(0.0, 0.0), t(2.0, 100.0), torch.tensor([[True, False]]), 0.2)
    assert loss.item() == pytest.approx(-2.0)
    assert st["clip_frac"].item() == 0.0


def test_value_loss_with_and_without_clip():
    # V=3, old V=1, R=0: unclipped 0.5*9 = 4.5; clipped V -> 1.2: max(9, 1.44) -> 4.5
    mask = torch.tensor([[True]])
    assert losses.value_loss(t(3.0), t(1.0), t(0.0), mask)[0].item() == pytest.approx(4.5)
    assert losses.value_loss(t(3.0), t(1.0), t(0.0), mask, 0.2)[0].item() == pytest.approx(4.5)
    # V=0, old V=1, R=0: unclipped 0; clipped V -> 0.8: 0.5*0.64 = 0.32 (clipping is pessimistic)
    assert losses.value_loss(t(0.0), t(1.0), t(0.0), mask, 0.2)[0].item() == pytest.approx(0.32)


@pytest.mark.parametrize("est,expected", [("k1", 1.0), ("k2", 0.5), ("k3", math.exp(-1) - 1 + 1)])
def test_kl_estimators(est, expected):
    # log p = 0, log q = -1: log q/p = -1
    kl = losses.kl_divergence(t(0.0), t(-1.0), est)
    assert kl.item() == pytest.approx(expected)


def test_kl_unknown_estimator():
    with pytest.raises(ValueError, match="k4"):
        losses.kl_divergence(t(0.0), t(0.0), "k4")


def test_entropy_bonus_is_negative_mean_entropy():
    loss, st = losses.entropy_bonus(t(1.0, 3.0, 100.0), torch.tensor([[True, True, False]]))
    assert loss.item() == pytest.approx(-2.0)
    assert st["entropy"].item() == pytest.approx(2.0)


def test_explained_variance():
    mask = torch.tensor([[True, True, True]])
    r = t(1.0, 2.0, 3.0)
    assert losses.explained_variance(r, r, mask).item() == pytest.approx(1.0)
    assert losses.explained_variance(t(2.0, 2.0, 2.0), r, mask).item() == pytest.approx(0.0)
    same = t(1.0, 1.0, 1.0)  # every return equal: nothing to explain, 0 (not -1e6)
    assert losses.explained_variance(t(0.0, 5.0, -3.0), same, mask).item() == 0.0
