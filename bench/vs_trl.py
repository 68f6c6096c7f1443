"""lorarl against TRL's GRPOTrainer, side by side: one GRPO iteration (generate a batch of
completions, score them, one optimizer step) on the same model, task, reward, batch, LoRA and
update settings, both on PEFT.

    pip install -e ".[bench]"          # TRL
    python bench/vs_trl.py             # tiny model, CPU, 1 thread, 3 rounds: about 4 minutes
    python bench/vs_trl.py --rounds 5 --batch 32 --threads 2
    python bench/vs_trl.py --pretrained HuggingFaceTB/SmolLM2-135M-Instruct --threads 2   # the packaged real model

The model (conf/model/tiny, random weights, byte tokenizer) is built once and saved; each arm
loads it from disk. ``--pretrained``: a packaged model instead (``lorarl.packaged``), both arms
loading its local copy, with its own tokenizer and chat template. Each measurement is a fresh process (arms interleaved A, B, A, B over
``--rounds``), the thread count pinned in it and printed. Seconds per iteration are the median
over the measured iterations of a process (warm-up iterations excluded); the table gives the min
and median over rounds, and the ratio of medians. Peak RSS is the process's VmHWM.

The task: "Reply with exactly this word: W" (TargetWord's words), one turn; the reward is 1 for
the word and TargetWord's character similarity otherwise (``envs.target_word.similarity``), the
same function in both arms. Matched knobs are printed with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import record, table  # noqa: E402

ARMS = ("trl", "lorarl")
WORDS = ["yes", "no", "go", "up"]


def knobs(args) -> dict:
    return {"episodes per iteration": args.batch, "generations per prompt": args.group, "new tokens": args.new_tokens,
            "temperature": 1.0, "LoRA": f"r{args.rank} alpha {2 * args.rank} dropout 0 all-linear",
            "optimizer": f"AdamW lr {args.lr} wd 0, clip 1.0, constant", "epochs / minibatches": "1 / 1",
            "clip eps": 0.2, "KL coef": 0.0, "entropy coef": 0.0, "advantage": "group mean and std",
            "loss": "token-level mean (TRL dapo)", "activation checkpointing": "off", "precision": "fp32", "device": "cpu"}


def peak_rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reward(completion: str, target: str) -> float:
    from envs.target_word import similarity

    reply = completion.strip()
    return 1.0 if reply == target else similarity(reply, target)


def save_model(directory: Path) -> None:
    from conftest import compose
    from lorarl.models import build_tiny_model
    from lorarl.tokenizer import build_byte_tokenizer

    tok = build_byte_tokenizer()
    lm = build_tiny_model(compose([]).model.tiny, len(tok), tok.eos_token_id, tok.pad_token_id)
    lm.save_pretrained(directory)
    tok.save_pretrained(directory)


PARTS = ("iteration_s", "generate_s", "rollout_s", "prepare_s", "update_s")  # lorarl's perf/* keys, docs/metrics.md


def run_lorarl(args) -> tuple[list[float], dict[str, float]]:
    import lightning as L

    import envs  # noqa: F401
    from conftest import compose
    from lorarl.factory import build_run

    starts: list[float] = []
    parts: dict[str, list[float]] = {k: [] for k in PARTS}

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module):
            for k in PARTS:
                parts[k].append(module.last_stats[f"perf/{k}"])

    config = compose([
        f"model.path={args.model}", "env=target_word", "env.kwargs.max_turns=1", "algorithm=grpo",
        f"algorithm.envs_per_rank={args.batch}", f"algorithm.group_size={args.group}", "algorithm.ppo_epochs=1",
        f"algorithm.minibatch_size={args.batch}", "algorithm.kl_coef=0", "algorithm.kl_metric_episodes=0",
        "algorithm.entropy_coef=0", f"algorithm.optim.lr={args.lr}", "algorithm.optim.max_grad_norm=1.0",
        f"algorithm.sampling.max_new_tokens={args.new_tokens}", f"model.lora.rank={args.rank}",
        f"model.lora.alpha={2 * args.rank}", f"trainer.iterations={args.warmup + args.iterations + 1}",
        f"trainer.threads={args.threads}", "trainer.progress_bar=false", "trainer.checkpoint_every=0",
        "trainer.transcripts_every=0", "logger.tensorboard=false", f"trainer.seed={args.seed}",
        "strategy.activation_checkpointing=false"])  # as TRL's arm (the knobs)
    with tempfile.TemporaryDirectory() as run:
        trainer, module, _ = build_run(config, run)
        trainer.callbacks.append(Clock())
        trainer.fit(module)
    # where the time inside training_step goes, median over the measured iterations
    where = {k: statistics.median(v[args.warmup:]) for k, v in parts.items()}
    return [b - a for a, b in zip(starts, starts[1:])][args.warmup:], where


def run_trl(args) -> tuple[list[float], dict[str, float]]:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    starts: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            starts.append(time.perf_counter())

    steps = args.warmup + args.iterations + 1
    prompts = args.batch // args.group
    rows = [{"prompt": [{"role": "user", "content": f"Reply with exactly this word: {w}"}], "target": w}
            for w in (WORDS * (steps * prompts))[: steps * prompts]]

    def score(completions, target, **_):
        return [reward(c[0]["content"] if isinstance(c, list) else c, t) for c, t in zip(completions, target)]

    with tempfile.TemporaryDirectory() as out:
        config = GRPOConfig(
            output_dir=out, per_device_train_batch_size=args.batch, num_generations=args.group,
            gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, max_steps=steps,
            max_completion_length=args.new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=0.0,
            epsilon=0.2, learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
            max_grad_norm=1.0, loss_type="dapo", scale_rewards="group", use_cpu=True, bf16=False, fp16=False,
            report_to="none", save_strategy="no", logging_steps=10**6, disable_dropout=True, seed=args.seed,
            dataloader_num_workers=0, log_completions=False, shuffle_dataset=False,
            gradient_checkpointing=False)  # TRL's default is on; lorarl's (strategy.activation_checkpointing) off
        lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
        trainer = GRPOTrainer(model=args.model, reward_funcs=score, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(args.model), peft_config=lora,
                              callbacks=[Clock()])
        trainer.train()
    return [b - a for a, b in zip(starts, starts[1:])][args.warmup:], {}


def child(args) -> None:
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    seconds, where = (run_trl if args.arm == "trl" else run_lorarl)(args)
    print(json.dumps({"arm": args.arm, "s_per_iteration": statistics.median(seconds), "peak_rss_mib": peak_rss_mib(),
                      "where": where}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=8, help="measured iterations per process")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16, help="episodes (completions) per iteration")
    parser.add_argument("--group", type=int, default=4, help="completions per prompt")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", help="a packaged model's hub id (lorarl/packaged.py) instead of the tiny model")
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--arm", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        child(args)
        return
    import torch
    import trl

    print(f"torch {torch.__version__}, trl {trl.__version__}; threads per process: {args.threads}")
    print("matched knobs: " + "; ".join(f"{k}: {v}" for k, v in knobs(args).items()), flush=True)
    runs = {a: {"s": [], "rss": [], "where": []} for a in ARMS}
    with tempfile.TemporaryDirectory() as model:
        if args.pretrained:
            from lorarl.packaged import resolve

            model = resolve(args.pretrained)
            print(f"model: {args.pretrained} ({model})", flush=True)
        else:
            save_model(Path(model))
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
               "TOKENIZERS_PARALLELISM": "false"}
        for r in range(args.rounds):
            for arm in ARMS:  # interleaved: A, B, A, B
                cmd = [sys.executable, __file__, *sys.argv[1:], "--model", model, "--arm", arm]
                out = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if out.returncode != 0:
                    raise SystemExit(f"{arm}: {out.stderr[-3000:]}")
                got = json.loads(out.stdout.strip().splitlines()[-1])
                runs[arm]["s"].append(got["s_per_iteration"])
                runs[arm]["rss"].append(got["peak_rss_mib"])
                runs[arm]["where"].append(got["where"])
                print(f"round {r + 1} {arm}: {got['s_per_iteration']:.3f} s/iteration, peak RSS {got['peak_rss_mib']:.0f} MiB",
                      flush=True)
    rows = [{"arm": a, "s/iter min": f"{min(v['s']):.3f}", "s/iter median": f"{statistics.median(v['s']):.3f}",
             "peak RSS MiB median": f"{statistics.median(v['rss']):.0f}", "rounds": len(v["s"])} for a, v in runs.items()]
    ratio = statistics.median(runs["lorarl"]["s"]) / statistics.median(runs["trl"]["s"])
    mem = statistics.median(runs["lorarl"]["rss"]) / statistics.median(runs["trl"]["rss"])
    print(table(rows, f"one GRPO iteration, lorarl vs TRL GRPOTrainer ({args.threads} thread(s))"))
    print(f"lorarl / TRL seconds per iteration (median): {ratio:.2f}x; peak RSS: {mem:.2f}x")
    where = [{"part": k, "ms (median over rounds)": f"{1000 * statistics.median(w[k] for w in runs['lorarl']['where']):.1f}"}
             for k in PARTS]
    print(table(where, "lorarl: inside one iteration's training_step (perf/*; the rest is Lightning's loop, logging, callbacks)"))
    record("vs_trl", {"args": {k: v for k, v in vars(args).items() if k not in ("model", "arm")}, "knobs": knobs(args),
                      "runs": runs, "time_ratio": ratio, "rss_ratio": mem})


if __name__ == "__main__":
    main()
