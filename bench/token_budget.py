"""Peak memory and time of one PPO minibatch update (forward + backward + its micro-batches) as
episodes grow: the whole minibatch in one padded forward (how lorarl sized work before: in
episodes) against micro-batches of at most ``--budget`` tokens (``trainer.micro_batch_tokens``),
with shared prefixes computed once (``budget``) or every episode in its own row (``plain``).

    python bench/token_budget.py                                  # SmolLM2-135M, 8 episodes, 512..4096 tokens
    python bench/token_budget.py --model tiny --lengths 512,2048 --rounds 3
    python bench/token_budget.py --arms budget --lengths 4096 --activation-checkpointing

The episodes look like a GRPO batch of AgentBench episodes: groups of ``--group`` share a prompt,
every episode shares the first ``--shared`` tokens (the env's instructions), then turns of a reply
(action tokens) and an observation up to the length. Each measurement runs in a fresh process
under an address-space cap (``--cap-gb``, so that an arm that would take the machine down fails
alone), arms interleaved (A, B, A, B) over ``--rounds``, the thread count pinned and printed. The
figure is the growth of the process's peak RSS (VmHWM, reset through /proc/self/clear_refs) over its
RSS before the update.
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
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import record, table  # noqa: E402

MODELS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}


def _kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def episodes(length: int, rows: int, group: int, shared: int, vocab: int, seed: int = 0):
    """(ids [rows, length], action mask): groups share a prompt, all share ``shared`` tokens."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (rows, length), generator=g)
    ids[:, :shared] = ids[0, :shared]
    prompt = shared + 60
    for start in range(0, rows, group):
        ids[start:start + group, :prompt] = ids[start, :prompt]
    actions = torch.zeros(rows, length, dtype=torch.bool)
    turn = 200
    for s in range(prompt, length, turn):  # a 120-token reply, an 80-token observation
        actions[:, s:s + 120] = True
    actions[:, :1] = False
    return ids, actions


def measure(arm: str, length: int, args) -> dict:
    import resource

    import torch

    resource.setrlimit(resource.RLIMIT_AS, (args.cap_gb << 30, resource.RLIM_INFINITY))
    from conftest import compose
    from lorarl import ppo
    from lorarl.lora import apply_lora
    from lorarl.models import build_tiny_model, load_pretrained_model
    from lorarl.packing import CostModel
    from lorarl.policy import Policy
    from lorarl.types import RolloutBatch

    torch.set_num_threads(args.threads)
    if args.allocator == "fixed":  # what train.py does (lorarl.allocator)
        from lorarl.allocator import return_freed_memory

        return_freed_memory()
    config = compose(["model.lora.rank=8"])
    if args.model in MODELS:
        lm = load_pretrained_model(MODELS[args.model])
    else:
        config = compose([f"model={args.model}", "model.lora.rank=8"])
        lm = build_tiny_model(config.model.tiny, config.model.tiny.vocab_size or 512, 0, 1)
    if args.activation_checkpointing:
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    policy = Policy(apply_lora(lm, config.model.lora), with_value_head=False, keep_reference=False).train()
    ids, actions = episodes(length, args.rows, args.group, args.shared, lm.config.vocab_size)
    batch = RolloutBatch(ids, torch.ones_like(actions), actions, torch.zeros(ids.shape), torch.randn(args.rows),
                         torch.arange(args.rows) // args.group)
    spec = ppo.PPOSpec.of(compose(["algorithm=grpo"]).algorithm)
    adv = torch.randn(args.rows)[:, None] * actions
    targets = ppo.Targets(adv, torch.zeros_like(adv), torch.zeros_like(adv), torch.zeros_like(adv), None)
    budget = 1 << 40 if arm == "minibatch" else args.budget
    batching = ppo.Batching(budget, CostModel.of(lm), 0, share_prefixes=arm == "budget")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _kib("VmRSS")
    start = time.perf_counter()
    try:
        ppo.minibatch_update(policy, batch, targets, spec, 1.0, batching, lambda loss, last: loss.backward())
    except (MemoryError, RuntimeError) as e:  # the address-space cap: this arm needs more than --cap-gb
        if "memory" not in str(e).lower() and not isinstance(e, MemoryError):
            raise
        return {"arm": arm, "length": length, "peak_mib": float("inf"), "seconds": float("inf")}
    seconds = time.perf_counter() - start
    return {"arm": arm, "length": length, "peak_mib": round((_kib("VmHWM") - before) / 1024, 1),
            "seconds": round(seconds, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="smollm2-135m or a conf/model preset built in code")
    parser.add_argument("--rows", type=int, default=8, help="episodes in the minibatch")
    parser.add_argument("--group", type=int, default=4, help="episodes per GRPO group (they share a prompt)")
    parser.add_argument("--shared", type=int, default=300, help="tokens every episode starts with")
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--budget", type=int, default=4096, help="trainer.micro_batch_tokens of the budget arm")
    parser.add_argument("--arms", default="minibatch,budget")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cap-gb", type=int, default=20, help="address-space cap of each measurement, GiB")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--allocator", choices=["fixed", "glibc"], default="fixed",
                        help="fixed: train.py's fixed mmap threshold (lorarl.allocator); glibc: its default")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return
    arms, lengths = args.arms.split(","), [int(x) for x in args.lengths.split(",")]
    print(f"model={args.model} {args.rows} episodes (groups of {args.group}, {args.shared} shared tokens) "
          f"budget={args.budget} threads={args.threads} activation_checkpointing={args.activation_checkpointing} "
          f"cap={args.cap_gb} GiB allocator={args.allocator}", flush=True)
    got: dict[tuple[str, int], list[dict]] = {}
    for r in range(args.rounds):
        for length in lengths:
            for arm in arms:  # interleaved
                cmd = [sys.executable, __file__, *sys.argv[1:], "--child", arm, str(length)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    res = {"arm": arm, "length": length, "peak_mib": float("inf"), "seconds": float("inf")}
                    print(f"round {r + 1} {arm} {length}: failed ({out.stderr.strip().splitlines()[-1][:120] if out.stderr.strip() else out.returncode})")
                else:
                    res = json.loads(out.stdout.strip().splitlines()[-1])
                got.setdefault((arm, length), []).append(res)
                print(f"round {r + 1} {arm} {length}: {res['peak_mib']} MiB, {res['seconds']} s", flush=True)
    rows = []
    for (arm, length), rs in got.items():
        peaks, secs = [x["peak_mib"] for x in rs], [x["seconds"] for x in rs]
        rows.append({"arm": arm, "tokens/episode": length, "peak_mib_min": min(peaks),
                     "peak_mib_median": statistics.median(peaks), "s_min": min(secs), "s_median": statistics.median(secs)})
    print(table(sorted(rows, key=lambda x: (x["arm"], x["tokens/episode"])),
                "peak RSS growth and seconds of one minibatch update, by episode length"))
    record("token_budget", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
