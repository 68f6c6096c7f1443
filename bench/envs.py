"""Episodes per second of the rollout collector when the envs are the bottleneck, sequential
(``step_workers=1``) against parallel (one thread per env), and what one slow env costs.

    python bench/envs.py            # prints a table, appends a JSON line to bench/results.jsonl

The policy is scripted (a fixed valid reply, no model) so that the envs alone set the pace:
db_bench runs SQLite in a worker process per env, os_interaction a namespace sandbox per episode.
"cores-bound ideal" is the sequential rate times min(envs, CPU cores): envs that compute cannot
go faster than the cores; envs that wait (sleeping commands) can.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import gymnasium as gym
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import envs  # noqa: E402,F401
from bench.common import record, table  # noqa: E402
from lorarl.policy import Generation  # noqa: E402
from lorarl.rewards import RewardTable  # noqa: E402
from lorarl.rollout import RolloutCollector, SamplingSpec  # noqa: E402
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


def episodes_per_s(env_id: str, kwargs: dict, reply: str, n_envs: int, workers: int, rounds: int = 1) -> float:
    tok = build_byte_tokenizer()
    made = [gym.make(env_id, **kwargs) for _ in range(n_envs)]
    sampling = SamplingSpec(max_new_tokens=64, temperature=1.0, max_context_tokens=100_000, greedy=False,
                            merge_adapter=False, cache="dynamic", compile=False)
    rewards = RewardTable(1.0, -0.5, -0.3, -0.5, 0.0, 0.0)
    collector = RolloutCollector(made, tok, sampling, rewards, step_workers=workers)
    policy = ScriptedPolicy(tok, reply)
    collector.collect(policy, [0], [0])  # warm-up: worker processes, imports
    start = time.perf_counter()
    for r in range(rounds):
        collector.collect(policy, list(range(r * n_envs, (r + 1) * n_envs)), list(range(n_envs)))
    rate = rounds * n_envs / (time.perf_counter() - start)
    for env in made:
        env.close()
    return rate


def slow_env(seconds: float) -> dict:
    """4 envs, 2 rounds; one env's every step sleeps ``seconds``. The other episodes' wall time."""
    from envs.wrappers import Delayed

    tok = build_byte_tokenizer()
    out = {}
    for mode, workers in (("sequential", 1), ("parallel", 0)):
        made = [Delayed(gym.make("lorarl/TargetWord-v0", max_turns=2), seconds if i == 0 else 0.0) for i in range(4)]
        sampling = SamplingSpec(max_new_tokens=8, temperature=1.0, max_context_tokens=4096, greedy=False,
                                merge_adapter=False, cache="dynamic", compile=False)
        collector = RolloutCollector(made, tok, sampling, RewardTable(1.0, -0.5, -0.3, -0.5, 0.0, 0.0),
                                     step_workers=workers, straggler_timeout_s=0.2)
        start = time.perf_counter()
        eps = collector.collect(ScriptedPolicy(tok, "nope"), [0, 1, 2, 3], [0, 1, 2, 3])
        out[mode] = {"batch_s": time.perf_counter() - start, "slow_episode_s": eps[0].duration_s,
                     "other_episodes_max_s": max(e.duration_s for e in eps[1:])}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="4,16,64")
    parser.add_argument("--slow-seconds", type=float, default=3.0)
    args = parser.parse_args()
    cores = os.cpu_count()
    from envs.os_interaction.sandbox import probe

    rows = []
    for name, (env_id, kwargs, reply) in REPLIES.items():
        if name == "os_interaction" and probe():
            print(f"skipping os_interaction: {probe()}")
            continue
        for n in map(int, args.envs.split(",")):
            seq = episodes_per_s(env_id, kwargs, reply, n, workers=1)
            par = episodes_per_s(env_id, kwargs, reply, n, workers=0)
            ideal = min(n, cores)
            rows.append({"env": name, "envs": n, "sequential_eps": round(seq, 2), "parallel_eps": round(par, 2),
                         "speedup": round(par / seq, 2), "cores_bound_ideal": ideal,
                         "vs_ideal": round(par / seq / ideal, 2)})
    print(table(rows, f"episodes/s, sequential vs parallel env stepping ({cores} CPU cores)"))
    slow = slow_env(args.slow_seconds)
    slow_rows = [{"mode": m, **{k: round(v, 2) for k, v in r.items()}} for m, r in slow.items()]
    print(table(slow_rows, f"4 envs x 2 rounds, one env sleeping {args.slow_seconds:g} s per step"))
    record("envs", {"stepping": rows, "slow_env": slow_rows})


if __name__ == "__main__":
    main()
