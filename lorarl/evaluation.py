"""Evaluate policies on an env's tasks: the one evaluation path of training and ``evaluate.py``.

``evaluate_policy`` runs episodes with the same collector as training (greedy by default), so
what is evaluated is exactly what is trained; its metrics have the same names as training's
(``metrics.episode_metrics``). ``run_evaluation`` is ``evaluate.py``: load each model to compare
(base + adapter dynamically, merged, or the base alone), evaluate them on the same seeded tasks,
print them side by side and write a JSON report per model.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lorarl.lora import is_lora, merged_for_inference
from lorarl.metrics import episode_metrics, per_task_type
from lorarl.policy import Policy
from lorarl.rewards import OUTCOMES
from lorarl.rollout import Episode, RolloutCollector, stream_seed
from lorarl.stats import mcnemar_exact, paired_bootstrap, pass_at_k, wilson_interval
from lorarl.transcript_page import write_page


class EvalError(ValueError):
    """A user mistake in what to evaluate (missing adapter, wrong base model, ...)."""


@dataclass
class EvalSpec:
    num_samples: int  # tasks (at most len(collector.envs) episodes at a time)
    seed: int  # task seeds: seed + i (kept away from training's seed range)
    by_task_index: bool = False  # walk a task file in order (task i = episode i) instead of seeding
    samples_per_task: int = 1  # episodes per task (pass@k); more than 1 needs sampling, not greedy


def plan_of(spec: EvalSpec) -> list[tuple[int, int]]:
    """(task index, sample number) of each episode an evaluation plays, in order."""
    return [(i, k) for i in range(spec.num_samples) for k in range(spec.samples_per_task)]


def evaluate_policy(policy: Policy, collector: RolloutCollector, spec: EvalSpec, synced_gpus: bool = False,
                    any_rank_active=bool, plan: list[tuple[int, int]] | None = None,
                    on_batch=None) -> tuple[list[Episode], float]:
    """Run ``samples_per_task`` episodes of each of ``num_samples`` tasks (or the episodes of
    ``plan``: (task index, sample number) pairs), ``len(collector.envs)`` at a time, an env that
    finishes one taking the next; (episodes in plan order, generated tokens/s). An episode's
    ``group_id`` is its task, ``sample`` its number. Each episode samples from its own stream,
    seeded from (spec.seed, task, sample): resumed, batched otherwise, or played by another
    model, the same episode meets the same noise. ``on_batch(episodes)`` is called with the
    episodes that ended, as they end (evaluate.py saves them as it goes). Sharded policies pass
    the rank sync (``RLModule.any_rank``) so every rank joins every generation."""
    plan = plan_of(spec) if plan is None else plan
    tasks = [t for t, _ in plan]
    start = time.perf_counter()
    cache = collector.new_prefix_cache()  # the weights do not change during an evaluation: one cache for all
    opts = [{"task_index": i} for i in tasks] if spec.by_task_index else None
    keys = [stream_seed(spec.seed, t, k) for t, k in plan]
    sample_of = dict(zip(keys, (k for _, k in plan)))

    def ended(batch: list[Episode]) -> None:
        for e in batch:  # numbered before on_batch saves them
            e.sample = sample_of[e.noise_key]
        if on_batch is not None:
            on_batch(batch)

    episodes = collector.collect(policy, [spec.seed + i for i in tasks], tasks, synced_gpus, any_rank_active, opts,
                                 cache, ended, keys)
    tokens = sum(sum(e.action_mask) for e in episodes)
    collector.prefill = dict(cache.stats())
    return episodes, tokens / max(time.perf_counter() - start, 1e-9)


def summarize(episodes: list[Episode], tokens_per_s: float) -> dict:
    return {"episodes": len(episodes), "tokens_per_s": tokens_per_s, **episode_metrics(episodes)}


def confidence(episodes: list[Episode]) -> dict:
    """95% Wilson intervals of the success rates (overall and per task type), and pass@1 and
    pass@k over tasks (k = episodes per task) with the Wilson interval of the tasks solved at
    least once."""
    by_task = successes_by_task(episodes)
    k = min(len(v) for v in by_task.values()) if by_task else 1
    wins = sum(e.outcome == "correct" for e in episodes)
    intervals = {"success_rate": wilson_interval(wins, len(episodes))}
    for t in sorted({e.task_type for e in episodes}):
        mine = [e for e in episodes if e.task_type == t]
        intervals[f"success_rate/{t}"] = wilson_interval(sum(e.outcome == "correct" for e in mine), len(mine))
    solved = sum(any(v) for v in by_task.values())
    out = {"intervals": intervals, "k": k, "tasks": len(by_task),
           "pass@1": sum(pass_at_k(len(v), sum(v), 1) for v in by_task.values()) / max(len(by_task), 1)}
    if k > 1:
        out[f"pass@{k}"] = sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / max(len(by_task), 1)
        intervals[f"pass@{k}"] = wilson_interval(solved, len(by_task))
    return out


def successes_by_task(episodes: list[Episode]) -> dict[int, list[bool]]:
    by_task: dict[int, list[bool]] = {}
    for e in episodes:
        by_task.setdefault(e.group_id, []).append(e.outcome == "correct")
    return by_task


def paired(a: list[Episode], b: list[Episode]) -> dict:
    """Model a against model b on the same tasks and seeds. One episode per task: McNemar's exact
    test on the discordant pairs; several: a paired bootstrap over tasks."""
    ta, tb = successes_by_task(a), successes_by_task(b)
    common = sorted(set(ta) & set(tb))
    if all(len(ta[i]) == 1 and len(tb[i]) == 1 for i in common):
        only_a = sum(ta[i][0] and not tb[i][0] for i in common)
        only_b = sum(tb[i][0] and not ta[i][0] for i in common)
        return {"test": "mcnemar_exact", "tasks": len(common), "only_this_correct": only_a, "only_other_correct": only_b,
                "difference": (only_a - only_b) / max(len(common), 1), "p_value": mcnemar_exact(only_a, only_b)}
    rates = lambda t: [sum(t[i]) / len(t[i]) for i in common]  # noqa: E731
    boot = paired_bootstrap(rates(ta), rates(tb))
    return {"test": "paired_bootstrap", "tasks": len(common), **boot}


def episode_records(episodes: list[Episode]) -> list[dict]:
    return [{"task": e.group_id, "sample": e.sample, "seed": e.seed, "task_type": e.task_type, "outcome": e.outcome, "reward": e.reward,
             "turns": e.turns, "prompt_turns": e.prompt_turns, "transcript": e.messages, "verdict": e.verdict}
            for e in episodes]


def episode_of(record: dict) -> Episode:
    """An episode back from its record (transcript and verdict; no token ids)."""
    return Episode(group_id=record["task"], sample=record.get("sample", 0), seed=record["seed"], messages=record["transcript"],
                   outcome=record["outcome"], task_type=record["task_type"], reward=record["reward"],
                   turns=record["turns"], prompt_turns=record["prompt_turns"], verdict=record.get("verdict") or {},
                   done=True)


def format_table(results: dict[str, dict]) -> str:
    """Side-by-side text table: one column per evaluated model; success rates with their 95%
    interval; the paired test of the first model against each other one."""
    names = list(results)

    def rate(r: dict, key: str) -> str:
        lo, hi = r["confidence"]["intervals"].get(key, (float("nan"), float("nan")))
        return f"{r[key]:.3f} [{lo:.2f},{hi:.2f}]" if key in r else "-"

    types = sorted({t for r in results.values() for t in per_task_type(r)})
    rows = [("success_rate (95% CI)", [rate(r, "success_rate") for r in results.values()])]
    rows += [(f"  {t}", [rate(r, f"success_rate/{t}") for r in results.values()]) for t in types]
    k = next(iter(results.values()))["confidence"]["k"]
    if k > 1:
        rows.append((f"pass@{k}", [f"{r['confidence'][f'pass@{k}']:.3f}" for r in results.values()]))
    rows += [(f"outcome/{o}", [f"{r[f'outcome/{o}']:.3f}" for r in results.values()]) for o in OUTCOMES]
    rows += [(key, [f"{r[key]:.3g}" for r in results.values()]) for key in ("reward_mean", "turns_mean", "tokens_per_s")]
    rows += [("paired p-value vs first", [f"{r['paired'][names[0]]['p_value']:.3g}" if names[0] in r.get("paired", {})
                                           else "-" for r in results.values()])] if len(names) > 1 else []
    labels = _column_labels(names)
    width = max(len(label) for label in [*labels.values(), "x" * 22]) + 2
    head = f"{'metric':28s}" + "".join(f"{labels[n]:>{width}s}" for n in names)
    return "\n".join([head] + [f"{k:28s}" + "".join(f"{v:>{width}s}" for v in vals) for k, vals in rows])


def _file_labels(names: list[str]) -> dict[str, str]:
    """Each model's name in its report file: "base", or its directory's name, with parent
    directories ("checkpoints" left out) joined in front where two models would otherwise share
    one (runs/a/checkpoints/iter_6 and runs/b/checkpoints/iter_6: a_iter_6, b_iter_6), so that no
    report overwrites another."""
    return _unique_labels(names, "_", lambda n: 1)


def _column_labels(names: list[str]) -> dict[str, str]:
    """Each model's column in the console table and the transcript page: "base", the directory's
    name, or for a checkpoint its run and directory (runs/x/checkpoints/iter_10: x/iter_10), with more
    parent directories where two models would otherwise share a column
    (runs/s/seed0/grpo/checkpoints/iter_6 and .../seed2/...: seed0/grpo/iter_6, seed2/grpo/iter_6)."""
    return _unique_labels(names, "/", lambda n: 2 if Path(n).parent.name == "checkpoints" else 1)


def _unique_labels(names: list[str], sep: str, first_depth) -> dict[str, str]:
    """Labels of the last ``first_depth(name)`` path parts ("checkpoints" left out; "none" is
    "base"), a part more for every label two names still share."""
    parts = {n: ["base"] if n == "none" else [p for p in reversed(Path(n).resolve().parts) if p not in ("checkpoints", "/")]
             for n in names}
    depth = {n: min(first_depth(n), len(parts[n])) for n in names}

    def labels():
        return {n: sep.join(reversed(parts[n][:depth[n]])) for n in names}

    current = labels()
    while True:
        values = list(current.values())
        clash = [n for n in names if values.count(current[n]) > 1 and depth[n] < len(parts[n])]
        if not clash:
            return current
        for n in clash:
            depth[n] += 1
        current = labels()


def _label(name: str) -> str:
    """A short name for one model (progress lines): its column label when evaluated alone."""
    return _column_labels([name])[name]


# ---- evaluate.py -------------------------------------------------------------------------------

def adapter_base_path(adapter_dir: str | Path, key: str = "adapter") -> str:
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.is_file():
        raise EvalError(f"{key}={adapter_dir!s}: no adapter_config.json there (is it a lorarl checkpoint directory?)")
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

    base_path = _base_path(name, config)
    try:
        tok, base = load_tokenizer(base_path), load_pretrained_model(base_path)
    except (OSError, ValueError) as e:
        raise EvalError(f"base model {base_path!r} cannot be loaded ({str(e).splitlines()[0]}); pass model_path=") from None
    return tok, (base if name == "none" else attach_adapter(base, name, merge))


def _base_path(name: str, config) -> str:
    """Where model ``name``'s base loads from, checked without loading it: each adapter and a
    local base model must be directories (a hub id is left to the loader)."""
    if name == "none":
        base_path = config.model_path or (adapter_base_path(config.adapter) if config.adapter != "none" else None)
        if not base_path:
            raise EvalError("adapter=none evaluates the base model: give model_path=...")
    else:
        key = "adapter" if name == config.adapter else "compare"
        if not Path(name).is_dir():
            raise EvalError(f"{key}={name}: no such directory")
        base_path = config.model_path or adapter_base_path(name, key)
    from lorarl.models import missing_local_path

    if missing_local_path(base_path):
        if config.model_path:
            raise EvalError(f"model_path={base_path}: no such directory")
        raise EvalError(f"base model {base_path!r} (the adapter's base_model_name_or_path): no such directory; "
                        "pass model_path=")
    return base_path


def models_to_evaluate(config) -> list[str]:
    names = [config.adapter, *config.compare]
    if config.baseline and "none" not in names:
        names.append("none")  # the base model, side by side
    return names


def _evaluate_one(name: str, config, spec: EvalSpec, envs) -> tuple[dict, list] | None:
    """Merge and/or evaluate one model on ``envs``: (summary, episodes), or None for mode=merge."""
    from lorarl.environments import make_collector
    from lorarl.models import load_pretrained_model
    from lorarl.tokenizer import load_tokenizer

    if config.mode in ("merge", "both") and name != "none":
        tok, merged = _load(name, config, merge=True)
        merged.save_pretrained(config.merged_path)
        tok.save_pretrained(config.merged_path)
        print(f"merged {name} -> {config.merged_path}")
    if config.mode == "merge":
        return None
    if config.use_merged and name != "none":
        tok, lm = load_tokenizer(config.merged_path), load_pretrained_model(config.merged_path)
    else:
        tok, lm = _load(name, config, merge=False)
    collector = make_collector(config.env, envs, tok, config.algorithm.sampling, config.reward)
    policy = Policy(lm.eval(), with_value_head=False, keep_reference=False).eval()
    progress = Progress(_report_path(name, config), name, config)
    done, todo = progress.resume(plan_of(spec))
    # Our decoding samples each episode from its own stream (evaluate_policy); transformers'
    # generate (sampling.cache=static) samples the batch from torch's: seeded, every model starts it alike.
    torch.manual_seed(config.seed)
    merge = config.algorithm.sampling.merge_adapter is not False and is_lora(policy.lm)
    try:
        with merged_for_inference(policy.lm) if merge else contextlib.nullcontext():
            played, tps = evaluate_policy(policy, collector, spec, plan=todo, on_batch=progress.add)
    except KeyboardInterrupt:
        progress.interrupted(spec)
        raise
    finally:
        collector.close(close_envs=False)  # the next model plays the same envs
    episodes = sorted(done + played, key=lambda e: (e.group_id, e.sample))
    return {**summarize(episodes, tps), **collector.prefill, "confidence": confidence(episodes)}, episodes


class Progress:
    """An evaluation's episodes saved as they finish (``<report>.partial.jsonl``: a line per
    episode after a header naming the model, env and seeds), so that a crash or Ctrl-C keeps them
    and the same command continues where it stopped; removed once the report is written. Prints
    progress with an estimate of the time left."""

    def __init__(self, report: Path, name: str, config):
        self.path = report.with_name(report.stem + ".partial.jsonl")
        self.name, self.report = name, report
        self.header = {"model": name, "env": config.env.id, "env_kwargs": config.env.kwargs, "seed": config.seed,
                       "by_task_index": config.by_task_index, "greedy": config.algorithm.sampling.greedy}
        self.records: list[dict] = []
        self.total, self.start, self.count = 0, time.monotonic(), 0

    def resume(self, plan: list[tuple[int, int]]) -> tuple[list[Episode], list[tuple[int, int]]]:
        """(episodes finished by an interrupted run of the same evaluation, the (task, sample)
        pairs left)."""
        self.total = len(plan)
        if self.path.is_file():
            lines = self.path.read_text().splitlines()
            try:
                same = json.loads(lines[0]) == json.loads(json.dumps(self.header, default=str))
                self.records = [json.loads(ln) for ln in lines[1:] if ln.strip()] if same else []
            except (ValueError, IndexError):
                self.records = []
        left = list(plan)
        for r in self.records:
            # a record of an older lorarl has no sample number: it stands for any sample of its task
            match = (r["task"], r["sample"]) if "sample" in r else next((p for p in left if p[0] == r["task"]), None)
            if match in left:
                left.remove(match)
        if self.records:
            print(f"{_label(self.name)}: continuing an interrupted evaluation: {len(self.records)} of {self.total} "
                  f"episodes done ({self.path})", file=sys.stderr)
        self._write()
        return [episode_of(r) for r in self.records], left

    def add(self, batch: list[Episode]) -> None:
        new = episode_records(batch)
        self.records += new
        with self.path.open("a") as f:
            f.writelines(json.dumps(r, default=str) + "\n" for r in new)
        self.count += len(batch)
        done, elapsed = len(self.records), time.monotonic() - self.start
        eta = elapsed / self.count * (self.total - done) if self.count else float("nan")
        print(f"{_label(self.name)}: {done}/{self.total} episodes, {elapsed / 60:.1f} min, about {eta / 60:.1f} min left",
              file=sys.stderr, flush=True)

    def interrupted(self, spec: EvalSpec) -> None:
        """Ctrl-C: a readable report of what finished, marked partial."""
        episodes = [episode_of(r) for r in self.records]
        if episodes:
            partial = self.report.with_name(self.report.stem + ".partial.json")
            partial.write_text(json.dumps({"model": self.name, "partial": True, "episodes_done": len(episodes),
                                           "episodes_planned": self.total,
                                           "metrics": summarize(episodes, float("nan")),
                                           "confidence": confidence(episodes), "episodes": self.records},
                                          indent=2, default=str))
            print(f"\ninterrupted: {len(episodes)} of {self.total} episodes of {_label(self.name)} kept in {partial}; "
                  "run the same command to continue", file=sys.stderr)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)
        self.report.with_name(self.report.stem + ".partial.json").unlink(missing_ok=True)

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("".join(json.dumps(r, default=str) + "\n" for r in [self.header, *self.records]))


def run_evaluation(config) -> dict[str, dict]:
    """``evaluate.py``: evaluate (or merge) each model on the same seeded tasks; reports + table."""
    from lorarl.environments import build_envs

    spec = EvalSpec(config.num_samples, config.seed, config.by_task_index, config.num_samples_per_task)
    models = models_to_evaluate(config)
    for name in models:  # every path checked before the first model plays
        _base_path(name, config)
    with contextlib.ExitStack() as held:
        for name in models if config.mode != "merge" else []:
            report = _report_path(name, config)
            _writable(report.parent)
            held.enter_context(report_lock(report))
        return _play_and_report(config, spec, models)


@contextlib.contextmanager
def report_lock(report: Path):
    """Held while an evaluation writes ``report``: a second evaluate.py on the same report would
    append the same episodes to its ``.partial.jsonl`` a second time and overwrite the report; it
    stops with a one-line error instead. An flock: the OS releases it when the process dies."""
    import fcntl
    import os

    path = report.with_name(report.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EvalError(f"report={report}: another evaluate.py is writing this report now; wait for it to end, "
                            "or give another report=") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed the file between our open and our lock: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _play_and_report(config, spec: EvalSpec, models: list[str]) -> dict[str, dict]:
    from lorarl.environments import build_envs

    envs = build_envs(config.env, min(config.batch_size, config.num_samples * config.num_samples_per_task))
    results, played = {}, {}
    try:
        for name in models:
            got = _evaluate_one(name, config, spec, envs)
            if got is not None:
                results[name], played[name] = got
    finally:
        for env in envs:
            env.close()
    names = list(results)
    for name in names[1:]:  # the first model (the adapter) against each other, on the same tasks
        results[name]["paired"] = {names[0]: paired(played[names[0]], played[name])}
        results[names[0]].setdefault("paired", {})[name] = paired(played[names[0]], played[name])
    for name in names:
        report = _report_path(name, config)
        report.parent.mkdir(parents=True, exist_ok=True)
        metrics = {k: v for k, v in results[name].items() if k not in ("confidence", "paired")}
        report.write_text(json.dumps({"model": name, "config": asdict(config), "metrics": metrics,
                                      "confidence": results[name]["confidence"], "paired": results[name].get("paired", {}),
                                      "episodes": episode_records(played[name])}, indent=2, default=str))
        _log_tensorboard(config.log_dir, name, metrics)
        Progress(report, name, config).finish()
    if results:
        print(format_table(results))
        page = _report_path(names[0], config).with_suffix(".html")
        write_page(page, played, f"lorarl evaluation: {config.env.id}", _column_labels(names),
                   _summary_rows(results))
        print(f"transcripts: {page}")
    return results


def _summary_rows(results: dict[str, dict]) -> list[tuple[str, list[str]]]:
    names = list(results)
    rows = []
    for key in ("success_rate", *sorted({k for r in results.values() for k in r["confidence"]["intervals"]} - {"success_rate"})):
        cells = []
        for r in results.values():
            lo, hi = r["confidence"]["intervals"].get(key, (float("nan"), float("nan")))
            value = r.get(key, r["confidence"].get(key.split("/")[0] if key.startswith("pass@") else key, float("nan")))
            cells.append(f"{value:.3f} [{lo:.2f}, {hi:.2f}]")
        rows.append((f"{key} (95% CI)", cells))
    if len(names) > 1:
        rows.append((f"paired test vs {_column_labels(names)[names[0]]}", [
            "-" if n == names[0] else f"{r['paired'][names[0]]['test']}: p={r['paired'][names[0]]['p_value']:.3g}"
            for n, r in results.items()]))
    return rows


def _writable(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise EvalError(f"report: cannot write in {directory} ({e.strerror or e})") from None


def _report_path(name: str, config) -> Path:
    env = config.env.id.split("/")[-1]
    label = _file_labels(models_to_evaluate(config)).get(name, "base" if name == "none" else Path(name).name)
    if config.report:  # a file for one model; a directory (or a path ending in /) holds one per model
        as_dir = Path(config.report).is_dir() or config.report.endswith("/") or len(models_to_evaluate(config)) > 1
        return Path(config.report) / f"{label}_{env}.json" if as_dir else Path(config.report)
    if name == "none":  # next to the adapter it is compared with, else next to a local base model
        local = config.model_path if config.model_path and Path(config.model_path).is_dir() else "."
        return Path(config.adapter if config.adapter != "none" else local) / f"eval_{env}_base.json"
    return Path(name) / f"eval_{env}.json"


def _log_tensorboard(log_dir: str | None, name: str, metrics: dict) -> None:
    if not log_dir:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(log_dir) / ("base" if name == "none" else Path(name).name))) as writer:
        for key, value in metrics.items():
            if key != "episodes":
                writer.add_scalar(f"eval/{key}", value, 0)
