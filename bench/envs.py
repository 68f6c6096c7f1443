"""Episodes per second of the rollout collector when the envs are the bottleneck, sequential
(``step_workers=1``) against parallel (one thread per env); what one slow env costs; and the
memory each extra env takes.

    python bench/envs.py            # prints tables, appends a JSON line to bench/results.jsonl

The policy is scripted (a fixed valid reply, no model) so that the envs alone set the pace:
db_bench runs SQLite in a worker process per env, os_interaction a namespace sandbox per episode.
Sequential and parallel batches alternate (A, B, A, B) over ``--rounds``; tables give min and
median episodes/s. "cores-bound ideal" is the sequential rate times min(envs, CPU cores), and it
assumes idle cores: on a loaded machine the measured ratio falls short of it by the load.
"RSS per env" is the growth of the process's resident memory per env made, in a fresh process
(the env's own process: a db_bench worker or a sandbox lives apart and is not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402,F401
from bench.common import in_fresh_process, interleaved, pin_threads, record, spread, table  # noqa: E402
from lorarl.policy import Generation  # noqa: E402
from lorarl.rewards import RewardTable  # noqa: E402
from lorarl.rollout import RolloutCollector  # noqa: E402
from lorarl.specs import SamplingSpec  # noqa: E402
from lorarl.tokenizer import build_byte_tokenizer  # noqa: E402

REPLIES = {  # (env id, kwargs, the scripted reply)
    "db_bench light query": ("lorarl/DBBench-v0", {"max_rounds": 6},
                             "Action: Operation\n```sql\nSELECT name FROM sqlite_master\n```"),
    "db_bench 30 ms query": ("lorarl/DBBench-v0", {"max_rounds": 6}, "Action: Operation\n```sql\nWITH RECURSIVE "
                             "c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 150000) SELECT count(*) FROM c\n```"),
    "os_interaction": ("lorarl/OSInteraction-v0", {"max_rounds": 4}, "Act: bash\n\n```bash\nls /root | wc -l; sleep 0.05\n```"),
}


class ScriptedPolicy(torch.nn.Module):
    """Replies with one fixed text (as tokens): the env sets the pace, not a model."""

    def __init__(self, tok, text: str):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the collector asks for a device
        self.ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]

    def generate(self, input_ids, attention_mask, *args, **kwargs) -> Generation:
        n = len(self.ids)
        tokens = torch.tensor([self.ids] * input_ids.shape[0])
        return Generation(tokens, torch.zeros(tokens.shape), torch.full((input_ids.shape[0],), n))


SAMPLING = SamplingSpec(max_new_tokens=64, temperature=1.0, max_context_tokens=100_000, greedy=False,
                        merge_adapter=False, cache="dynamic", compile=False, lean_steps=True, prefix_cache_mb=0,
                        prompt_lookup=0)
REWARDS = RewardTable(1.0, -0.5, -0.3, -0.5, 0.0, 0.0)


def collectors(env_id: str, kwargs: dict, reply: str, n_envs: int) -> dict:
    """A sequential and a parallel collector over envs of their own, warmed up."""
    tok = build_byte_tokenizer()
    policy = ScriptedPolicy(tok, reply)
    made = {}
    for mode, workers in (("sequential", 1), ("parallel", 0)):
        made[mode] = RolloutCollector([gym.make(env_id, **kwargs) for _ in range(n_envs)], tok, SAMPLING, REWARDS,
                                      step_workers=workers)
        made[mode].collect(policy, [0], [0])  # warm-up: worker processes, imports
    return {"policy": policy, **made}


def episodes_per_s(made: dict, mode: str, n_envs: int, round_: int) -> float:
    seeds = list(range(round_ * n_envs, (round_ + 1) * n_envs))
    start = time.perf_counter()
    made[mode].collect(made["policy"], seeds, list(range(n_envs)))
    return n_envs / (time.perf_counter() - start)


def rss_per_env(env_id: str, kwargs: dict, n: int) -> float:
    """In this (fresh) process: resident memory growth per env made, MiB."""
    def rss() -> int:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))

    warm = gym.make(env_id, **kwargs)  # imports and shared tables are not per env
    warm.reset(seed=0)
    before = rss()
    made = [gym.make(env_id, **kwargs) for _ in range(n)]
    for env in made:
        env.reset(seed=0)
    return (rss() - before) / n / 1024


def slow_env(seconds: float) -> dict:
    """4 envs, 2 rounds; one env's every step sleeps ``seconds``. The other episodes' wall time."""
    from envs.wrappers import Delayed

    tok = build_byte_tokenizer()
    out = {}
    for mode, workers in (("sequential", 1), ("parallel", 0)):
        made = [Delayed(gym.make("lorarl/TargetWord-v0", max_turns=2), seconds if i == 0 else 0.0) for i in range(4)]
        sampling = replace(SAMPLING, max_new_tokens=8, max_context_tokens=4096)
        collector = RolloutCollector(made, tok, sampling, REWARDS, step_workers=workers, straggler_timeout_s=0.2)
        start = time.perf_counter()
        eps = collector.collect(ScriptedPolicy(tok, "nope"), [0, 1, 2, 3], [0, 1, 2, 3])
        out[mode] = {"batch_s": time.perf_counter() - start, "slow_episode_s": eps[0].duration_s,
                     "other_episodes_max_s": max(e.duration_s for e in eps[1:])}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="4,16,64")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, pinned")
    parser.add_argument("--rss-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_only:  # a child: memory per env, in a fresh process
        env_id, n = args.rss_only.split(",")
        print(json.dumps({"mib_per_env": rss_per_env(env_id, {}, int(n))}))
        return
    threads, cores = pin_threads(args.threads), os.cpu_count()
    from envs.os_interaction.sandbox import probe

    memory = [{"env": env_id, "envs": 64, "rss_mib_per_env": round(in_fresh_process(__file__, [
        "--rss-only", f"{env_id},64"])["mib_per_env"], 3)} for env_id in ("lorarl/DBBench-v0", "lorarl/TargetWord-v0")]
    print(table(memory, "resident memory per extra env (its worker process apart)"))
    rows = []
    for name, (env_id, kwargs, reply) in REPLIES.items():
        if name == "os_interaction" and probe():
            print(f"skipping os_interaction: {probe()}")
            continue
        for n in map(int, args.envs.split(",")):
            made = collectors(env_id, kwargs, reply, n)
            rounds = iter(range(10**6))
            got = interleaved({mode: (lambda m=mode: episodes_per_s(made, m, n, next(rounds)))
                               for mode in ("sequential", "parallel")}, args.rounds)
            for mode in ("sequential", "parallel"):
                for env in made[mode].envs:
                    env.close()
            seq, par = statistics.median(got["sequential"]), statistics.median(got["parallel"])
            ideal = min(n, cores)
            rows.append({"env": name, "envs": n, **{f"sequential_eps_{k}": v for k, v in spread(got["sequential"], 2).items()},
                         **{f"parallel_eps_{k}": v for k, v in spread(got["parallel"], 2).items()},
                         "speedup_median": round(par / seq, 2), "cores_bound_ideal": ideal,
                         "vs_ideal": round(par / seq / ideal, 2)})
    print(table(rows, f"episodes/s, sequential vs parallel env stepping ({cores} CPU cores, {threads} torch threads, "
                      f"{args.rounds} interleaved rounds; the ideal assumes idle cores)"))
    slow = slow_env(args.slow_seconds)
    slow_rows = [{"mode": m, **{k: round(v, 2) for k, v in r.items()}} for m, r in slow.items()]
    print(table(slow_rows, f"4 envs x 2 rounds, one env sleeping {args.slow_seconds:g} s per step (straggler_timeout_s=0.2)"))
    record("envs", {"memory": memory, "stepping": rows, "slow_env": slow_rows, "threads": threads})


if __name__ == "__main__":
    main()
