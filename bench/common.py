"""What every benchmark shares: a plain-text table, and a JSON line appended to bench/results.jsonl
with the date, the machine and the library versions, so results stay comparable over time."""

from __future__ import annotations

import datetime
import json
import os
import platform
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
