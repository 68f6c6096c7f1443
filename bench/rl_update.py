"""Seconds and peak memory of one RL iteration's training side (prepare + update) on the same
episodes, lorarl as it is against another checkout of lorarl (``--old``, e.g. a git worktree of
the commit before the token budget: ``git worktree add ../old 5c03774``).

    python bench/rl_update.py --collect episodes.pt --adapter runs/sft_db/checkpoints/iter_000001
    python bench/rl_update.py --episodes episodes.pt --adapter ADAPTER --old ../old --rounds 3

``--collect`` plays one GRPO iteration's rollouts (SmolLM2-135M-Instruct with the adapter, 16
episodes in groups of 4, temperature 0.7, db_bench by default) and saves them. Each measurement
then runs in a fresh process under an address-space cap (``--cap-gb``: an arm that would take
the machine down fails alone), arms interleaved (A, B, A, B), the thread count pinned and printed:
``prepare`` and ``update`` with the algorithm's defaults (GRPO: 2 PPO epochs of minibatches of 8
episodes), each checkout with its own defaults, the figure being the process's peak RSS (VmHWM)
and the seconds of prepare + update.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The packaged model's local copy (lorarl.packaged): an older checkout cannot resolve the hub id offline.
MODEL = str(Path.home() / ".cache/lorarl/models/HuggingFaceTB--SmolLM2-135M-Instruct")


def collect(args) -> None:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import torch

    import envs  # noqa: F401
    from conftest import compose
    from lorarl.environments import build_envs, make_collector
    from lorarl.evaluation import attach_adapter
    from lorarl.models import load_pretrained_model
    from lorarl.policy import Policy
    from lorarl.tokenizer import load_tokenizer

    torch.set_num_threads(args.threads)
    config = compose([f"env={args.env}", "algorithm=grpo", "algorithm.sampling.temperature=0.7"])
    tok = load_tokenizer(MODEL)
    lm = attach_adapter(load_pretrained_model(MODEL), args.adapter, merge=False)
    policy = Policy(lm.eval(), with_value_head=False, keep_reference=False).eval()
    collector = make_collector(config.env, build_envs(config.env, 16), tok, config.algorithm.sampling, config.reward)
    torch.manual_seed(args.seed)
    episodes = collector.collect(policy, [args.seed + i // 4 for i in range(16)], [i // 4 for i in range(16)])
    batch = collector.batch(episodes)
    collector.close()
    torch.save({f: getattr(batch, f) for f in ("input_ids", "attention_mask", "action_mask", "old_logprobs", "rewards",
                                                "group_ids")}, args.collect)
    lengths = batch.attention_mask.sum(1).tolist()
    print(f"{len(episodes)} episodes, {sum(lengths)} tokens (longest {max(lengths)}), turns "
          f"{sum(e.turns for e in episodes) / len(episodes):.1f}, outcomes {[e.outcome for e in episodes]}")


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(repo: Path, args) -> dict:
    """One prepare + update of the saved episodes with the checkout at ``repo``."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (args.cap_gb << 30, resource.RLIM_INFINITY))
    sys.path[:0] = [str(repo), str(repo / "tests")]
    import inspect

    import torch

    from conftest import compose
    from lorarl import ppo
    from lorarl.evaluation import attach_adapter
    from lorarl.models import load_pretrained_model
    from lorarl.policy import Policy
    from lorarl.types import RolloutBatch

    torch.set_num_threads(args.threads)
    config = compose(["algorithm=grpo", "algorithm.sampling.temperature=0.7"])
    spec = ppo.PPOSpec.of(config.algorithm)
    lm = load_pretrained_model(MODEL)
    new_api = "batching" in inspect.signature(ppo.update).parameters
    if new_api:
        from lorarl.factory import activation_checkpointing

        if activation_checkpointing(config, lm):  # this checkout's default for this model
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm = attach_adapter(lm, args.adapter, merge=False)
    for n, p in lm.named_parameters():
        p.requires_grad_("lora_" in n)
    policy = Policy(lm, with_value_head=False, keep_reference=False).eval()
    batch = RolloutBatch(**torch.load(args.episodes))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-6)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    start = time.perf_counter()
    try:
        if new_api:
            from lorarl.logprob_check import LogprobGuard
            from lorarl.packing import CostModel

            batching = ppo.Batching(config.trainer.micro_batch_tokens, CostModel.of(lm), 2, config.trainer.share_prefixes)
            targets, _ = ppo.prepare(policy, batch, spec, ppo.AdvantageState(), 0.7, batching, LogprobGuard(1e-3))
            policy.train()

            def step():
                opt.step()
                opt.zero_grad(set_to_none=True)
                return {}
            ppo.update(policy, batch, targets, spec, 0.7, batching, lambda loss, last: loss.backward(), step)
        else:
            targets, _ = ppo.prepare(policy, batch, spec, ppo.AdvantageState(), 0.7, 1e-3)
            policy.train()

            def old_step(loss):
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                return {}
            ppo.update(policy, batch, targets, spec, 0.7, old_step, 1e-3)
    except (MemoryError, RuntimeError) as e:
        if "alloc" not in str(e).lower() and "memory" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        return {"seconds": float("inf"), "peak_mib": float("inf"), "note": str(e).splitlines()[0][:100]}
    return {"seconds": round(time.perf_counter() - start, 1), "peak_mib": round(_kib("VmHWM") / 1024)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True)
    p.add_argument("--collect", help="play the episodes and save them here")
    p.add_argument("--episodes", help="saved episodes")
    p.add_argument("--env", default="db_bench")
    p.add_argument("--seed", type=int, default=20_000_000)
    p.add_argument("--old", help="another lorarl checkout to compare with")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cap-gb", type=int, default=20)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.collect:
        return collect(args)
    if args.child:
        print(json.dumps(measure(Path(args.child), args)))
        return
    arms = {"token budget (this checkout)": ROOT, **({"before (--old)": Path(args.old).resolve()} if args.old else {})}
    print(f"episodes={args.episodes} adapter={args.adapter} threads={args.threads} cap={args.cap_gb} GiB", flush=True)
    got: dict[str, list[dict]] = {a: [] for a in arms}
    for r in range(args.rounds):
        for name, repo in arms.items():
            out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", str(repo)], capture_output=True,
                                 text=True)
            res = (json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else
                   {"seconds": float("inf"), "peak_mib": float("inf"), "note": (out.stderr.strip().splitlines() or ["?"])[-1][:100]})
            got[name].append(res)
            print(f"round {r + 1} {name}: {res}", flush=True)
    sys.path[:0] = [str(ROOT)]
    from bench.common import record, table

    rows = [{"arm": a, "s min": min(x["seconds"] for x in v), "s median": statistics.median(x["seconds"] for x in v),
             "peak MiB median": statistics.median(x["peak_mib"] for x in v)} for a, v in got.items()]
    print(table(rows, "prepare + update of one GRPO iteration's episodes"))
    record("rl_update", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
