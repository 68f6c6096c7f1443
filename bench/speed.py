"""Rollout and training speed, side by side in one run:

  rollout tokens/s, adapter merged vs unmerged, and lean decoding steps vs transformers' forward
  per token (algorithm.sampling.lean_steps), at batch 1/16/64 (generation only)
  train tokens/s and peak memory, LoRA vs full fine-tuning (forward + backward + optimizer step)
  seconds per PPO iteration on db_bench (collect + update), merged vs unmerged rollouts

    python bench/speed.py                                    # tiny model, CPU, 2 threads, < 4 minutes
    python bench/speed.py --model qwen2.5-0.5b-random --device cuda --new-tokens 256 --seq 1024
    python bench/speed.py --model qwen2.5-1.5b-random --device cuda --precision bf16-true

Arms are interleaved (A, B, A, B) over ``--repeats`` rounds and each table gives min and median:
on a shared machine a slow spell then hits every arm alike. The thread count is pinned
(``--threads``) and printed. Training arms run in fresh processes (their peak memory is their
own). Prints tables and appends a JSON line to bench/results.jsonl. Models come from conf/model/
(the Qwen presets are the real architectures with random weights: nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import in_fresh_process, interleaved, pin_threads, record, spread, table  # noqa: E402


def compose(overrides):
    from conftest import compose as _compose

    return _compose(overrides)


def build(model: str, rank: int, device: str, dtype: torch.dtype):
    from lorarl.lora import apply_lora
    from lorarl.models import build_tiny_model
    from lorarl.policy import Policy
    from lorarl.tokenizer import build_byte_tokenizer

    config = compose([f"model={model}", f"model.lora.rank={rank}"])
    tok = build_byte_tokenizer()
    lm = build_tiny_model(config.model.tiny, len(tok), tok.eos_token_id, tok.pad_token_id).to(device=device, dtype=dtype)
    lm = apply_lora(lm, config.model.lora)
    with torch.no_grad():  # a trained-looking adapter, so a merge really changes the weights
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.01)
    return config, tok, Policy(lm, with_value_head=False, keep_reference=False).to(device)


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def rollout_rows(args, dtype) -> list[dict]:
    from lorarl.lora import merged_for_inference

    config, tok, policy = build(args.model, args.rank, args.device, dtype)
    policy.eval()
    sampling = replace(config.algorithm.sampling, max_new_tokens=args.new_tokens)
    never = tok.convert_tokens_to_ids("<|im_start|>")  # as end-of-sequence: rows run the full length
    compiled = replace(sampling, cache="static", compile=True)
    rows = []
    for batch in map(int, args.batches.split(",")):
        ids = torch.randint(0, 256, (batch, args.prompt), device=args.device)
        mask = torch.ones_like(ids)

        def tokens_per_s(merged: bool, how=sampling) -> float:
            sync(args.device)
            start = time.perf_counter()
            with merged_for_inference(policy.lm) if merged else torch.no_grad():
                gen = policy.generate(ids, mask, how, never, tok.pad_token_id)
            sync(args.device)
            return float(gen.lengths.sum()) / (time.perf_counter() - start)

        arms = {"unmerged": lambda: tokens_per_s(False), "merged": lambda: tokens_per_s(True)}
        if not args.skip_forward_steps:  # each token through transformers' forward, not lorarl.decoding's lean steps
            arms["merged_forward_steps"] = lambda: tokens_per_s(True, replace(sampling, lean_steps=False))
        if args.static_compile:
            tokens_per_s(True, compiled)  # compile once, outside the measurements
            arms["merged_static_compiled"] = lambda: tokens_per_s(True, compiled)
        got = interleaved(arms, args.repeats)
        row = {"batch": batch}
        for mode, values in got.items():
            row[f"{mode}_tok_s_max"], row[f"{mode}_tok_s_median"] = round(max(values), 1), round(statistics.median(values), 1)
        row["merged_vs_unmerged_median"] = round(statistics.median(got["merged"]) / statistics.median(got["unmerged"]), 2)
        if "merged_forward_steps" in got:
            row["lean_vs_forward_steps_median"] = round(
                statistics.median(got["merged"]) / statistics.median(got["merged_forward_steps"]), 2)
        if args.static_compile:
            row["compiled_vs_unmerged_median"] = round(
                statistics.median(got["merged_static_compiled"]) / statistics.median(got["unmerged"]), 2)
        rows.append(row)
    return rows


def train_once(args) -> dict:
    """One configuration in a process of its own, so its peak memory is its own."""
    dtype = torch.bfloat16 if args.precision == "bf16-true" else torch.float32
    config, tok, policy = build(args.model, args.rank, args.device, dtype)
    policy.train()
    params = [p for p in (policy.lm.parameters() if args.rank else policy.lm.requires_grad_(True).parameters())
              if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    ids = torch.randint(0, 256, (args.batch, args.seq), device=args.device)
    mask = torch.ones_like(ids)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(args.steps + 1):
        sync(args.device)
        start = time.perf_counter()
        out = policy(ids, mask)
        out.logprobs.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(args.device)
        if step:  # the first step allocates the optimizer state
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"tok_s": args.batch * args.seq / statistics.median(times), "peak_mib": round(peak / 2**20, 1),
            "trainable_params": sum(p.numel() for p in params)}


def train_rows(args) -> list[dict]:
    runs: dict[str, list[dict]] = {}

    def arm(name: str, rank: int):
        def measure() -> float:
            got = in_fresh_process(__file__, ["--train-once", "--rank", str(rank), "--model", args.model, "--device",
                                              args.device, "--precision", args.precision, "--batch", str(args.batch),
                                              "--seq", str(args.seq), "--steps", "3", "--threads", str(args.threads)])
            runs.setdefault(name, []).append(got)
            return got["tok_s"]
        return measure

    tok_s = interleaved({"LoRA": arm("LoRA", args.rank), "full fine-tuning": arm("full fine-tuning", 0)}, args.rounds)
    rows = [{"mode": name, **{f"tok_s_{k}": v for k, v in spread(values, 1).items()},
             "peak_mib_median": statistics.median(r["peak_mib"] for r in runs[name]),
             "trainable_params": runs[name][0]["trainable_params"]} for name, values in tok_s.items()]
    rows[0]["tok_s_vs_full"] = round(rows[0]["tok_s_median"] / rows[1]["tok_s_median"], 2)
    rows[0]["memory_vs_full"] = round(rows[0]["peak_mib_median"] / rows[1]["peak_mib_median"], 2)
    rows[1]["tok_s_vs_full"] = rows[1]["memory_vs_full"] = 1.0
    return rows


def ppo_rows(args) -> list[dict]:
    import tempfile

    import lightning as L

    import envs  # noqa: F401
    from lorarl.factory import build_run

    def seconds_per_iteration(merged: str) -> float:
        config = compose([f"model={args.model}", "trainer.iterations=3", "trainer.checkpoint_every=0",
                          "trainer.progress_bar=false", "logger.tensorboard=false", f"trainer.threads={args.threads}",
                          f"precision={args.precision}",
                          f"algorithm.envs_per_rank={args.ppo_envs}", f"algorithm.sampling.merge_adapter={merged}",
                          f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"])
        trainer, module, _ = build_run(config, tempfile.mkdtemp())
        seconds = []

        class Timer(L.Callback):
            def on_train_epoch_end(self, trainer, module):
                seconds.append({k[5:]: v for k, v in module.last_stats.items() if k.startswith("perf/") and k.endswith("_s")})

        trainer.callbacks.append(Timer())
        trainer.fit(module)
        parts[merged] = {k: statistics.median(s[k] for s in seconds[1:]) for k in seconds[-1]}  # the first warms up
        return parts[merged]["iteration_s"]

    parts: dict[str, dict] = {}
    got = interleaved({"unmerged": lambda: seconds_per_iteration("false"), "merged": lambda: seconds_per_iteration("null")},
                      args.rounds)
    return [{"rollouts": name, "episodes": args.ppo_envs, **{f"s_per_iteration_{k}": v for k, v in spread(values, 2).items()},
             **{f"{k}": round(v, 2) for k, v in parts["false" if name == "unmerged" else "null"].items() if k != "iteration_s"}}
            for name, values in got.items()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-true"])
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5, help="rounds of the in-process rollout measurements")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the fresh-process (train, PPO) measurements")
    p.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads, pinned")
    p.add_argument("--ppo-envs", type=int, default=16)
    p.add_argument("--parts", default="rollout,train,ppo", help="which tables to measure")
    p.add_argument("--batches", default="1,16,64", help="rollout batch sizes")
    p.add_argument("--skip-forward-steps", action="store_true",
                   help="leave out the rollout arm that decodes through transformers' forward every token")
    p.add_argument("--static-compile", action="store_true", help="also merged + static KV cache + torch.compile")
    p.add_argument("--train-once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    from lorarl.logs import quiet_console

    quiet_console(progress_bar=False)
    threads = pin_threads(args.threads)
    if args.train_once:
        print(json.dumps(train_once(args)))
        return
    dtype = torch.bfloat16 if args.precision == "bf16-true" else torch.float32
    where = f"{args.model}, {args.device}, {args.precision}, {threads} threads, arms interleaved"
    parts = args.parts.split(",")
    results = {}
    if "rollout" in parts:
        results["rollout"] = rollout_rows(args, dtype)
        print(table(results["rollout"], f"rollout tokens/s, prompt {args.prompt}, {args.new_tokens} new tokens ({where})"),
              flush=True)
    if "train" in parts:
        results["train"] = train_rows(args)
        print(table(results["train"], f"train fwd+bwd+step, batch {args.batch} x {args.seq} tokens ({where})"), flush=True)
    if "ppo" in parts:
        results["ppo"] = ppo_rows(args)
        print(table(results["ppo"], f"seconds per PPO iteration and where they go, db_bench ({where}, {args.rounds} rounds)"),
              flush=True)
    record("speed", {"args": vars(args), **results})


if __name__ == "__main__":
    main()
