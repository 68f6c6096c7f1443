"""Episode metrics, defined once: training logs them as ``rollout/<name>``, periodic evaluation as
``eval/<name>``, and ``evaluate.py`` writes them into its report under the same names.
docs/metrics.md defines each one."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

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


def log_synced(module, stats: dict[str, float], batch_size: int, on_step: bool) -> None:
    """Log averaged over ranks. Per-task-type keys differ between ranks (each draws its own tasks),
    and a synced log needs the same keys everywhere: those are logged from rank 0 alone."""
    common = {k: v for k, v in stats.items() if "success_rate/" not in k}
    module.log_dict(common, on_step=on_step, on_epoch=not on_step, sync_dist=True, batch_size=batch_size)
    per_type = {k: v for k, v in stats.items() if "success_rate/" in k}
    if per_type:
        module.log_dict(per_type, on_step=on_step, on_epoch=not on_step, rank_zero_only=True, batch_size=batch_size)
