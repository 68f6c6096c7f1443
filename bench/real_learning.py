"""Does RL make a real language model better at the envs? SmolLM2-135M-Instruct, SFT on executed
oracle transcripts, then GRPO and PPO from that adapter, against the SFT adapter alone (the control:
RL at lr = 0 leaves the SFT adapter as it is) and the base model, for several seeds, on tasks never
trained on: generated tasks of every skill (seeds from 1e9) and AgentBench's dev split.

    python bench/real_learning.py --env db_bench                      # 3 seeds; hours on 2 cores
    python bench/real_learning.py --env os_interaction --seeds 0 trainer.iterations=4   # a quick look
    python bench/real_learning.py --sft-adapter runs/x/checkpoints/iter_000001 --arms grpo   # RL seeds from one SFT

Every step is a command a user can run (train.py, evaluate.py), its output kept under ``--work``;
a rerun skips what finished (and evaluate.py continues an interrupted evaluation), so the study
survives interruptions. The recipe is the env's experiment preset (conf/experiment/smollm2_db.yaml,
smollm2_os.yaml); extra Hydra overrides apply to every training run. Prints the table (success
with Wilson intervals, per skill, paired McNemar tests of each RL arm against SFT on the same
tasks, pooled over seeds), appends it to bench/results.jsonl and draws ``--png`` (held-out
success vs RL iteration, each arm).
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
sys.path[:0] = [str(ROOT)]

from bench.common import record, table  # noqa: E402

PRESETS = {"db_bench": "smollm2_db", "os_interaction": "smollm2_os"}
AGENTBENCH = {"db_bench": ("dbbench/dev.jsonl", 60), "os_interaction": ("os_interaction/dev.json", 26)}
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# each arm's own overrides, applied after the shared ones: skip_uniform_groups is GRPO's alone (a
# critic's advantages are not 0 on a group of equal rewards), and the os preset turns it on
ARMS = {"grpo": [], "ppo": ["algorithm=ppo", "algorithm.skip_uniform_groups=false"]}
HELD_OUT_SEED = 1_000_000_000  # trainer.eval_seed: periodic evaluation and evaluate.py play the same tasks


def sh(cmd: list[str], log: Path) -> None:
    """Run a step, its output to ``log``; stop the study with the log's tail if it fails."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        code = subprocess.call(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    print(f"  {time.perf_counter() - t0:7.0f} s  {' '.join(cmd[1:4])} ... ({log.name})", flush=True)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(cmd)}\n" + "".join(log.read_text().splitlines(True)[-20:]))


def evaluate(adapter: str, report: Path, env: str, shared: Path, args, agentbench: bool, extra=(), batch=8) -> dict:
    """Greedy evaluation of an adapter ("none": the base model) on the held-out tasks (``extra``:
    more overrides for evaluate.py); the report."""
    if not report.exists():
        cmd = [sys.executable, "evaluate.py", f"adapter={adapter}", f"report={report}", "baseline=false",
               f"env={env}", f"batch_size={batch}", *extra]
        if adapter == "none":
            cmd.append(f"model_path={MODEL}")
        if agentbench:
            path, n = AGENTBENCH[env]
            cmd += ["env.kwargs.source=agentbench", f"env.kwargs.path={shared / path}", "by_task_index=true",
                    f"num_samples={n}"]
        else:  # the generated tasks RL trained on (its env.kwargs overrides: skills, names), other seeds
            cmd += [f"num_samples={args.tasks}", f"seed={HELD_OUT_SEED}",
                    *(o for o in args.overrides if o.startswith("env.kwargs."))]
        sh(cmd, report.with_suffix(".log"))
    return json.loads(report.read_text())


def sampled(adapter: str, report_dir: Path, name: str, env: str, shared: Path, args, agentbench: bool = False) -> dict:
    """``--samples`` episodes per held-out task (generated, or AgentBench's), sampled at
    ``--sample-temperature`` (the policy RL trains, where greedy decoding shows only its mode):
    pass@1, pass@k and per-task rates."""
    extra = [f"num_samples_per_task={args.samples}", "algorithm.sampling.greedy=false",
             f"algorithm.sampling.temperature={args.sample_temperature}"]
    report = report_dir / f"{name}_{'ab' if agentbench else 'gen'}_k{args.samples}_t{args.sample_temperature}.json"
    return evaluate(adapter, report, env, shared, args, agentbench, extra, batch=16)


def sampled_all(adapter: str, report_dir: Path, name: str, env: str, shared: Path, args) -> dict:
    """The sampled evaluations ``--sampled-on`` asks for: {"k": generated, "ab_k": AgentBench's}."""
    out = {}
    if args.sampled_on in ("generated", "both"):
        out["k"] = sampled(adapter, report_dir, name, env, shared, args)
    if args.agentbench and args.sampled_on in ("agentbench", "both"):
        out["ab_k"] = sampled(adapter, report_dir, name, env, shared, args, agentbench=True)
    return out


def newest(run: Path) -> str:
    found = sorted((run / "checkpoints").glob("iter_*"))
    if not found:
        raise SystemExit(f"{run}: no checkpoint")
    return str(found[-1])


def one_seed(seed: int, args, work: Path, shared: Path) -> dict:
    preset = PRESETS[args.env]
    here = work / f"seed{seed}"
    data = here / "transcripts.jsonl"
    if not data.exists() and not args.sft_adapter:
        first = 10_000 + 100_000 * seed  # this seed's training tasks; held-out tasks are 1e9 + i
        sh([sys.executable, "scripts/make_transcripts.py", "--env", args.env, "--episodes", str(args.transcripts),
            "--seed", str(first), "--out", str(data)], here / "transcripts.log")
    sft = here / "sft"
    common = [f"experiment={preset}", f"trainer.seed={seed}", "trainer.progress_bar=false"]
    # replayed: the transcripts SFT trained on, which RL replays where the recipe says so (sft.replay_coef)
    if args.sft_adapter:  # every seed's RL starts from the same SFT adapter: the spread is RL's alone
        sft_adapter, evals = args.sft_adapter, work / "eval"
        replayed = [f"sft.data={Path(args.sft_data).resolve()}"] if args.sft_data else []
    else:
        replayed = [f"sft.data={data}"]
        if not list((sft / "checkpoints").glob("iter_*")):
            sh([sys.executable, "train.py", *common, "stage=sft", f"sft.data={data}", f"hydra.run.dir={sft}",
                *args.overrides], here / "sft.log")
        sft_adapter, evals = newest(sft), here / "eval"
    out = {"seed": seed, "sft": {"gen": evaluate(sft_adapter, evals / "sft_gen.json", args.env, shared, args, False)},
           "arms": {}}
    if args.agentbench:
        out["sft"]["ab"] = evaluate(sft_adapter, evals / "sft_ab.json", args.env, shared, args, True)
    if args.samples:
        out["sft"].update(sampled_all(sft_adapter, evals, "sft", args.env, shared, args))
    for arm in ARMS:
        if arm not in args.arms:
            continue
        run = here / arm
        done = run / "DONE"
        if not done.exists():
            sh([sys.executable, "train.py", *rl_overrides(common, sft_adapter, arm, replayed, args.overrides),
                f"hydra.run.dir={run}"], here / f"{arm}.log")
            done.write_text("ok")
        adapter = newest(run)
        # the run's own held-out evaluation at its last iteration (PeriodicEvaluation's report: the
        # same tasks and greedy decoding as evaluate.py), else evaluate.py
        last = sorted((run / "eval").glob("iter_*.json"))
        final = json.loads(last[-1].read_text()) if last and last[-1].stem == Path(adapter).name else None
        res = {"gen": final if final and len(final["episodes"]) == args.tasks
               else evaluate(adapter, here / f"eval/{arm}_gen.json", args.env, shared, args, False), "curve": curve(run),
               "iteration": int(Path(adapter).name.split("_")[-1])}
        if args.agentbench:
            res["ab"] = evaluate(adapter, here / f"eval/{arm}_ab.json", args.env, shared, args, True)
        if args.samples:
            res.update(sampled_all(adapter, here / "eval", arm, args.env, shared, args))
        out["arms"][arm] = res
    return out


def rl_overrides(common: list[str], sft_adapter: str, arm: str, replayed: list[str], overrides: list[str]) -> list[str]:
    """train.py's overrides for an arm's RL run from the SFT adapter: the study's shared overrides,
    then the arm's own, which win (the GRPO-only skip that the os preset and study commands set)."""
    return [*common, "stage=rl", f"model.lora.lora_path={sft_adapter}", *replayed, *overrides, *ARMS[arm]]


def curve(run: Path) -> dict:
    """Held-out success of the periodic evaluations (iteration -> success) and training reward."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = next(run.rglob("events.out.tfevents*"), None)
    if events is None:
        return {}
    acc = EventAccumulator(str(events.parent))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    get = lambda tag: {int(e.step): e.value for e in acc.Scalars(tag)} if tag in tags else {}  # noqa: E731
    return {"eval": get("eval/success_rate"), "reward": get("rollout/reward_mean"), "train_success": get("rollout/success_rate"),
            "kl": get("rollout/kl_to_base_k3")}


def successes(report: dict) -> dict[int, bool]:
    return {e["task"]: e["outcome"] == "correct" for e in report["episodes"]}


def mcnemar_cell(reports: list[dict], against: list[dict]) -> str:
    """McNemar's exact test of ``reports`` against ``against`` paired report by report (seed by
    seed) on the tasks both played, discordant pairs pooled: "0.0213 (9 vs 2)"."""
    from lorarl.stats import mcnemar_exact

    only_me = only_them = 0
    for mine, theirs in zip(reports, against):
        a, b = successes(mine), successes(theirs)
        only_me += sum(a[t] and not b[t] for t in a if t in b)
        only_them += sum(b[t] and not a[t] for t in a if t in b)
    return f"{mcnemar_exact(only_me, only_them):.3g} ({only_me} vs {only_them})"


def bootstrap_cells(mine: dict[int, float], theirs: dict[int, float]) -> tuple[str, str]:
    """A paired bootstrap over the tasks both have of per-task success rates: the difference with
    its 95% interval, and the p-value ("+0.065 [+0.005, +0.125]", "0.037")."""
    from lorarl.stats import paired_bootstrap

    tasks = sorted(set(mine) & set(theirs))
    boot = paired_bootstrap([mine[t] for t in tasks], [theirs[t] for t in tasks])
    lo, hi = boot["ci95"]
    return f"{boot['difference']:+.3f} [{lo:+.3f}, {hi:+.3f}]", f"{boot['p_value']:.3g}"


ARM_LABEL = ["SFT + {arm}"]  # --arm-label: what the tables and the plot call an RL arm


def label(arm: str) -> str:
    return ARM_LABEL[0].format(arm=arm.upper())


def summarize(results: list[dict], base: dict, key: str) -> list[dict]:
    """Rows: base, SFT, each arm; success over seeds, pooled Wilson interval, McNemar vs SFT pooled."""
    sys.path[:0] = [str(ROOT)]
    from lorarl.stats import wilson_interval

    rows = []

    def row(name: str, reports: list[dict], against: list[dict] | None):
        rates = [r["metrics"]["success_rate"] for r in reports]
        wins = sum(sum(successes(r).values()) for r in reports)
        n = sum(len(r["episodes"]) for r in reports)
        lo, hi = wilson_interval(wins, n)
        entry = {"model": name, "success (mean of seeds)": round(statistics.mean(rates), 3),
                 "per seed": " ".join(f"{x:.3f}" for x in rates), "95% CI (pooled)": f"[{lo:.2f}, {hi:.2f}]",
                 "vs SFT": "", "McNemar p": ""}
        if against:
            entry["vs SFT"] = f"{statistics.mean(rates) - statistics.mean(s['metrics']['success_rate'] for s in against):+.3f}"
            entry["McNemar p"] = mcnemar_cell(reports, against)
        rows.append(entry)

    row("base (no training)", [base], None)
    sft = [r["sft"][key] for r in results]
    row("SFT only (control)", sft, None)
    for arm in results[0]["arms"]:
        row(label(arm), [r["arms"][arm][key] for r in results], sft)
    return rows


def task_rates(report: dict) -> dict[int, float]:
    """Each task's share of correct episodes."""
    by_task: dict[int, list[bool]] = {}
    for e in report["episodes"]:
        by_task.setdefault(e["task"], []).append(e["outcome"] == "correct")
    return {t: sum(v) / len(v) for t, v in by_task.items()}


def summarize_sampled(results: list[dict], k: int, key: str = "k") -> list[dict]:
    """Rows: SFT, each arm; sampled pass@1 and pass@k over seeds, and a paired bootstrap over tasks of
    each arm's per-task success rate (mean of its seeds) against SFT's on the same tasks."""
    def rates_over_seeds(reports: list[dict]) -> dict[int, float]:
        per = [task_rates(r) for r in reports]
        return {t: statistics.mean(p[t] for p in per) for t in per[0]}

    def row(name: str, reports: list[dict], against: dict[int, float] | None) -> dict:
        p1 = [r["confidence"]["pass@1"] for r in reports]
        entry = {"model": name, "pass@1 (mean of seeds)": round(statistics.mean(p1), 3),
                 "per seed": " ".join(f"{x:.3f}" for x in p1),
                 f"pass@{k}": round(statistics.mean(r["confidence"].get(f"pass@{k}", float("nan")) for r in reports), 3),
                 "vs SFT (95% CI over tasks)": "", "paired bootstrap p": ""}
        if against:
            entry["vs SFT (95% CI over tasks)"], entry["paired bootstrap p"] = bootstrap_cells(rates_over_seeds(reports), against)
        return entry

    sft = [r["sft"][key] for r in results]
    control = rates_over_seeds(sft)
    return [row("SFT only (control)", sft, None),
            *[row(label(a), [r["arms"][a][key] for r in results], control) for a in results[0]["arms"]]]


def per_skill(results: list[dict]) -> list[dict]:
    """Generated held-out success per skill (task type), mean over seeds."""
    models = {"SFT": [r["sft"]["gen"] for r in results],
              **{f"SFT+{a.upper()}": [r["arms"][a]["gen"] for r in results] for a in results[0]["arms"]}}
    skills = sorted({k.split("/", 1)[1] for reps in models.values() for r in reps for k in r["metrics"]
                     if k.startswith("success_rate/")})
    return [{"skill": s, **{m: round(statistics.mean(r["metrics"].get(f"success_rate/{s}", float("nan")) for r in reps), 3)
                            for m, reps in models.items()}} for s in skills]


def plot(results: list[dict], sft_rate: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in results[0]["arms"]:
        steps = sorted(results[0]["arms"][arm]["curve"].get("eval", {}))
        xs = [0, *steps]
        ys = [[r["sft"]["gen"]["metrics"]["success_rate"] for r in results],
              *[[r["arms"][arm]["curve"]["eval"].get(s, float("nan")) for r in results] for s in steps]]
        line, = ax1.plot(xs, [statistics.mean(y) for y in ys], marker="o", label=label(arm))
        ax1.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], alpha=0.15, color=line.get_color())
        if all("k" in r["arms"][arm] for r in results):  # --samples: the final adapters' sampled pass@1 against SFT's
            ys = [[r["sft"]["k"]["confidence"]["pass@1"] for r in results],
                  [r["arms"][arm]["k"]["confidence"]["pass@1"] for r in results]]
            mid = [statistics.mean(y) for y in ys]
            ax1.errorbar([0, results[0]["arms"][arm]["iteration"]], mid, fmt="s:", color=line.get_color(), capsize=4,
                         yerr=[[m - min(y) for m, y in zip(mid, ys)], [max(y) - m for m, y in zip(mid, ys)]],
                         label=f"{label(arm)}, sampled pass@1 (iteration 0: SFT's)")
        rew = sorted(results[0]["arms"][arm]["curve"].get("reward", {}))
        ax2.plot(rew, [statistics.mean(r["arms"][arm]["curve"]["reward"].get(s, float("nan")) for r in results) for s in rew],
                 label=arm.upper(), color=line.get_color())
    ax1.axhline(sft_rate, color="gray", linestyle="--", label="SFT only (control)")
    ax1.set_ylim(0, 1)  # the whole range: a change of a few tasks looks as small as it is
    ax1.set(xlabel="RL iteration (0 = after SFT)", ylabel="held-out success (greedy; squares: sampled)", title=f"{title}: held-out success")
    ax2.set(xlabel="RL iteration", ylabel="mean episode reward (sampled)", title=f"{title}: training reward")
    ax1.legend(loc="lower right", fontsize="small")  # the curves sit above 0.35 in every study so far: below them the legend hides none
    ax2.legend()
    fig.suptitle(f"SmolLM2-135M-Instruct on a 2-core CPU, mean of {len(results)} seeds (band: min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", choices=sorted(PRESETS), default="db_bench")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--arms", default="grpo,ppo")
    p.add_argument("--tasks", type=int, default=48, help="generated held-out tasks")
    p.add_argument("--transcripts", type=int, default=240, help="oracle transcripts for SFT")
    p.add_argument("--work", default=None, help="where every run and report goes (default runs/study_<env>)")
    p.add_argument("--shared", default=str(ROOT.parent / "shared/data/agentbench"))
    p.add_argument("--no-agentbench", dest="agentbench", action="store_false")
    p.add_argument("--sft-adapter", default=None, help="one SFT adapter for every seed (skips SFT; seeds vary RL only)")
    p.add_argument("--sft-data", default=None, help="with --sft-adapter: the transcripts it was trained on, which RL "
                   "replays where the preset sets sft.replay_coef (smollm2_os); or give sft.replay_coef=0")
    p.add_argument("--samples", type=int, default=0,
                   help="also evaluate every adapter with this many sampled episodes per generated held-out task (pass@k)")
    p.add_argument("--sample-temperature", type=float, default=0.5, help="temperature of those samples (the RL runs' own)")
    p.add_argument("--png", default=None)
    p.add_argument("--sampled-on", choices=("generated", "agentbench", "both"), default="generated",
                   help="with --samples: which held-out tasks are also evaluated sampled")
    p.add_argument("--arm-label", default=ARM_LABEL[0],
                   help="what tables and the plot call an RL arm, {arm} its name (e.g. 'SFT + {arm} + replay')")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every training run")
    args = p.parse_args()
    ARM_LABEL[0] = args.arm_label
    args.arms = args.arms.split(",")
    args.sft_adapter = args.sft_adapter and str(Path(args.sft_adapter).resolve())
    work = Path(args.work or ROOT / "runs" / f"study_{args.env}").resolve()
    shared = Path(args.shared).resolve()
    args.agentbench = args.agentbench and (shared / AGENTBENCH[args.env][0]).exists()
    start = time.perf_counter()
    print(f"study: {args.env}, seeds {args.seeds}, arms {args.arms}, work {work}", flush=True)
    results = [one_seed(int(s), args, work, shared) for s in args.seeds.split(",")]
    base = {"gen": evaluate("none", work / "base_gen.json", args.env, shared, args, False)}
    if args.agentbench:
        base["ab"] = evaluate("none", work / "base_ab.json", args.env, shared, args, True)
    out = {"generated": summarize(results, base["gen"], "gen"), "skills": per_skill(results)}
    print(table(out["generated"], f"{args.env}: {args.tasks} generated held-out tasks, greedy, {len(results)} seeds"))
    print(table(out["skills"], f"{args.env}: generated held-out success per skill (mean of seeds)"))
    if args.samples and "k" in results[0]["sft"]:
        out["sampled"] = summarize_sampled(results, args.samples)
        print(table(out["sampled"], f"{args.env}: the same {args.tasks} tasks, {args.samples} episodes each sampled at "
                                    f"temperature {args.sample_temperature}, {len(results)} seeds"))
    if args.agentbench:
        out["agentbench"] = summarize(results, base["ab"], "ab")
        print(table(out["agentbench"], f"{args.env}: AgentBench dev split ({AGENTBENCH[args.env][1]} tasks), greedy"))
        if args.samples and "ab_k" in results[0]["sft"]:
            out["agentbench_sampled"] = summarize_sampled(results, args.samples, "ab_k")
            print(table(out["agentbench_sampled"], f"{args.env}: AgentBench dev split, {args.samples} episodes per task "
                                                   f"sampled at temperature {args.sample_temperature}, {len(results)} seeds"))
    if results[0]["arms"]:  # success vs RL iteration: without an RL arm there is no curve to draw
        png = Path(args.png) if args.png else ROOT / "docs" / f"learning_{args.env}.png"
        plot(results, statistics.mean(r["sft"]["gen"]["metrics"]["success_rate"] for r in results), png, args.env)
        print(f"wrote {png}")
    print(f"{time.perf_counter() - start:.0f} s")
    record("real_learning", {"args": vars(args), **out})


if __name__ == "__main__":
    main()
