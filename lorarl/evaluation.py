"""Evaluate a policy (base model, base + adapter, or merged) on an env's tasks and report.

The same collector as training runs the episodes (greedy by default), so what is evaluated is
exactly what is trained. Metrics are aggregated with torchmetrics.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from torchmetrics.aggregation import MeanMetric

from lorarl.policy import Policy
from lorarl.rewards import OUTCOMES
from lorarl.rollout import Episode, RolloutCollector


class EvalError(ValueError):
    """A user mistake in what to evaluate (missing adapter, wrong base model, ...)."""


@dataclass
class EvalSpec:
    num_samples: int = 32  # episodes (generated len(collector.envs) at a time)
    seed: int = 12345  # task seeds: seed + i (kept away from training's seed range by default)
    by_task_index: bool = False  # walk a task file in order (task i = episode i) instead of seeding


def adapter_base_path(adapter_dir: str | Path) -> str:
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.is_file():
        raise EvalError(f"adapter={adapter_dir!s}: no adapter_config.json there (is it a lorarl checkpoint directory?)")
    return json.loads(cfg.read_text())["base_model_name_or_path"]


def attach_adapter(base: torch.nn.Module, adapter_dir: str | Path, merge: bool) -> torch.nn.Module:
    """Base + adapter loaded dynamically (PEFT), or merged into plain weights."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base, str(adapter_dir))
    except RuntimeError as e:
        if "size mismatch" in str(e):
            first = next(ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln)
            raise EvalError(f"adapter={adapter_dir!s} does not fit this base model ({first[:160]})") from None
        raise
    return model.merge_and_unload() if merge else model


def evaluate(lm: torch.nn.Module, collector: RolloutCollector, spec: EvalSpec) -> tuple[list[Episode], float]:
    """Run spec.num_samples episodes with a bare LM; returns (episodes, generated tokens/s)."""
    return evaluate_policy(Policy(lm, with_value_head=False, keep_reference=False).eval(), collector, spec)


def evaluate_policy(policy: Policy, collector: RolloutCollector, spec: EvalSpec, synced_gpus: bool = False,
                    any_rank_active=bool) -> tuple[list[Episode], float]:
    """Same as ``evaluate`` for a training Policy (sharded ones too: pass the rank sync)."""
    n_envs = len(collector.envs)
    episodes, tokens, start = [], 0, time.perf_counter()
    for first in range(0, spec.num_samples, n_envs):
        ids = list(range(first, min(first + n_envs, spec.num_samples)))
        opts = [{"task_index": i} for i in ids] if spec.by_task_index else None
        batch = collector.collect(policy, [spec.seed + i for i in ids], ids, synced_gpus, any_rank_active, opts)
        episodes += batch
        tokens += sum(sum(e.action_mask) for e in batch)
    return episodes, tokens / max(time.perf_counter() - start, 1e-9)


def summarize(episodes: list[Episode], tokens_per_s: float) -> dict:
    """Success per task type and overall, outcome mix, mean rounds and reward (torchmetrics)."""
    overall, reward, rounds = MeanMetric(), MeanMetric(), MeanMetric()
    per_type: dict[str, MeanMetric] = defaultdict(MeanMetric)
    outcome: dict[str, MeanMetric] = {o: MeanMetric() for o in OUTCOMES}
    for e in episodes:
        ok = float(e.outcome == "correct")
        overall.update(ok)
        per_type[e.task_type].update(ok)
        reward.update(e.reward)
        rounds.update(e.turns)
        for o, m in outcome.items():
            m.update(float(e.outcome == o))
    return {
        "episodes": len(episodes),
        "success_rate": float(overall.compute()),
        "success_rate_by_task_type": {k: float(m.compute()) for k, m in sorted(per_type.items())},
        "episodes_by_task_type": {k: sum(e.task_type == k for e in episodes) for k in sorted(per_type)},
        "outcome_mix": {o: float(m.compute()) for o, m in outcome.items()},
        "mean_reward": float(reward.compute()),
        "mean_rounds": float(rounds.compute()),
        "tokens_per_s": tokens_per_s,
    }


def episode_records(episodes: list[Episode]) -> list[dict]:
    return [{"seed": e.seed, "task_type": e.task_type, "outcome": e.outcome, "reward": e.reward,
             "rounds": e.turns, "transcript": e.messages} for e in episodes]


def format_table(results: dict[str, dict]) -> str:
    """Side-by-side text table: one column per evaluated model."""
    names = list(results)
    types = sorted({t for r in results.values() for t in r["success_rate_by_task_type"]})
    rows = [("success (overall)", [f"{r['success_rate']:.3f}" for r in results.values()])]
    rows += [(f"  {t}", [f"{r['success_rate_by_task_type'].get(t, float('nan')):.3f}" for r in results.values()]) for t in types]
    rows += [(f"outcome {o}", [f"{r['outcome_mix'][o]:.3f}" for r in results.values()]) for o in OUTCOMES]
    rows += [(k, [f"{r[k]:.3g}" for r in results.values()]) for k in ("mean_reward", "mean_rounds", "tokens_per_s")]
    width = max(len(n) for n in names + ["x" * 10]) + 2
    head = f"{'metric':28s}" + "".join(f"{n[-width + 2:]:>{width}s}" for n in names)
    return "\n".join([head] + [f"{k:28s}" + "".join(f"{v:>{width}s}" for v in vals) for k, vals in rows])
