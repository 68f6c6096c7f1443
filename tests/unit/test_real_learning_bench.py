"""bench/real_learning.py's sampled table: per-task rates averaged over seeds, paired over tasks."""

import pytest

from bench.real_learning import summarize_sampled, task_rates


def report(outcomes: dict[int, str], pass1: float, passk: float, k: int = 2) -> dict:
    """An evaluate.py report with two episodes per task: ``outcomes[task]`` gives them as 'cc', 'ci', ..."""
    episodes = [{"task": t, "outcome": "correct" if c == "c" else "incorrect"} for t, pair in outcomes.items() for c in pair]
    return {"episodes": episodes, "confidence": {"pass@1": pass1, f"pass@{k}": passk}}


def test_task_rates_are_each_tasks_share_of_correct_episodes():
    assert task_rates(report({0: "cc", 1: "ci", 2: "ii"}, 0.5, 0.67)) == {0: 1.0, 1: 0.5, 2: 0.0}


def test_arm_against_sft_averages_seeds_per_task_then_pairs_tasks():
    sft = report({0: "ci", 1: "ii", 2: "ii", 3: "cc"}, 0.375, 0.5)
    seeds = [report({0: "cc", 1: "ci", 2: "ii", 3: "cc"}, 0.625, 0.75),  # task rates 1, .5, 0, 1
             report({0: "ci", 1: "cc", 2: "ci", 3: "cc"}, 0.75, 1.0)]    # task rates .5, 1, .5, 1
    results = [{"sft": {"k": sft}, "arms": {"grpo": {"k": s}}} for s in seeds]
    control, grpo = summarize_sampled(results, 2)
    assert control["model"] == "SFT only (control)" and control["pass@1 (mean of seeds)"] == 0.375
    assert control["paired bootstrap p"] == ""
    assert grpo["pass@1 (mean of seeds)"] == pytest.approx(0.688, abs=1e-3) and grpo["per seed"] == "0.625 0.750"
    assert grpo["pass@2"] == pytest.approx(0.875)
    # per task, mean of seeds minus SFT: .75-.5, .75-0, .25-0, 1-1 -> mean 0.3125
    assert grpo["vs SFT (95% CI over tasks)"].startswith("+0.312 [")
    assert 0 < float(grpo["paired bootstrap p"]) < 1


def test_agentbench_sampled_reports_are_summarised_under_their_own_key():
    sft = report({0: "ci", 1: "ii"}, 0.25, 0.5)
    arm = report({0: "cc", 1: "ci"}, 0.75, 1.0)
    results = [{"sft": {"k": sft, "ab_k": arm}, "arms": {"grpo": {"k": arm, "ab_k": sft}}}]
    assert summarize_sampled(results, 2, "ab_k")[1]["pass@1 (mean of seeds)"] == 0.25
    assert summarize_sampled(results, 2)[1]["pass@1 (mean of seeds)"] == 0.75


def test_generated_evaluations_play_the_env_kwargs_rl_trained_on(tmp_path, monkeypatch):
    """`--sft-adapter ... env.kwargs.skills=wide`: the held-out generated tasks are drawn as RL's
    were; AgentBench's evaluation keeps its own source."""
    import argparse

    import bench.real_learning as rl

    calls = []
    monkeypatch.setattr(rl, "sh", lambda cmd, log: calls.append(cmd))
    args = argparse.Namespace(tasks=48, overrides=["env.kwargs.skills=wide", "trainer.threads=1"],
                              samples=8, sample_temperature=0.5, sampled_on="both", agentbench=True)
    monkeypatch.setattr(rl.json, "loads", lambda text: {})
    monkeypatch.setattr(rl.Path, "read_text", lambda self: "{}")
    out = rl.sampled_all("ad", tmp_path, "sft", "db_bench", tmp_path, args)
    assert set(out) == {"k", "ab_k"}
    gen, ab = calls
    assert "env.kwargs.skills=wide" in gen and "trainer.threads=1" not in gen
    assert "env.kwargs.skills=wide" not in ab and "env.kwargs.source=agentbench" in ab
    assert "num_samples_per_task=8" in gen and f"report={tmp_path / 'sft_ab_k8_t0.5.json'}" in ab


@pytest.mark.parametrize("env", ["db_bench", "os_interaction"])
@pytest.mark.parametrize("arm", ["grpo", "ppo"])
def test_every_arm_composes_with_the_documented_study_overrides(env, arm):
    """The documented os command sets algorithm.skip_uniform_groups=true (GRPO's alone), and so
    does the os preset: the PPO arm must still compose and validate, as a critic with GAE."""
    from bench.real_learning import PRESETS, rl_overrides
    from tests.conftest import compose

    study = ["trainer.threads=1", "algorithm.group_size=8", "algorithm.skip_uniform_groups=true", "sft.replay_coef=1"]
    c = compose(rl_overrides([f"experiment={PRESETS[env]}", "trainer.seed=0"], "adapter", arm, ["sft.data=t.jsonl"], study))
    assert c.algorithm.advantage == ("gae" if arm == "ppo" else "grpo")
    assert c.algorithm.skip_uniform_groups == (arm == "grpo") and c.algorithm.group_size == 8
    assert c.stage == "rl" and c.model.lora.lora_path == "adapter" and c.sft.replay_coef == 1
