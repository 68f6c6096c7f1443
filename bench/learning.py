"""Does training improve an agent? Warm start by SFT on executed oracle transcripts, then RL,
against an lr=0 control, on held-out tasks; and GRPO from scratch on the same tasks.

    python bench/learning.py                                   # target_word, 3 seeds: about 2 minutes on 2 cores
    python bench/learning.py --env db_bench                    # db_bench count, 3 seeds: about 12 minutes
    python bench/learning.py --seeds 0 trainer.iterations=10   # a quick look (Hydra overrides for every run)

For each seed: oracle transcripts (task seeds of that run only; evaluation uses 1e9 + i),
``stage=sft`` of the tiny model (db_bench: with a BPE tokenizer trained on the transcripts),
greedy evaluation on held-out tasks, then from that adapter GRPO, PPO and a control (GRPO with
lr=0), each evaluated on the same held-out tasks every few iterations. RL runs keep a KL penalty
to the SFT policy (the warm start's frozen adapter). The settings are those of the env's
experiment preset (conf/experiment/target_word_warmstart.yaml, db_count_warmstart.yaml). Prints a table, appends a JSON line to bench/results.jsonl,
writes docs/learning.png (held-out success and training reward vs iteration, mean over seeds,
min-max band).
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

# The recipe of each env is its experiment preset (conf/experiment/): SFT and RL settings, env
# kwargs, tokenizer, held-out tasks. The bench adds seeds, arms and the lr=0 control.
PRESETS = {"target_word": "target_word_warmstart", "db_bench": "db_count_warmstart"}
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


def recipe(args) -> list[str]:
    skills = [f"env.kwargs.skills=[{args.skills}]"] if args.skills else []
    return [f"experiment={PRESETS[args.env]}", *skills, *args.overrides]


def held_out_success(adapter: Path, args) -> float:
    """Greedy success of an adapter on the held-out seeds the RL runs evaluate on."""
    from conftest import compose
    from lorarl.pipeline import held_out_success as measure

    return measure(compose([*recipe(args), "stage=rl"]), adapter)


def one_seed(seed: int, args, work: Path) -> dict:
    from conftest import compose
    from lorarl import transcripts

    config = compose(recipe(args))
    data = work / f"transcripts_{seed}.jsonl"
    first = 10_000 * (seed + 1)  # task seeds of this run's transcripts; evaluation uses 1e9 + i
    episodes = range(first, first + config.sft.oracle_episodes)
    transcripts.write(transcripts.oracle_transcripts(config.env.id, dict(config.env.kwargs), episodes), data)
    sft_dir = work / f"sft_{seed}"
    t0 = time.perf_counter()
    run([*recipe(args), "stage=sft", f"sft.data={data}", f"trainer.seed={seed}", *QUIET], sft_dir)
    adapter = sft_dir / f"checkpoints/iter_{config.sft.epochs:06d}"
    out = {"seed": seed, "sft_s": time.perf_counter() - t0,
           "sft_success": held_out_success(adapter, args), "curves": {}}
    common = [*recipe(args), "stage=rl", f"model.lora.lora_path={adapter}", f"trainer.seed={seed}", *QUIET]
    for name, extra in (("grpo", []), ("ppo", ["algorithm=ppo"]), ("control (lr=0)", ["algorithm.optim.lr=0"])):
        _, evals, stats = run(common + extra, work / f"{name.split()[0]}_{seed}")
        out["curves"][name] = {"iteration": [0] + [h["iteration"] for h in evals],
                               "success": [out["sft_success"]] + [h["success_rate"] for h in evals],
                               "train_reward": [s["rollout/reward_mean"] for s in stats],
                               "train_success": [s["rollout/success_rate"] for s in stats],
                               "entropy": [s.get("train/entropy", float("nan")) for s in stats],
                               "kl": [next((v for k, v in s.items() if k.startswith("rollout/kl_to_base")), 0.0)
                                      for s in stats]}
    return out


def from_scratch(args, work: Path) -> dict:
    """The same env and held-out tasks, GRPO from the random model (the from-scratch lr and T=1)."""
    _, evals, _ = run([*recipe(args), "stage=rl", "algorithm.optim.lr=3e-3", "algorithm.sampling.temperature=1.0",
                       "algorithm.kl_coef=0", "trainer.iterations=60", "trainer.eval_every=60", *QUIET], work / "scratch")
    return {"run": "GRPO from scratch, 60 iterations", "held_out_success": round(evals[-1]["success_rate"], 3)}


def plot(results: list[dict], path: Path, title: str) -> None:
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
    ax1.set(xlabel="RL iteration (0 = after SFT)", ylabel="held-out success (greedy)", title=f"{title}: success")
    ax2.set(xlabel="RL iteration", ylabel="mean episode reward (sampled)", title=f"{title}: training reward")
    ax1.legend()
    fig.suptitle(f"tiny model, SFT then RL, mean of {len(results)} seeds (band: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--env", choices=sorted(PRESETS), default="target_word")
    p.add_argument("--skills", default=None, help="db_bench: comma-separated skills instead of the preset's count")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. trainer.iterations=10")
    p.add_argument("--png", default=str(ROOT / "docs/learning.png"))
    p.add_argument("--no-scratch", action="store_true", help="skip the from-scratch GRPO run")
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
    title = f"{args.env} ({args.skills})" if args.skills else args.env
    iterations = results[0]["curves"]["grpo"]["iteration"][-1]
    print(table(rows, f"{title}, held-out success, {len(results)} seeds, {iterations} RL iterations"))
    scratch = None if args.no_scratch else from_scratch(args, work)
    if scratch:
        print(table([scratch], f"{title}, without the warm start"))
    plot(results, Path(args.png), title)
    print(f"wrote {args.png}; {time.perf_counter() - start:.0f} s")
    record("learning", {"args": vars(args), "table": rows, "from_scratch": scratch, "seeds": results})


if __name__ == "__main__":
    main()
