"""Does training on AgentBench-like names carry over to AgentBench? SmolLM2-135M-Instruct, SFT on
executed oracle transcripts of generated db_bench tasks named plainly (``employees``, ``salary``)
against the same recipe on ``names=mixed`` tasks (half of them named as AgentBench's Wikipedia
tables are: ``"Staff List (Head Office)"``, ``"Salary ($)"``, ``'Dara O''Neil'``), each evaluated
greedy on held-out generated tasks of both kinds and on AgentBench's db dev split.

    python bench/db_names.py                                  # about 45 minutes on 2 cores
    python bench/db_names.py --adapter plain=runs/x/checkpoints/iter_000001   # reuse an SFT adapter

Every step is a command a user can run (scripts/make_transcripts.py, train.py, evaluate.py), its
output kept under ``--work``; a rerun skips what finished. Prints success with Wilson intervals,
a paired McNemar test of mixed against plain on the same tasks, and what the statements the model
sent ran into (syntax errors, a table or column not found, rows), and appends them to
bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.common import record, table  # noqa: E402
from bench.real_learning import evaluate as held_out, sh, successes  # noqa: E402

ARMS = ("plain", "mixed")


def sft(arm: str, args, work: Path) -> str:
    """The arm's SFT adapter: transcripts of ``names=arm`` tasks the oracle solved, then 1 epoch."""
    if arm in args.adapter:
        return args.adapter[arm]
    here = work / arm
    data = here / "transcripts.jsonl"
    if not data.exists():
        sh([sys.executable, "scripts/make_transcripts.py", "--env", "db_bench", "--episodes", str(args.transcripts),
            "--seed", str(args.seed), "--kwargs", json.dumps({"names": arm}), "--out", str(data)], here / "transcripts.log")
    adapter = here / "checkpoints" / "iter_000001"
    if not adapter.exists():
        sh([sys.executable, "train.py", "stage=sft", f"sft.data={data}", "model=smollm2-135m", "env=db_bench",
            f"env.kwargs.names={arm}", "sft.epochs=1", "sft.lr=2e-4", "sft.batch_size=8", "trainer.progress_bar=false",
            f"hydra.run.dir={here}"], here / "sft.log")
    return str(adapter)


def evaluate(adapter: str, report: Path, tasks: str, args) -> dict:
    """Greedy evaluation on ``tasks``: "plain" or "wiki" (generated, held out) or "agentbench"."""
    agentbench = tasks == "agentbench"
    return held_out(adapter, report, "db_bench", Path(args.shared), args, agentbench,
                    () if agentbench else [f"env.kwargs.names={tasks}"])


def statements(report: dict) -> Counter:
    """What each SQL statement the agent sent ran into, from the transcripts."""
    found: Counter = Counter()
    for episode in report["episodes"]:
        turns = episode["transcript"]
        for reply, observation in zip(turns[1::2], turns[2::2]):
            if re.search(r"```sql\n", reply["content"]):
                found[_kind(observation["content"])] += 1
    return found


def _kind(text: str) -> str:
    if "syntax error" in text or "unrecognized token" in text:
        return "syntax error"
    for what in ("no such table", "no such column"):
        if what in text:
            return what
    return "other error" if text.startswith("Error") else "rows" if text.strip() not in ("[]", "") else "empty"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "runs" / "db_names"))
    p.add_argument("--tasks", type=int, default=48, help="generated held-out tasks of each kind")
    p.add_argument("--transcripts", type=int, default=240)
    p.add_argument("--seed", type=int, default=20_000, help="first seed of the transcripts' tasks")
    p.add_argument("--adapter", action="append", default=[], help="ARM=PATH: that arm's SFT adapter, not trained here")
    p.add_argument("--shared", default=str(ROOT.parent / "shared/data/agentbench"))
    args = p.parse_args()
    args.adapter = dict(a.split("=", 1) for a in args.adapter)
    work = Path(args.work).resolve()
    from lorarl.stats import mcnemar_exact, wilson_interval

    adapters = {arm: sft(arm, args, work) for arm in ARMS}
    rows, mix = [], []
    for tasks in ("plain", "wiki", "agentbench"):
        reports = {arm: evaluate(adapters[arm], work / arm / f"eval_{tasks}.json", tasks, args) for arm in ARMS}
        wins = {arm: successes(r) for arm, r in reports.items()}
        only_mixed = sum(wins["mixed"][t] and not wins["plain"].get(t, False) for t in wins["mixed"])
        only_plain = sum(wins["plain"][t] and not wins["mixed"].get(t, False) for t in wins["plain"])
        row = {"held-out tasks": f"{tasks} ({len(wins['plain'])})"}
        for arm, w in wins.items():
            lo, hi = wilson_interval(sum(w.values()), len(w))
            row[f"SFT on {arm}"] = f"{sum(w.values()) / len(w):.3f} [{lo:.2f}, {hi:.2f}]"
        row["McNemar p (mixed vs plain)"] = f"{mcnemar_exact(only_mixed, only_plain):.3g} ({only_mixed} vs {only_plain})"
        rows.append(row)
        for arm, r in reports.items():
            found = statements(r)
            n = max(sum(found.values()), 1)
            mix.append({"held-out tasks": tasks, "SFT on": arm, "statements": n,
                        **{k: f"{found[k] / n:.0%}" for k in ("syntax error", "no such table", "no such column",
                                                              "other error", "empty", "rows")}})
    print(table(rows, "db_bench: greedy success of SFT on plain vs mixed names (SmolLM2-135M-Instruct)"))
    print(table(mix, "what the statements ran into"))
    record("db_names", {"args": vars(args), "success": rows, "statements": mix})


if __name__ == "__main__":
    main()
