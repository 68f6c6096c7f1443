"""Rollout generation with and without the prefix cache (``algorithm.sampling.prefix_cache_mb``):
seconds of generation per episode, prompt tokens computed and reused per episode, and whether
the greedy outcomes are the same task by task.

    python bench/prefix_cache.py --env os_interaction --adapter runs/os_sft/checkpoints/iter_000001
    python bench/prefix_cache.py --env db_bench --adapter ADAPTER --tasks 48 --batch 8 --rounds 2
    python bench/prefix_cache.py --env db_bench --adapter ADAPTER --rl-iteration --batch 16 --rounds 3

One process, one model (``--model``, SmolLM2-135M-Instruct by default, plus ``--adapter``);
each round plays the same held-out generated tasks once per arm, arms interleaved (A, B, A, B),
the thread count pinned and printed. The "before" arm is the rollout as the issue measured it:
each turn prefills the whole episode, its rows padded to the longest (only identical rows share a
prefill), tasks run batch by batch, one token per pass. "prefix cache" is the default: prefixes
reused, prefills packed without padding, an env whose episode ended takes the next task at once
(continuous batching), and greedy passes check tokens drafted from the context
(``prompt_lookup``). ``--arms`` adds "off" (today's decoder without the cache, batch by batch,
one token per pass), "no lookup" and "batch by batch", which separate them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import pin_threads, record, table  # noqa: E402

# arm: (prefix_cache_mb, continuous batching, padded prefills, prompt_lookup; None: the config's).
# "before" is the path before the cache: batch by batch (a batch runs until its longest episode
# ends), every turn prefilled in full with its rows padded to the longest, one token per pass.
ARMS = {"before": (0, False, True, 0), "off": (0, False, False, 0), "prefix cache": (1024, True, False, None),
        "no lookup": (1024, True, False, 0), "batch by batch": (1024, False, False, None)}
DEFAULT_ARMS = "before,prefix cache"
_PREFILL: dict = {}  # today's prefill, kept when the "before" arm replaces it


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="os_interaction", choices=["os_interaction", "db_bench"])
    parser.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--adapter", help="an adapter of the model (an SFT checkpoint: multi-turn episodes)")
    parser.add_argument("--tasks", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1_000_000_000, help="first task seed (held out: training uses far lower)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"which of {', '.join(ARMS)} (a profile: one)")
    parser.add_argument("--rl-iteration", action="store_true",
                        help="instead of an evaluation: one GRPO iteration's rollouts (--batch episodes, groups of 4, "
                             "temperature 0.7, all started at once), the same sampling seed in every arm")
    parser.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True,
                        help="the adapter folded into the weights, as evaluate.py and RL rollouts decode by default")
    args = parser.parse_args()
    arms = {a: ARMS[a] for a in args.arms.split(",")}

    import torch

    from conftest import compose
    from lorarl.environments import build_envs, make_collector
    from lorarl.evaluation import attach_adapter
    from lorarl.models import load_pretrained_model
    from lorarl.policy import Policy
    from lorarl.tokenizer import load_tokenizer

    threads = pin_threads(args.threads)
    config = compose([f"env={args.env}", *(["algorithm=grpo", "algorithm.sampling.temperature=0.7"] if args.rl_iteration else [])])
    tok, lm = load_tokenizer(args.model), load_pretrained_model(args.model)
    if args.adapter:
        lm = attach_adapter(lm, args.adapter, merge=args.merge)
    policy = Policy(lm.eval(), with_value_head=False, keep_reference=False).eval()
    envs = build_envs(config.env, args.batch)
    print(f"model={args.model} adapter={args.adapter} env={args.env} tasks={args.tasks} batch={args.batch} "
          f"threads={threads}", flush=True)
    got: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for arm, (mb, continuous, padded, lookup) in arms.items():  # interleaved
            padded_prefills(padded)
            sampling = replace(config.algorithm.sampling, greedy=not args.rl_iteration, prefix_cache_mb=mb)
            if lookup is not None:
                sampling = replace(sampling, prompt_lookup=lookup)
            collector = make_collector(config.env, envs, tok, sampling, config.reward)
            torch.manual_seed(0)
            if args.rl_iteration:
                seeds = [args.seed + i // 4 for i in range(args.batch)]
                episodes = collector.collect(policy, seeds, [i // 4 for i in range(args.batch)])
                generate = collector.timing["generate_s"]
            else:
                episodes, generate = play(policy, collector, args.tasks, args.seed, continuous)
            collector.close(close_envs=False)
            n = len(episodes)
            res = {"generate_s_per_episode": generate / n, "outcomes": [e.outcome for e in episodes],
                   "tokens": [e.token_ids for e in episodes],
                   "turns": sum(e.turns for e in episodes) / n,
                   "computed_per_episode": collector.prefill.get("prefill_tokens_computed", float("nan")) / n,
                   "reused_per_episode": collector.prefill.get("prefill_tokens_reused", 0.0) / n,
                   "tokens_per_episode": sum(len(e.token_ids) for e in episodes) / n}
            got[arm].append(res)
            print(f"round {r + 1} {arm}: {res['generate_s_per_episode']:.2f} s/episode, success "
                  f"{res['outcomes'].count('correct') / n:.3f}, prefill computed {res['computed_per_episode']:.0f} "
                  f"reused {res['reused_per_episode']:.0f} per episode", flush=True)
    for env in envs:
        env.close()
    rows = []
    for arm, rs in got.items():
        secs = [x["generate_s_per_episode"] for x in rs]
        rows.append({"arm": arm, "s/episode min": round(min(secs), 3), "s/episode median": round(statistics.median(secs), 3),
                     "success": round(rs[0]["outcomes"].count("correct") / len(rs[0]["outcomes"]), 3),
                     "turns": round(rs[0]["turns"], 2), "tokens/episode": round(rs[0]["tokens_per_episode"]),
                     "prefill computed/episode": round(rs[0]["computed_per_episode"]),
                     "reused/episode": round(rs[0]["reused_per_episode"])})
    if len(got) < 2:
        return
    off, on = (statistics.median(x["generate_s_per_episode"] for x in got[a]) for a in list(got)[:2])
    same = all(x["outcomes"] == next(iter(got.values()))[0]["outcomes"] for rs in got.values() for x in rs)
    first = next(iter(got.values()))[0]["tokens"]
    # per arm, the most episodes of a round whose tokens differ from the first arm's first round
    differ = {arm: max(sum(a != b for a, b in zip(x["tokens"], first)) for x in rs) for arm, rs in got.items()}
    same_tokens = not any(differ.values())
    what = "one GRPO iteration's rollouts, sampled" if args.rl_iteration else "an evaluation, greedy"
    print(table(rows, f"generation per episode, {args.env}, {what}"))
    print(f"{' / '.join(list(got)[:2])} (median): {off / on:.2f}x; outcomes the same task by task: {same}; "
          f"the same tokens: {same_tokens}" + ("" if same_tokens else f" (episodes that differ, per arm: {differ})"))
    record("prefix_cache", {"args": vars(args), "threads": threads, "rows": rows, "ratio": off / on, "same_outcomes": same,
                            "same_tokens": same_tokens, "episodes_with_other_tokens": differ})


def padded_prefills(on: bool) -> None:
    """The lean decoder's prefill as it was before the prefix cache work (on), or today's (off)."""
    from lorarl import decoding

    today = _PREFILL.setdefault("packed", decoding._LeanSteps._prefill)
    decoding._LeanSteps._prefill = _padded_prefill if on else today


def _padded_prefill(self, rows, sources, extra):
    """``_LeanSteps._prefill`` before prefills were packed: the rows' new tokens left-padded to the
    longest, every row computing that many (the "before" arm; kept here, not in the library)."""
    import torch
    import torch.nn.functional as F

    from lorarl.decoding import _with_base

    U, S, T = len(rows), self.width, self.width + extra
    new = [len(r) - c for r, (_, c) in zip(rows, sources)]
    N = max(new)
    cfg = self.lm.config
    kv, hd = cfg.num_key_value_heads, getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    dtype, dev = self.body.embed_tokens.weight.dtype, self.device
    self.keys = [torch.zeros(U, kv, T, hd, dtype=dtype, device=dev) for _ in self.layers]
    self.values = [torch.zeros_like(k) for k in self.keys]
    ids, positions = torch.zeros(U, N, dtype=torch.long, device=dev), torch.zeros(U, N, dtype=torch.long, device=dev)
    visible = torch.zeros(U, 1, N, S, dtype=torch.bool, device=dev)
    real = torch.zeros(U, N, dtype=torch.bool, device=dev)
    cols = torch.arange(S, device=dev)[None]
    for u, (row, (entry, c)) in enumerate(zip(rows, sources)):
        start, n = S - (len(row) - self.skip), new[u]
        if entry is not None and c > self.skip:
            for layer in range(len(self.layers)):
                k, v = entry.span(layer, self.skip, c)
                self.keys[layer][u, :, start:start + c - self.skip] = k
                self.values[layer][u, :, start:start + c - self.skip] = v
        ids[u, N - n:] = torch.tensor(row[c:], device=dev)
        positions[u, N - n:] = torch.arange(c, len(row), device=dev)
        real[u, N - n:] = True
        visible[u, 0, N - n:] = (cols >= start) & (cols <= torch.arange(S - n, S, device=dev)[:, None])
        visible[u, 0, : N - n, S - N: S - n] = torch.eye(N - n, dtype=torch.bool, device=dev)
    if self.cache is not None:
        self.cache.computed += sum(new)
    keep = real[:, None, :, None]

    def attend(i, attn, q, k, v):
        for store, new_part in ((self.keys[i], k), (self.values[i], v)):
            store[:, :, S - N: S] = torch.where(keep, new_part, store[:, :, S - N: S])
        keys, values, seen = self.keys[i][:, :, :S], self.values[i][:, :, :S], visible
        if self.base is not None:
            keys, values, seen = _with_base(keys, values, seen, self.base.keys[i], self.base.values[i])
        return F.scaled_dot_product_attention(q, keys, values, attn_mask=seen, scale=attn.scaling,
                                              enable_gqa=keys.shape[1] != q.shape[1])

    x = self._layers(ids, positions, attend)
    self.length = S
    return self.lm.lm_head(self.body.norm(x[:, -1]))


def play(policy, collector, tasks: int, seed: int, continuous: bool):
    """(episodes of tasks 0..tasks-1, seconds of generation): one evaluation, or the same batch by
    batch with one cache for all batches, as evaluations ran before continuous batching."""
    from lorarl.evaluation import EvalSpec, evaluate_policy

    if continuous:
        episodes, _ = evaluate_policy(policy, collector, EvalSpec(tasks, seed))
        return episodes, collector.timing["generate_s"]
    n, cache, episodes, generate = len(collector.envs), collector.new_prefix_cache(), [], 0.0
    for first in range(0, tasks, n):
        ids = list(range(first, min(first + n, tasks)))
        episodes += collector.collect(policy, [seed + i for i in ids], ids, prefix_cache=cache)
        generate += collector.timing["generate_s"]
    collector.prefill = dict(cache.stats())
    return episodes, generate


if __name__ == "__main__":
    main()
