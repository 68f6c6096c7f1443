"""The logprob check: does the training forward reproduce the logprobs recorded at sampling time?

Generation and training compute the same log p(x_t | x_<t) by different routes (a KV cache one
token at a time vs one forward over the whole episode; other kernels, other summation orders), so
they agree only up to float rounding. What the check is for is what rounding cannot do: a policy
sampled from stale weights, or trained on shifted or other tokens, moves *most* action tokens and
by far more. So a run fails on any of (each names itself in the error):

- ``systematic``: the median deviation over the iteration's action tokens is above
  ``tolerance / 10`` (rounding leaves most tokens within a few ulps; measured medians: 1e-6 in
  fp32, docs/metrics.md);
- ``widespread``: more than ``WIDESPREAD_SHARE`` of the action tokens (at least
  ``WIDESPREAD_MIN``) are above ``tolerance``;
- ``far``: one token is above ``FAR * tolerance``;
- ``persistent``: more than one token in 200 above ``tolerance``, ``PERSISTENT`` iterations in a row.

Anything less is logged as a warning (and every iteration's figures go to TensorBoard and
train.log): a few tokens a little over the tolerance are rounding that a long context amplified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger("lorarl.check")

WIDESPREAD_SHARE = 0.05
WIDESPREAD_MIN = 5
FAR = 50.0
PERSISTENT = 3
STRAY_SHARE = 0.005  # one token in 200: what "persistent" counts


class LogprobMismatch(RuntimeError):
    """Generation and training see different weights or inputs."""


@dataclass
class Deviation:
    """How the recomputed logprobs of one iteration's action tokens differ from sampling's."""

    max: float
    median: float
    over: int  # tokens above the tolerance
    tokens: int
    where: str  # the largest deviation: row, token and both values

    def stats(self) -> dict[str, float]:
        return {"check/logprob_max_abs_dev": self.max, "check/logprob_median_abs_dev": self.median,
                "check/logprob_tokens_over": float(self.over)}


def measure(recomputed: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor, tolerance: float) -> Deviation:
    """Deviation of [B, T] logprobs at the tokens ``mask`` selects."""
    if not mask.any():
        return Deviation(0.0, 0.0, 0, 0, "")
    gap = (recomputed.detach().float() - sampled.float()).abs() * mask
    at = gap[mask.bool()]
    row, col = divmod(int(gap.argmax()), gap.shape[1])
    where = (f"largest at row {row}, token {col}: sampled {float(sampled[row, col]):.4f}, "
             f"recomputed {float(recomputed[row, col]):.4f}")
    return Deviation(float(at.max()), float(at.median()), int((at > tolerance).sum()), int(at.numel()), where)


def verdict(d: Deviation, tolerance: float, streak: int) -> str | None:
    """The rule a deviation breaks (``streak``: earlier iterations in a row that had more than one
    token in 200 over), or None."""
    if d.median > tolerance / 10:
        return f"systematic: the median action token is off by {d.median:.3g} (> tolerance/10)"
    if d.over >= WIDESPREAD_MIN and d.over > WIDESPREAD_SHARE * d.tokens:
        return f"widespread: {d.over} of {d.tokens} action tokens are over the tolerance"
    if d.max > FAR * tolerance:
        return f"far: a token is off by {d.max:.3g} (> {FAR:g}x the tolerance)"
    if _stray_share_exceeded(d) and streak + 1 >= PERSISTENT:
        return f"persistent: more than one token in 200 over the tolerance in {PERSISTENT} iterations in a row"
    return None


def _stray_share_exceeded(d: Deviation) -> bool:
    return d.over > max(1, int(STRAY_SHARE * d.tokens))


class LogprobGuard:
    """Applies ``verdict`` iteration after iteration (it remembers the streak)."""

    def __init__(self, tolerance: float):
        self.tolerance, self.streak = tolerance, 0

    def __call__(self, recomputed: torch.Tensor, sampled: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
        d = measure(recomputed, sampled, mask, self.tolerance)
        rule = verdict(d, self.tolerance, self.streak)
        if rule:
            raise LogprobMismatch(
                f"policy logprobs recomputed before the update differ from sampling-time logprobs ({rule}; "
                f"max {d.max:.3g}, median {d.median:.3g}, logprob_tolerance={self.tolerance}; {d.where}): "
                "generation and training see different weights or inputs")
        self.streak = self.streak + 1 if _stray_share_exceeded(d) else 0
        if d.over:
            log.warning("logprob check: %d of %d action tokens over logprob_tolerance=%g (max %.3g, median %.3g; "
                        "%s): float rounding, not a weight or input mismatch; training goes on", d.over, d.tokens,
                        self.tolerance, d.max, d.median, d.where)
        return d.stats()
