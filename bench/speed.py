"""Rollout and training speed, side by side in one run:

  rollout tokens/s, adapter merged vs unmerged, at batch 1/16/64 (generation only)
  train tokens/s and peak memory, LoRA vs full fine-tuning (forward + backward + optimizer step)
  seconds per PPO iteration on db_bench (collect + update)

    python bench/speed.py                                    # tiny model, CPU, < 3 minutes
    python bench/speed.py --model qwen2.5-0.5b-random --device cuda --new-tokens 256 --seq 1024
    python bench/speed.py --model qwen2.5-1.5b-random --device cuda --precision bf16-true

Prints tables and appends a JSON line to bench/results.jsonl. Models come from conf/model/ (the
Qwen presets are the real architectures with random weights: nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import record, table  # noqa: E402


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
    rows = []
    for batch in (1, 16, 64):
        ids = torch.randint(0, 256, (batch, args.prompt), device=args.device)
        mask = torch.ones_like(ids)
        result = {"batch": batch}
        for mode in ("unmerged", "merged"):
            best = 0.0
            for _ in range(args.repeats):
                sync(args.device)
                start = time.perf_counter()
                with merged_for_inference(policy.lm) if mode == "merged" else torch.no_grad():
                    gen = policy.generate(ids, mask, sampling, never, tok.pad_token_id)
                sync(args.device)
                best = max(best, float(gen.lengths.sum()) / (time.perf_counter() - start))
            result[f"{mode}_tok_s"] = round(best, 1)
        result["merged_vs_unmerged"] = round(result["merged_tok_s"] / result["unmerged_tok_s"], 2)
        rows.append(result)
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
    for step in range(args.repeats + 1):
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
    return {"tok_s": round(args.batch * args.seq / min(times), 1), "peak_mib": round(peak / 2**20, 1),
            "trainable_params": sum(p.numel() for p in params)}


def train_rows(args) -> list[dict]:
    rows = []
    for name, rank in (("LoRA", args.rank), ("full fine-tuning", 0)):
        cmd = [sys.executable, __file__, "--train-once", "--rank", str(rank), "--model", args.model, "--device",
               args.device, "--precision", args.precision, "--batch", str(args.batch), "--seq", str(args.seq),
               "--repeats", str(args.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append({"mode": name, **json.loads(out)})
    rows[0]["tok_s_vs_full"] = round(rows[0]["tok_s"] / rows[1]["tok_s"], 2)
    rows[0]["memory_vs_full"] = round(rows[0]["peak_mib"] / rows[1]["peak_mib"], 2)
    rows[1]["tok_s_vs_full"] = rows[1]["memory_vs_full"] = 1.0
    return rows


def ppo_rows(args) -> list[dict]:
    import tempfile

    import envs  # noqa: F401
    from lorarl.factory import build_run

    rows = []
    for merged in ("false", "null"):
        config = compose([f"model={args.model}", "trainer.iterations=3", "trainer.checkpoint_every=0",
                          "trainer.progress_bar=false", "logger.tensorboard=false",
                          "precision=" + ('"32"' if args.precision == "32-true" else args.precision),
                          f"algorithm.envs_per_rank={args.ppo_envs}", f"algorithm.sampling.merge_adapter={merged}",
                          f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"])
        trainer, module, _ = build_run(config, tempfile.mkdtemp())
        seconds = []

        class Timer(__import__("lightning").Callback):
            def on_train_epoch_end(self, trainer, module):
                seconds.append(module.last_stats["perf/iteration_s"])

        trainer.callbacks.append(Timer())
        trainer.fit(module)
        rows.append({"strategy": "auto", "merged_rollouts": merged != "false", "episodes": args.ppo_envs,
                     "s_per_iteration": round(min(seconds[1:]), 2)})
    return rows


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
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ppo-envs", type=int, default=16)
    p.add_argument("--train-once", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    from lorarl.logs import quiet_console

    quiet_console(progress_bar=False)
    if args.train_once:
        print(json.dumps(train_once(args)))
        return
    dtype = torch.bfloat16 if args.precision == "bf16-true" else torch.float32
    where = f"{args.model}, {args.device}, {args.precision}"
    rollout = rollout_rows(args, dtype)
    print(table(rollout, f"rollout tokens/s, prompt {args.prompt}, {args.new_tokens} new tokens ({where})"))
    train = train_rows(args)
    print(table(train, f"train fwd+bwd+step, batch {args.batch} x {args.seq} tokens ({where})"))
    ppo = ppo_rows(args)
    print(table(ppo, f"seconds per PPO iteration, db_bench ({where})"))
    record("speed", {"args": vars(args), "rollout": rollout, "train": train, "ppo": ppo})


if __name__ == "__main__":
    main()
