"""Episode metrics, defined once: training logs them as ``rollout/<name>``, periodic evaluation as
``eval/<name>``, and ``evaluate.py`` writes them into its report under the same names.
docs/metrics.md defines each one."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import torch
import torch.distributed as dist

from lorarl.rewards import OUTCOMES


def episode_metrics(episodes: Sequence) -> dict[str, float]:
    """Flat scalars: reward_mean, success_rate, turns_mean, episode_tokens_mean,
    response_tokens_mean, outcome/<o> and success_rate/<task type>."""
    n = max(len(episodes), 1)
    outcomes = Counter(e.outcome for e in episodes)
    by_type: dict[str, list[bool]] = defaultdict(list)
    for e in episodes:
        by_type[e.task_type].append(e.outcome == "correct")
    stats = {
        "reward_mean": sum(e.reward for e in episodes) / n,
        "success_rate": outcomes["correct"] / n,
        "turns_mean": sum(e.turns for e in episodes) / n,
        "episode_tokens_mean": sum(len(e.token_ids) for e in episodes) / n,
        "response_tokens_mean": sum(sum(e.action_mask) for e in episodes) / n,
    }
    stats.update({f"outcome/{o}": outcomes[o] / n for o in OUTCOMES})
    stats.update({f"success_rate/{t}": sum(ok) / len(ok) for t, ok in sorted(by_type.items())})
    return stats


def prefixed(prefix: str, stats: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}/{k}": v for k, v in stats.items()}


def per_task_type(stats: dict[str, float]) -> dict[str, float]:
    return {k.split("/", 1)[1]: v for k, v in stats.items() if k.startswith("success_rate/")}


def log_synced(module, stats: dict[str, float], step: int) -> dict[str, float]:
    """Log ``stats`` at ``step``, averaged over ranks with one all-reduce, straight to the
    Lightning module's logger from rank 0; returns what was logged. (Lightning's ``self.log``
    costs about a millisecond per key: with ~40 keys that was a fifth of a small iteration.)
    Per-task-type keys differ between ranks (each draws its own tasks): those are rank 0's."""
    common = sorted(k for k in stats if "success_rate/" not in k)
    values = dict(stats)
    if dist.is_available() and dist.is_initialized() and common:
        t = torch.tensor([float(stats[k]) for k in common], dtype=torch.float64, device=module.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        values.update(zip(common, (t / dist.get_world_size()).tolist()))
    values = {k: float(v) for k, v in values.items()}
    if module.global_rank == 0 and module.logger is not None:
        module.logger.log_metrics(values, step=step)
    return values
