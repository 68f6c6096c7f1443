"""Does training improve an agent on a real env? Warm start by SFT on executed oracle transcripts,
then RL, against an lr=0 control, on held-out tasks; and the toy env from scratch vs warm-started.

    python bench/learning.py                 # CPU, 3 seeds, about 20 minutes on 2 cores
    python bench/learning.py --seeds 0 --rl-iterations 10     # a quick look

For each seed: oracle transcripts of db_bench generator tasks (``--skills``, seeds of that run
only), ``stage=sft`` of the tiny model with a BPE tokenizer trained on them, greedy evaluation on
held-out tasks, then from that adapter GRPO, PPO and a control (GRPO with lr=0), each evaluated
on the same held-out tasks every few iterations. RL runs keep a KL penalty to the SFT policy (the
warm start's frozen adapter). Prints a table, appends a JSON line to bench/results.jsonl, writes
docs/learning.png (held-out success and training reward vs iteration, mean over seeds, min-max band).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from bench.common import record, table  # noqa: E402

ENV = ["env=db_bench", "env.kwargs.max_rounds=3"]
QUIET = ["trainer.progress_bar=false", "trainer.checkpoint_every=0", "logger.tensorboard=false"]


def run(overrides: list[str], run_dir: Path, history: bool = False):
    """Train in-process; returns (module, periodic-eval history, per-iteration training stats)."""
    import lightning as L

    import envs  # noqa: F401
    from conftest import compose
    from lorarl.callbacks import PeriodicEvaluation
    from lorarl.factory import build_run

    trainer, module, _ = build_run(compose(overrides), run_dir)
    per_iteration = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            per_iteration.append(dict(module.last_stats))

    trainer.callbacks.append(Record())
    trainer.fit(module)
    evals = next((c.history for c in trainer.callbacks if isinstance(c, PeriodicEvaluation)), [])
    return module, evals, per_iteration


def held_out_success(adapter: Path, skills: str, samples: int) -> float:
    """Greedy success of an adapter on the held-out seeds the RL runs evaluate on."""
    from dataclasses import replace

    import envs  # noqa: F401
    from conftest import compose
    from lorarl.environments import build_envs
    from lorarl.evaluation import EvalSpec, evaluate_policy
    from lorarl.factory import build_base, build_policy, warm_start
    from lorarl.rollout import RolloutCollector

    config = compose([*ENV, f"env.kwargs.skills=[{skills}]", f"model.lora.lora_path={adapter}"])
    model = warm_start(config.model)
    tok, lm, base = build_base(model, Path(tempfile.mkdtemp()), corpus=None)
    policy = build_policy(lm, model, base, False, False).eval()
    collector = RolloutCollector(build_envs(config.env, 16), tok, replace(config.algorithm.sampling, greedy=True),
                                 config.reward)
    episodes, _ = evaluate_policy(policy, collector, EvalSpec(samples, config.trainer.eval_seed))
    return sum(e.outcome == "correct" for e in episodes) / len(episodes)


def one_seed(seed: int, args, work: Path) -> dict:
    from lorarl import transcripts

    data = work / f"transcripts_{seed}.jsonl"
    kwargs = {"max_rounds": 3, "skills": args.skills.split(",")}
    first = 10_000 * (seed + 1)  # task seeds of this run's transcripts; evaluation uses 1e9 + i
    transcripts.write(transcripts.oracle_transcripts("lorarl/DBBench-v0", kwargs, range(first, first + args.transcripts)), data)
    sft_dir = work / f"sft_{seed}"
    t0 = time.perf_counter()
    run([*ENV, f"env.kwargs.skills=[{args.skills}]", "stage=sft", f"sft.data={data}", "model.tokenizer=bpe",
         f"sft.epochs={args.sft_epochs}", "sft.batch_size=16", f"trainer.seed={seed}", *QUIET], sft_dir)
    adapter = sft_dir / f"checkpoints/iter_{args.sft_epochs:06d}"
    out = {"seed": seed, "sft_s": time.perf_counter() - t0,
           "sft_success": held_out_success(adapter, args.skills, args.eval_samples), "curves": {}}
    common = [*ENV, f"env.kwargs.skills=[{args.skills}]", f"model.lora.lora_path={adapter}", f"trainer.seed={seed}",
              f"trainer.iterations={args.rl_iterations}", f"trainer.eval_every={args.eval_every}",
              f"trainer.eval_samples={args.eval_samples}", "algorithm.envs_per_rank=32", "algorithm.kl_coef=0.02",
              f"algorithm.sampling.temperature={args.temperature}", *QUIET]
    for name, extra in (("grpo", ["algorithm=grpo", f"algorithm.optim.lr={args.lr}"]),
                        ("ppo", [f"algorithm.optim.lr={args.lr}"]),
                        ("control (lr=0)", ["algorithm=grpo", "algorithm.optim.lr=0"])):
        _, evals, stats = run(common + extra, work / f"{name.split()[0]}_{seed}")
        out["curves"][name] = {"iteration": [0] + [h["iteration"] for h in evals],
                               "success": [out["sft_success"]] + [h["success_rate"] for h in evals],
                               "train_reward": [s["rollout/reward_mean"] for s in stats],
                               "train_success": [s["rollout/success_rate"] for s in stats],
                               "entropy": [s.get("train/entropy", float("nan")) for s in stats],
                               "kl": [next((v for k, v in s.items() if k.startswith("rollout/kl_to_base")), 0.0)
                                      for s in stats]}
    return out


def toy(work: Path) -> list[dict]:
    """target_word: RL from scratch (dense reward) against SFT on its oracle, then RL."""
    from lorarl import transcripts

    data = work / "toy.jsonl"
    transcripts.write(transcripts.oracle_transcripts("lorarl/TargetWord-v0", {}, range(400)), data)
    rows = []
    _, evals, _ = run(["env=target_word", "algorithm=grpo", "trainer.iterations=60", "trainer.eval_every=60",
                       "trainer.eval_samples=32", *QUIET], work / "toy_scratch")
    rows.append({"toy env": "GRPO from scratch, 60 iterations", "held_out_success": round(evals[-1]["success_rate"], 3)})
    run(["env=target_word", "stage=sft", f"sft.data={data}", "sft.epochs=3", *QUIET], work / "toy_sft")
    _, evals, _ = run(["env=target_word", f"model.lora.lora_path={work}/toy_sft/checkpoints/iter_000003",
                       "algorithm.optim.lr=3e-4", "algorithm.kl_coef=0.02", "trainer.iterations=10",
                       "trainer.eval_every=10", "trainer.eval_samples=32", *QUIET], work / "toy_rl")
    rows.append({"toy env": "SFT 3 epochs, then PPO 10 iterations", "held_out_success": round(evals[-1]["success_rate"], 3)})
    return rows


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name in results[0]["curves"]:
        xs = results[0]["curves"][name]["iteration"]
        ys = [[r["curves"][name]["success"][i] for r in results] for i in range(len(xs))]
        line, = ax1.plot(xs, [statistics.mean(y) for y in ys], marker="o", label=name)
        ax1.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.15, color=line.get_color())
        tr = [[r["curves"][name]["train_reward"][i] for r in results] for i in range(len(results[0]["curves"][name]["train_reward"]))]
        ax2.plot(range(1, len(tr) + 1), [statistics.mean(t) for t in tr], label=name, color=line.get_color())
    ax1.set(xlabel="RL iteration (0 = after SFT)", ylabel="held-out success (greedy)", title="db_bench: success")
    ax2.set(xlabel="RL iteration", ylabel="mean episode reward (sampled)", title="db_bench: training reward")
    ax1.legend()
    fig.suptitle(f"tiny model, SFT then RL, mean of {len(results)} seeds (band: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--skills", default="count")
    p.add_argument("--transcripts", type=int, default=1500)
    p.add_argument("--sft-epochs", type=int, default=3)
    p.add_argument("--rl-iterations", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--eval-samples", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--png", default=str(ROOT / "docs/learning.png"))
    p.add_argument("--no-toy", action="store_true")
    args = p.parse_args()
    from lorarl.logs import quiet_console

    quiet_console(progress_bar=False)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="lorarl-learning-"))
    results = [one_seed(int(s), args, work) for s in args.seeds.split(",")]
    rows = []
    for name in results[0]["curves"]:
        finals = [r["curves"][name]["success"][-1] for r in results]
        gain = [f - c for f, c in zip(finals, [r["curves"]["control (lr=0)"]["success"][-1] for r in results])]
        rows.append({"run": name, "after_sft": round(statistics.mean(r["sft_success"] for r in results), 3),
                     "final_mean": round(statistics.mean(finals), 3), "final_min": round(min(finals), 3),
                     "final_max": round(max(finals), 3), "vs_control_mean": round(statistics.mean(gain), 3),
                     "entropy_last": round(statistics.mean(r["curves"][name]["entropy"][-1] for r in results), 3),
                     "kl_last": round(statistics.mean(r["curves"][name]["kl"][-1] for r in results), 4)})
    print(table(rows, f"db_bench ({args.skills}), held-out success, {len(results)} seeds, {args.rl_iterations} RL iterations"))
    toy_rows = [] if args.no_toy else toy(work)
    if toy_rows:
        print(table(toy_rows, "target_word (toy)"))
    plot(results, Path(args.png))
    print(f"wrote {args.png}; {time.perf_counter() - start:.0f} s")
    record("learning", {"args": vars(args), "table": rows, "toy": toy_rows, "seeds": results})


if __name__ == "__main__":
    main()
