"""The logprob check on a busy machine: the newcomer's first command, run many times beside
busy loops, must never fail on float noise; the deviation it logs is reported.

    python bench/logprob_noise.py                    # 50 runs of `python train.py trainer.iterations=3`, 2 busy loops
    python bench/logprob_noise.py --runs 10 --busy 4 precision=bf16-true

Each run is a fresh process (the default config plus the given overrides), started while
``--busy`` processes spin on the same cores; the table gives the failures (and their one-line
reason), the largest and the median of the per-iteration deviations (``check/logprob_*``) over all
runs, and the tokens over the tolerance.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from bench.common import record, table  # noqa: E402


def spin() -> None:
    while True:
        pass


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--busy", type=int, default=2, help="busy-loop processes beside every run")
    p.add_argument("overrides", nargs="*", default=["trainer.iterations=3"])
    args = p.parse_args()
    from scripts.tb_scalars import scalars

    loops = [mp.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for loop in loops:
        loop.start()
    failures, maxima, medians, over = [], [], [], 0
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as work:
            for i in range(args.runs):
                run = Path(work) / f"r{i}"
                out = subprocess.run([sys.executable, "train.py", *args.overrides, f"hydra.run.dir={run}",
                                      "trainer.progress_bar=false"], cwd=ROOT, capture_output=True, text=True)
                if out.returncode != 0:
                    failures.append((out.stderr.strip().splitlines() or ["?"])[-1][:200])
                try:
                    got = scalars(str(run), ["check/logprob_max_abs_dev", "check/logprob_median_abs_dev",
                                             "check/logprob_tokens_over"])
                    maxima += got["check/logprob_max_abs_dev"]
                    medians += got["check/logprob_median_abs_dev"]
                    over += int(sum(got["check/logprob_tokens_over"]))
                except (StopIteration, KeyError):
                    pass
                print(f"run {i + 1}/{args.runs}: {'FAILED' if out.returncode else 'ok'}; largest so far "
                      f"{max(maxima, default=float('nan')):.3g}", flush=True)
    finally:
        for loop in loops:
            loop.terminate()
    rows = [{"runs": args.runs, "failed": len(failures), "iterations checked": len(maxima),
             "largest deviation": f"{max(maxima, default=float('nan')):.3g}",
             "median of iteration maxima": f"{statistics.median(maxima) if maxima else float('nan'):.3g}",
             "median deviation (median of iterations)": f"{statistics.median(medians) if medians else float('nan'):.3g}",
             "tokens over the tolerance": over}]
    print(table(rows, f"the logprob check under {args.busy} busy loops: {' '.join(args.overrides)}"))
    for f in failures:
        print("failure:", f)
    print(f"{time.perf_counter() - start:.0f} s")
    record("logprob_noise", {"args": vars(args), "rows": rows, "failures": failures})


if __name__ == "__main__":
    main()
