"""Does SFT on recovery transcripts teach a real model what to do after a mistake? SmolLM2-135M-
Instruct fine-tuned on oracle transcripts only ever saw first tries that work; on held-out tasks it
then repeats a failing statement instead of fixing it. Recovery transcripts (docs/transcripts.md,
``make_transcripts.py --recover-from``) show the oracle finishing from the states the model's own
mistakes left.

    python bench/recovery_sft.py --env db_bench --sft-adapter runs/db9/seed0/sft/checkpoints/iter_000001 \\
        --transcripts runs/db9/seed0/transcripts.jsonl --work runs/recovery_db

1. The SFT adapter plays ``--train-tasks`` training tasks (greedy; seeds from 20,000: neither the
   held-out range, 1e9 + i, nor the transcripts' own).
2. Its failed episodes become recovery transcripts (``--points`` takeover turns per episode). The
   control, so that more data is not mistaken for recovery: the oracle's own transcripts of the
   same tasks, as many (the oracle from the first turn, no mistake in context).
3. Two SFT runs from the base model with the adapter's recipe (the env's experiment preset): the
   original transcripts plus the recovery ones ("+ recovery"), and plus the control ones
   ("+ more oracle").
4. Held-out: the same generated tasks as bench/real_learning.py, greedy; success with Wilson
   intervals, McNemar against the SFT adapter on the same tasks, and how often a reply repeats the
   one before it (the failure this is about). ``--samples K`` adds K sampled episodes per task
   and a paired bootstrap over tasks.

Every step is a train.py / evaluate.py / make_transcripts.py command, its output kept under
``--work``; a rerun skips what finished. Appends the table to bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.common import record, table  # noqa: E402
from lorarl.transcripts import agent_replies  # noqa: E402
from bench.real_learning import (PRESETS, bootstrap_cells, evaluate, mcnemar_cell, newest, sampled, sh,  # noqa: E402
                                 task_rates)

TRAIN_SEED = 20_000  # the adapter's training-task episodes: far from the held-out 1e9 + i


def repeat_rate(report: dict) -> tuple[float, int]:
    """Share of the agent's replies (after its first, in each episode) that repeat the reply just
    before them word for word; and how many replies that counts over."""
    repeats = total = 0
    for ep in report["episodes"]:
        replies = agent_replies(ep)
        repeats += sum(a == b for a, b in zip(replies, replies[1:]))
        total += max(len(replies) - 1, 0)
    return repeats / max(total, 1), total


def control_transcripts(recovery: list[dict], report: dict) -> list[dict]:
    """The oracle's plain transcripts of the tasks the recovery transcripts came from, one per
    recovery transcript: the same tasks and as many episodes, without a mistake in context."""
    from lorarl.transcripts import oracle_transcripts

    env = report["config"]["env"]
    seeds = [r["seed"] for r in recovery]
    plain = {r["seed"]: r for r in oracle_transcripts(env["id"], env.get("kwargs") or {}, sorted(set(seeds)))}
    return [plain[s] for s in seeds if s in plain]


def sft(name: str, data: Path, args, work: Path) -> str:
    run = work / name
    if not list((run / "checkpoints").glob("iter_*")):
        sh([sys.executable, "train.py", f"experiment={PRESETS[args.env]}", "trainer.seed=0", "trainer.progress_bar=false",
            "stage=sft", f"sft.data={data}", f"hydra.run.dir={run}", *args.overrides], work / f"{name}.log")
    return newest(run)


def held_out(adapter: str, name: str, args, work: Path) -> dict:
    out = {"gen": evaluate(adapter, work / f"eval/{name}_gen.json", args.env, Path(), args, False)}
    if args.samples:
        out["k"] = sampled(adapter, work / "eval", name, args.env, Path(), args)
    return out


def rows(results: dict[str, dict], against: str) -> list[dict]:
    """A row per model: success, Wilson interval, repeat rate; paired tests against ``against``."""
    from lorarl.stats import wilson_interval

    control = results[against]
    out = []
    for name, res in results.items():
        eps = res["gen"]["episodes"]
        wins = sum(e["outcome"] == "correct" for e in eps)
        lo, hi = wilson_interval(wins, len(eps))
        rate, n = repeat_rate(res["gen"])
        row = {"model": name, "held-out success (greedy)": f"{wins / len(eps):.3f}", "95% CI": f"[{lo:.2f}, {hi:.2f}]",
               "McNemar vs control": "", "replies repeating the one before": f"{rate:.2f} of {n}"}
        if res is not control:
            row["McNemar vs control"] = f"p {mcnemar_cell([res['gen']], [control['gen']])}"
        if "k" in res:
            row["pass@1 sampled"] = f"{res['k']['confidence']['pass@1']:.3f}"
            row["vs control sampled (95% CI), p"] = ""
            if res is not control:
                row["vs control sampled (95% CI), p"] = ", p ".join(bootstrap_cells(task_rates(res["k"]), task_rates(control["k"])))
        out.append(row)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=sorted(PRESETS), default="db_bench")
    p.add_argument("--sft-adapter", required=True, help="the SFT adapter whose mistakes are replayed (the control arm)")
    p.add_argument("--transcripts", required=True, help="the oracle transcripts that adapter was trained on")
    p.add_argument("--work", required=True)
    p.add_argument("--train-tasks", type=int, default=240, help="training tasks the adapter plays for its mistakes")
    p.add_argument("--points", type=int, default=1, help="takeover turns per failed episode")
    p.add_argument("--tasks", type=int, default=48, help="generated held-out tasks (bench/real_learning.py's)")
    p.add_argument("--samples", type=int, default=0, help="also K sampled episodes per held-out task (pass@1, bootstrap)")
    p.add_argument("--sample-temperature", type=float, default=0.5)
    p.add_argument("overrides", nargs="*", help="Hydra overrides for the SFT runs")
    args = p.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    adapter = str(Path(args.sft_adapter).resolve())
    played = work / "train_tasks.json"
    if not played.exists():
        sh([sys.executable, "evaluate.py", f"adapter={adapter}", f"report={played}", "baseline=false", f"env={args.env}",
            "batch_size=8", f"num_samples={args.train_tasks}", f"seed={TRAIN_SEED}"], work / "train_tasks.log")
    report = json.loads(played.read_text())
    recovery, control = work / "recovery.jsonl", work / "control.jsonl"
    if not control.exists():
        sh([sys.executable, "scripts/make_transcripts.py", "--recover-from", str(played), "--points", str(args.points),
            "--out", str(recovery)], work / "recovery.log")
        sys.path[:0] = [str(ROOT)]
        from lorarl import transcripts

        made = [json.loads(line) for line in recovery.read_text().splitlines()]
        transcripts.write(control_transcripts(made, report), control)
    original = Path(args.transcripts).read_text()
    arms = {}
    for name, extra in (("+ recovery", recovery), ("+ more oracle", control)):
        data = work / f"sft_data_{'recovery' if 'recovery' in name else 'control'}.jsonl"
        if not data.exists():
            lines = original.splitlines() + extra.read_text().splitlines()
            random.Random(0).shuffle(lines)  # the holdout split takes a seeded shuffle too: mixed either way
            data.write_text("\n".join(lines) + "\n")
        arms[name] = data
    trained = {}
    for name, data in arms.items():
        tag = data.stem.removeprefix("sft_data_")
        trained[f"SFT {name}"] = held_out(sft(f"sft_{tag}", data, args, work), tag, args, work)
    # What the recovery transcripts add beyond their extra data, printed before the SFT adapter's
    # own evaluation runs: the question the control arm exists for, answered first.
    pair = {k: trained[k] for k in ("SFT + more oracle", "SFT + recovery")}
    vs_more = rows(pair, "SFT + more oracle")[1:]
    print(table(vs_more, "SFT + recovery against SFT + more oracle (the same tasks, as many transcripts)"), flush=True)
    results = {"SFT (the adapter)": held_out(adapter, "sft", args, work), **trained}
    failed = sum(e["outcome"] != "correct" for e in report["episodes"])
    counts = {"train tasks played": len(report["episodes"]), "failed": failed,
              "recovery transcripts": len(recovery.read_text().splitlines()),
              "control transcripts": len(control.read_text().splitlines()),
              "original transcripts": len(original.splitlines())}
    print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    out = rows(results, "SFT (the adapter)")
    print(table(out, f"{args.env}: SFT with recovery transcripts, {args.tasks} generated held-out tasks; "
                     "control: the SFT adapter"))
    print(f"{time.perf_counter() - start:.0f} s")
    record("recovery_sft", {"args": vars(args), "counts": counts, "rows": out, "vs_more_oracle": vs_more})


if __name__ == "__main__":
    main()
