"""Write SFT transcripts (docs/transcripts.md), from an env's oracle or from evaluation reports.

    python scripts/make_transcripts.py --env db_bench --skills select,count --episodes 2000 --out db.jsonl
    python scripts/make_transcripts.py --env os_interaction --episodes 500 --out os.jsonl
    python scripts/make_transcripts.py --from-report runs/x/checkpoints/iter_000020/eval_DBBench-v0.json --out best.jsonl
    python scripts/make_transcripts.py --recover-from runs/x/eval_train_tasks.json --points 2 --out recover.jsonl

Oracle transcripts are episodes the oracle solved by executing its solution through the env (an
episode it fails is left out). ``--from-report`` keeps the correct episodes of ``evaluate.py``
reports: sample a policy with ``algorithm.sampling.greedy=false`` and many ``num_samples``, keep
what succeeded, fine-tune on it (rejection sampling / expert iteration). ``--recover-from`` replays
the failed episodes of reports up to a turn of the agent's own and lets the oracle finish from there
(kept when correct; the agent's replayed turns are context, not trained on): SFT data that shows
what to do after a mistake. Evaluate on training tasks for it, never on the held-out ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lorarl import transcripts  # noqa: E402

ENV_IDS = {"db_bench": "lorarl/DBBench-v0", "os_interaction": "lorarl/OSInteraction-v0", "target_word": "lorarl/TargetWord-v0"}


def not_a_report(path: str) -> str | None:
    """Why ``path`` is not an evaluate.py report with episodes (one line), or None."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return str(e).splitlines()[0] or type(e).__name__
    env = data.get("config") if isinstance(data, dict) else None
    env = env.get("env") if isinstance(env, dict) else None
    if not isinstance(data.get("episodes") if isinstance(data, dict) else None, list) \
            or not (isinstance(env, dict) and isinstance(env.get("id"), str)):
        return "not an evaluate.py report (needs 'episodes' and 'config.env.id')"
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--env", choices=sorted(ENV_IDS))
    p.add_argument("--skills", help="generator skills, comma-separated (db_bench, os_interaction), or the "
                   "families wide (AgentBench-shaped) and all")
    p.add_argument("--kwargs", default="{}", help="more env arguments as JSON, e.g. '{\"max_rounds\": 5}'")
    p.add_argument("--episodes", type=int, default=1000, help="seeds to play")
    p.add_argument("--seed", type=int, default=0, help="first seed (--env); the takeover turns' draw (--recover-from)")
    p.add_argument("--from-report", nargs="*", default=[], help="evaluate.py reports: keep their correct episodes")
    p.add_argument("--recover-from", nargs="*", default=[],
                   help="evaluate.py reports: the oracle finishes their failed episodes from a turn of the agent's")
    p.add_argument("--points", type=int, default=1, help="--recover-from: takeover turns per failed episode")
    args = p.parse_args(argv)
    if [bool(args.env), bool(args.from_report), bool(args.recover_from)].count(True) != 1:
        p.error("give one of --env (oracle transcripts), --from-report (the correct episodes of reports) or "
                "--recover-from (the oracle finishing the failed episodes of reports)")
    for report in args.from_report + args.recover_from:
        if (problem := not_a_report(report)) is not None:
            p.error(f"{report}: {problem}")
    if args.points < 1:
        p.error(f"--points must be at least 1 (got {args.points})")
    if args.recover_from:
        records = (r for report in args.recover_from
                   for r in transcripts.recovery_transcripts(report, args.points, args.seed))
    elif args.env:
        kwargs = json.loads(args.kwargs)
        if args.skills:
            kwargs["skills"] = args.skills.split(",")
        records = transcripts.oracle_transcripts(ENV_IDS[args.env], kwargs, range(args.seed, args.seed + args.episodes))
    else:
        records = (r for report in args.from_report for r in transcripts.report_transcripts(report))
    n = transcripts.write(records, args.out)
    print(f"{n} transcripts -> {args.out}")
    return 0 if n else 1


if __name__ == "__main__":
    sys.exit(main())
