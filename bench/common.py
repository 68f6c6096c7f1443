"""What every benchmark shares: a plain-text table, and a JSON line appended to bench/results.jsonl
with the date, the machine and the library versions, so results stay comparable over time."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.jsonl"


def machine() -> dict:
    import peft
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "host_cpu": platform.processor() or platform.machine(),
            "cpu_cores": os.cpu_count(), "gpu": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "python": platform.python_version()}


def record(bench: str, results) -> None:
    with open(RESULTS, "a") as f:
        f.write(json.dumps({"bench": bench, **machine(), "results": results}) + "\n")


def table(rows: list[dict], title: str) -> str:
    if not rows:
        return f"{title}\n(no rows)"
    keys = list(rows[0])
    width = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    line = lambda vals: "  ".join(str(v).rjust(width[k]) for k, v in zip(keys, vals))
    return "\n".join([title, line(keys), line(["-" * width[k] for k in keys]), *(line([r[k] for k in keys]) for r in rows)])


def pin_threads(threads: int) -> int:
    """Pin torch's CPU threads (and say so): ratios measured at another count do not compare."""
    import torch

    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    return torch.get_num_threads()


def interleaved(arms: dict[str, Callable[[], float]], rounds: int, show: Callable[[str, int, float], None] | None = None
                ) -> dict[str, list[float]]:
    """Measure each arm once per round, arms alternating (A, B, A, B...): on a shared, noisy
    machine a slow spell then hits every arm, not a whole block of one."""
    got: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(rounds):
        for name, measure in arms.items():
            got[name].append(measure())
            if show:
                show(name, r, got[name][-1])
    return got


def in_fresh_process(script: str, args: list[str]) -> dict:
    """Run ``script args`` in a new Python process and return the JSON it prints last (its peak
    memory is then its own)."""
    out = subprocess.run([sys.executable, script, *args], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)}: exit {out.returncode}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def spread(values: list[float], digits: int = 3) -> dict:
    """min and median of a list of measurements (min: least disturbed; median: typical)."""
    return {"min": round(min(values), digits), "median": round(statistics.median(values), digits)}
