"""What ``evaluate.py`` does: load each model to compare, merge if asked, evaluate, report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from lorarl.evaluation import EvalError, EvalSpec, adapter_base_path, attach_adapter, episode_records, evaluate, format_table, summarize
from lorarl.factory import build_envs
from lorarl.models import load_pretrained_model
from lorarl.rollout import RolloutCollector
from lorarl.schema import EvalConfig
from lorarl.tokenizer import load_tokenizer


def _load(name: str, config: EvalConfig, merge: bool):
    """(tokenizer, model) for one entry: "none" = the base model, else base + adapter."""
    if name == "none":
        if not config.model_path:
            raise EvalError("adapter=none evaluates the base model: give model_path=...")
        base_path = config.model_path
    else:
        if not Path(name).is_dir():
            raise EvalError(f"adapter={name}: no such directory")
        base_path = config.model_path or adapter_base_path(name)
    try:
        tok, base = load_tokenizer(base_path), load_pretrained_model(base_path)
    except OSError as e:
        raise EvalError(f"base model {base_path!r} cannot be loaded ({str(e).splitlines()[0]}); pass model_path=") from None
    return tok, (base if name == "none" else attach_adapter(base, name, merge))


def run_evaluation(config: EvalConfig) -> dict[str, dict]:
    spec = EvalSpec(config.num_samples, config.seed, config.by_task_index)
    envs = build_envs(config.env, min(config.env.envs_per_rank, config.num_samples))
    results = {}
    for name in [config.adapter, *config.compare]:
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
        collector = RolloutCollector(envs, tok, config.algorithm.sampling, config.reward, config.env.system_prompt)
        episodes, tps = evaluate(lm.eval(), collector, spec)
        results[name] = summarize(episodes, tps)
        report = _report_path(name, config)
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"model": name, "config": asdict(config), "metrics": results[name],
                                      "episodes": episode_records(episodes)}, indent=2, default=str))
        _log_tensorboard(config.log_dir, name, results[name])
    if results:
        print(format_table(results))
    return results


def _report_path(name: str, config: EvalConfig) -> Path:
    env = config.env.id.split("/")[-1]
    if config.report:
        return Path(config.report) if len(config.compare) == 0 else Path(config.report) / f"{Path(name).name}_{env}.json"
    return (Path(name) if name != "none" else Path(".")) / f"eval_{env}.json"


def _log_tensorboard(log_dir: str | None, name: str, metrics: dict) -> None:
    if not log_dir:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(log_dir) / Path(name).name)) as writer:
        writer.add_scalar("eval/success_rate", metrics["success_rate"], 0)
        for key, value in metrics["success_rate_by_task_type"].items():
            writer.add_scalar(f"eval/success_rate/{key}", value, 0)
        for key, value in metrics["outcome_mix"].items():
            writer.add_scalar(f"eval/outcome/{key}", value, 0)
        writer.add_scalar("eval/mean_rounds", metrics["mean_rounds"], 0)
