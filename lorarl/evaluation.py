"""Evaluate policies on an env's tasks: the one evaluation path of training and ``evaluate.py``.

``evaluate_policy`` runs episodes with the same collector as training (greedy by default), so
what is evaluated is exactly what is trained; its metrics have the same names as training's
(``metrics.episode_metrics``). ``run_evaluation`` is ``evaluate.py``: load each model to compare
(base + adapter dynamically, merged, or the base alone), evaluate them on the same seeded tasks,
print them side by side and write a JSON report per model.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lorarl.metrics import episode_metrics, per_task_type
from lorarl.policy import Policy
from lorarl.rewards import OUTCOMES
from lorarl.rollout import Episode, RolloutCollector


class EvalError(ValueError):
    """A user mistake in what to evaluate (missing adapter, wrong base model, ...)."""


@dataclass
class EvalSpec:
    num_samples: int  # episodes (generated len(collector.envs) at a time)
    seed: int  # task seeds: seed + i (kept away from training's seed range)
    by_task_index: bool = False  # walk a task file in order (task i = episode i) instead of seeding


def evaluate_policy(policy: Policy, collector: RolloutCollector, spec: EvalSpec, synced_gpus: bool = False,
                    any_rank_active=bool) -> tuple[list[Episode], float]:
    """Run spec.num_samples episodes; (episodes, generated tokens/s). Sharded policies pass the
    rank sync (``RLModule.any_rank``) so every rank joins every generation."""
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
    return {"episodes": len(episodes), "tokens_per_s": tokens_per_s, **episode_metrics(episodes)}


def episode_records(episodes: list[Episode]) -> list[dict]:
    return [{"seed": e.seed, "task_type": e.task_type, "outcome": e.outcome, "reward": e.reward,
             "turns": e.turns, "prompt_turns": e.prompt_turns, "transcript": e.messages} for e in episodes]


def format_table(results: dict[str, dict]) -> str:
    """Side-by-side text table: one column per evaluated model."""
    names = list(results)
    types = sorted({t for r in results.values() for t in per_task_type(r)})
    rows = [("success_rate", [f"{r['success_rate']:.3f}" for r in results.values()])]
    rows += [(f"  {t}", [f"{per_task_type(r).get(t, float('nan')):.3f}" for r in results.values()]) for t in types]
    rows += [(f"outcome/{o}", [f"{r[f'outcome/{o}']:.3f}" for r in results.values()]) for o in OUTCOMES]
    rows += [(k, [f"{r[k]:.3g}" for r in results.values()]) for k in ("reward_mean", "turns_mean", "tokens_per_s")]
    width = max(len(n) for n in names + ["x" * 10]) + 2
    head = f"{'metric':28s}" + "".join(f"{n[-width + 2:]:>{width}s}" for n in names)
    return "\n".join([head] + [f"{k:28s}" + "".join(f"{v:>{width}s}" for v in vals) for k, vals in rows])


# ---- evaluate.py -------------------------------------------------------------------------------

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


def run_config_of(adapter: str | None) -> Path | None:
    """The composed config of the training run an adapter comes from (runs/<run>/.hydra/config.yaml)."""
    if not adapter or adapter == "none":
        return None
    for parent in Path(adapter).resolve().parents[:3]:
        if (parent / ".hydra" / "config.yaml").is_file():
            return parent / ".hydra" / "config.yaml"
    return None


def _load(name: str, config, merge: bool):
    """(tokenizer, model) for one entry: "none" = the base model, else base + adapter."""
    from lorarl.models import load_pretrained_model
    from lorarl.tokenizer import load_tokenizer

    if name == "none":
        base_path = config.model_path or (adapter_base_path(config.adapter) if config.adapter != "none" else None)
        if not base_path:
            raise EvalError("adapter=none evaluates the base model: give model_path=...")
    else:
        if not Path(name).is_dir():
            raise EvalError(f"adapter={name}: no such directory")
        base_path = config.model_path or adapter_base_path(name)
    try:
        tok, base = load_tokenizer(base_path), load_pretrained_model(base_path)
    except (OSError, ValueError) as e:
        raise EvalError(f"base model {base_path!r} cannot be loaded ({str(e).splitlines()[0]}); pass model_path=") from None
    return tok, (base if name == "none" else attach_adapter(base, name, merge))


def models_to_evaluate(config) -> list[str]:
    names = [config.adapter, *config.compare]
    if config.baseline and "none" not in names:
        names.append("none")  # the base model, side by side
    return names


def run_evaluation(config) -> dict[str, dict]:
    """``evaluate.py``: evaluate (or merge) each model on the same seeded tasks; reports + table."""
    from lorarl.environments import build_envs, make_collector
    from lorarl.models import load_pretrained_model
    from lorarl.tokenizer import load_tokenizer

    spec = EvalSpec(config.num_samples, config.seed, config.by_task_index)
    envs = build_envs(config.env, min(config.batch_size, config.num_samples))
    results = {}
    for name in models_to_evaluate(config):
        if config.mode in ("merge", "both") and name != "none":
            tok, merged = _load(name, config, merge=True)
            merged.save_pretrained(config.merged_path)
            tok.save_pretrained(config.merged_path)
            print(f"merged {name} -> {config.merged_path}")
        if config.mode == "merge":
            continue
        if config.use_merged and name != "none":
            tok, lm = load_tokenizer(config.merged_path), load_pretrained_model(config.merged_path)
        else:
            tok, lm = _load(name, config, merge=False)
        collector = make_collector(config.env, envs, tok, config.algorithm.sampling, config.reward)
        policy = Policy(lm.eval(), with_value_head=False, keep_reference=False).eval()
        episodes, tps = evaluate_policy(policy, collector, spec)
        results[name] = summarize(episodes, tps)
        report = _report_path(name, config)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"model": name, "config": asdict(config), "metrics": results[name],
                                      "episodes": episode_records(episodes)}, indent=2, default=str))
        _log_tensorboard(config.log_dir, name, results[name])
    for env in envs:
        env.close()
    if results:
        print(format_table(results))
    return results


def _report_path(name: str, config) -> Path:
    env = config.env.id.split("/")[-1]
    label = "base" if name == "none" else Path(name).name
    if config.report:
        return Path(config.report) if len(models_to_evaluate(config)) == 1 else Path(config.report) / f"{label}_{env}.json"
    if name == "none":
        return Path(config.adapter if config.adapter != "none" else ".") / f"eval_{env}_base.json"
    return Path(name) / f"eval_{env}.json"


def _log_tensorboard(log_dir: str | None, name: str, metrics: dict) -> None:
    if not log_dir:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(log_dir) / ("base" if name == "none" else Path(name).name))) as writer:
        for key, value in metrics.items():
            if key != "episodes":
                writer.add_scalar(f"eval/{key}", value, 0)
