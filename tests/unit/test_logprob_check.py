"""The logprob check's failure policy, on hand-made deviations: what float noise produces passes
(with a warning), what staleness or shifted inputs produce fails, naming the rule."""

import pytest
import torch

from lorarl.logprob_check import LogprobGuard, LogprobMismatch, measure, verdict

TOL = 1e-3


def _noise(rows=16, cols=100, seed=0, scale=1.5e-6):
    g = torch.Generator().manual_seed(seed)
    sampled = -torch.rand(rows, cols, generator=g) * 8
    return sampled, sampled + torch.randn(rows, cols, generator=g) * scale, torch.ones(rows, cols, dtype=torch.bool)


def test_measure_reports_the_largest_deviation_where_it_is():
    sampled = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -9.0]])
    recomputed = torch.tensor([[0.0, -1.0004, -2.0], [5.0, -0.5, -8.0]])  # row 1 token 0 is no action
    mask = torch.tensor([[False, True, True], [False, True, True]])
    d = measure(recomputed, sampled, mask, TOL)
    assert d.max == pytest.approx(1.0) and d.over == 1 and d.tokens == 4
    assert d.median == pytest.approx(0.0, abs=1e-6)  # torch's lower median of [0, 0, 0.0004, 1]
    assert "row 1, token 2: sampled -9.0000, recomputed -8.0000" in d.where
    assert measure(recomputed, sampled, torch.zeros_like(mask), TOL).tokens == 0


def test_the_reported_noise_passes_with_a_warning(caplog):
    # the runs: 14 of 1,181 action tokens over 1e-3, the largest 1.95e-3, the rest at rounding level
    sampled, recomputed, mask = _noise(rows=1, cols=1181)
    recomputed[0, 500:514] = sampled[0, 500:514] + 1.95e-3
    guard = LogprobGuard(TOL)
    stats = guard(recomputed, sampled, mask)
    assert stats["check/logprob_tokens_over"] == 14 and stats["check/logprob_max_abs_dev"] == pytest.approx(1.95e-3, rel=1e-3)
    assert "14 of 1181 action tokens over" in caplog.text and "training goes on" in caplog.text


@pytest.mark.parametrize("shift, rule", [
    (lambda s, r: r + 0.5, "systematic"),                     # stale weights: every token moves
    (lambda s, r: torch.roll(r, 1, dims=1), "systematic"),      # inputs shifted by one token
    (lambda s, r: r + 2e-4, "systematic"),                      # one optimizer step behind: small but everywhere
])
def test_staleness_fails_at_once_naming_the_rule(shift, rule):
    sampled, recomputed, mask = _noise()
    with pytest.raises(LogprobMismatch, match=rule):
        LogprobGuard(TOL)(shift(sampled, recomputed), sampled, mask)


def test_a_widespread_or_far_deviation_fails():
    sampled, recomputed, mask = _noise()
    wide = recomputed.clone()
    wide[:, :6] += 2e-3  # 96 of 1,600 tokens (6%) over
    assert verdict(measure(wide, sampled, mask, TOL), TOL, 0).startswith("widespread")
    far = recomputed.clone()
    far[3, 7] += 0.06  # one token 60x the tolerance: no rounding does that
    assert verdict(measure(far, sampled, mask, TOL), TOL, 0).startswith("far")


def test_noise_over_the_tolerance_in_several_iterations_in_a_row_fails():
    sampled, recomputed, mask = _noise()
    recomputed[0, :9] += 2e-3  # 9 of 1,600: more than one in 200, less than 5%
    guard = LogprobGuard(TOL)
    guard(recomputed, sampled, mask)
    guard(recomputed, sampled, mask)
    with pytest.raises(LogprobMismatch, match="persistent"):
        guard(recomputed, sampled, mask)
    quiet = LogprobGuard(TOL)  # a clean iteration in between resets the streak
    for clean in (False, True, False, False):
        quiet(recomputed if not clean else _noise()[1], sampled, mask)
