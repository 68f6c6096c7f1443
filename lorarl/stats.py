"""How sure an evaluation is: pure functions over success counts.

- ``wilson_interval``: a 95% interval for a success rate (Wilson's score interval: unlike the
  normal approximation it stays inside [0, 1] and is sound at 0 or n successes and small n).
- ``pass_at_k``: the unbiased estimator of Chen et al. (2021), 1 - C(n - c, k) / C(n, k), for a
  task sampled n times with c successes.
- ``mcnemar_exact``: the paired test of two models on the same tasks (one sample each): only the
  discordant pairs count; the exact two-sided binomial p-value.
- ``paired_bootstrap``: with several samples per task, resample tasks (the unit the pairs share)
  and read the two-sided p-value and a 95% interval of the difference in success rate.

torchmetrics has none of these (its binary metrics give point estimates), so they are written
here, each checked against hand-computed numbers in tests/unit/test_stats.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the score interval for successes/n; (0, 1) when n is 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Probability that at least one of k samples drawn without replacement from n (c of them
    correct) is correct."""
    if not 0 < k <= n:
        raise ValueError(f"pass@k needs 0 < k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact p-value: ``only_a`` pairs where A succeeded and B failed, ``only_b`` the
    reverse; under H0 each discordant pair goes either way with probability 1/2."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 10_000, seed: int = 0) -> dict:
    """``a[i]``, ``b[i]``: success rates of the two models on task i. Resamples tasks with
    replacement; returns the observed difference (a - b), its 95% interval, and the two-sided
    p-value (how often a resampled difference, centred on the observed one, is at least as far
    from 0 as the observed one)."""
    if len(a) != len(b) or not a:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists")
    diffs = [x - y for x, y in zip(a, b)]
    observed = sum(diffs) / len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(resamples))
    extreme = sum(abs(m - observed) >= abs(observed) for m in means) if observed else resamples
    return {"difference": observed, "ci95": (means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]),
            "p_value": min(1.0, (extreme + 1) / (resamples + 1))}
