"""Peak memory of one PPO minibatch forward + backward: logits at every position (how lorarl, like
most trainers, computed them before) against logits at action positions only, in chunks
recomputed in backward (``lorarl.policy._TokenHead``).

    python bench/memory.py                               # qwen2.5-0.5b-random, 4 x 1,536 tokens, CPU
    python bench/memory.py --model tiny --rows 8 --seq 512 --rounds 3
    python bench/memory.py --device cuda                 # peak CUDA memory instead of RSS

Each measurement runs in a fresh process (its model built there), arms interleaved (A, B, A, B...)
over ``--rounds``; the thread count is pinned and printed. On CPU the figure is the growth of the
process's peak RSS (VmHWM, reset through /proc/self/clear_refs) over its RSS just before the
forward; on CUDA, torch's peak allocated memory over the allocation before it. The rows look like
AgentBench episodes: a prompt, then turns of a reply (action tokens) and an observation.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import record, table  # noqa: E402

ARMS = ("full logits", "action positions")


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure(arm: str, args) -> dict:
    """One forward + backward of the PPO loss in this process; its peak memory in MiB."""
    import torch

    from conftest import compose
    from lorarl import losses
    from lorarl.lora import apply_lora
    from lorarl.models import build_tiny_model
    from lorarl.ops import position_ids_from_mask, shift_to_tokens, token_entropy, token_logprobs
    from lorarl.policy import Policy

    torch.set_num_threads(args.threads)
    config = compose([f"model={args.model}", f"model.lora.rank={args.rank}"])
    vocab = config.model.tiny.vocab_size or 512
    lm = build_tiny_model(config.model.tiny, vocab, 0, 1).to(args.device)
    if args.activation_checkpointing:  # strategy.activation_checkpointing: layers' activations recomputed
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = Policy(apply_lora(lm, config.model.lora), with_value_head=True, keep_reference=False).to(args.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, vocab, (args.rows, args.seq), generator=g).to(args.device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    actions = torch.zeros_like(mask)
    turn = (args.seq - args.prompt) // args.turns
    for k in range(args.turns):  # each turn: a reply (actions), then an observation
        start = args.prompt + k * turn
        actions[:, start:start + int(turn * args.action_share)] = True
    old = torch.zeros(ids.shape, device=args.device)
    adv = torch.randn(ids.shape, generator=g).to(args.device) * actions

    def full_logits():
        out = policy.lm(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                        output_hidden_states=True, use_cache=False)
        values = shift_to_tokens(policy.value_head(out.hidden_states[-1][:, :-1]).squeeze(-1))
        return token_logprobs(out.logits, ids), token_entropy(out.logits), values

    def action_positions():
        out = policy(ids, mask, 1.0, with_values=True, positions=actions)
        return out.logprobs, out.entropy, out.values

    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _kib("VmRSS") * 1024
    logp, ent, values = (full_logits if arm == ARMS[0] else action_positions)()
    loss, _ = losses.clipped_policy_loss(logp, old, adv, actions, 0.2)
    loss = loss - 0.01 * (ent * actions).sum() / actions.sum() + 0.5 * ((values * actions) ** 2).mean()
    loss.backward()
    if args.device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = _kib("VmHWM") * 1024 - before
    return {"arm": arm, "peak_mib": round(peak / 2**20, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b-random")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq", type=int, default=1536)
    parser.add_argument("--prompt", type=int, default=1024, help="tokens before the first reply")
    parser.add_argument("--turns", type=int, default=4)
    parser.add_argument("--action-share", type=float, default=0.75, help="share of each turn that is the reply")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction, default=True,
                        help="recompute the decoder layers in backward (strategy.activation_checkpointing=true), so "
                             "that what remains is mostly what the output head costs")
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:  # a child: one measurement
        print(json.dumps(measure(args.arm, args)))
        return
    print(f"model={args.model} batch={args.rows}x{args.seq} (prompt {args.prompt}, {args.turns} turns, "
          f"{args.action_share:.0%} of each a reply) LoRA r{args.rank} device={args.device} threads={args.threads} "
          f"activation_checkpointing={args.activation_checkpointing}", flush=True)
    runs: dict[str, list[float]] = {a: [] for a in ARMS}
    for r in range(args.rounds):
        for arm in ARMS:  # interleaved: A, B, A, B
            cmd = [sys.executable, __file__, *sys.argv[1:], "--arm", arm]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode < 0:  # killed: on CPU, the kernel's OOM killer
                print(f"round {r + 1} {arm}: killed by signal {-out.returncode} (out of memory?)", flush=True)
                runs[arm].append(float("inf"))
                continue
            if out.returncode != 0:
                raise SystemExit(f"{arm}: {out.stderr[-2000:]}")
            runs[arm].append(json.loads(out.stdout.strip().splitlines()[-1])["peak_mib"])
            print(f"round {r + 1} {arm}: {runs[arm][-1]} MiB", flush=True)
    rows = [{"arm": a, "min_mib": min(v), "median_mib": statistics.median(v), "rounds": len(v)} for a, v in runs.items()]
    ratio = statistics.median(runs[ARMS[0]]) / statistics.median(runs[ARMS[1]])
    print(table(rows, "peak memory growth of one PPO minibatch forward + backward"))
    print(f"full logits / action positions (median): {ratio:.2f}x")
    record("memory", {"args": vars(args), "rows": rows, "ratio": ratio})


if __name__ == "__main__":
    main()
