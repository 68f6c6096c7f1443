"""The real entrypoint and the real loop on composed configs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import envs  # noqa: F401
from conftest import ROOT, compose, run_train
from lorarl.factory import build_run

FAST = ["trainer.progress_bar=false", "trainer.transcripts_every=1", "env=target_word"]


def _peft_load(ckpt: Path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = json.loads((ckpt / "adapter_config.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(cfg["base_model_name_or_path"])
    return PeftModel.from_pretrained(base, str(ckpt)).eval()


def test_default_train_py_completes_and_leaves_user_files(tmp_path):
    proc = run_train([f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / ".hydra" / "config.yaml").exists()  # the composed config
    assert list((tmp_path / "tb").glob("events.out.tfevents*"))
    ckpts = sorted((tmp_path / "checkpoints").iterdir())
    assert [c.name for c in ckpts] == ["iter_000005", "iter_000010"]
    for c in ckpts:
        for f in ("adapter_config.json", "adapter_model.safetensors", "training_stats.json", "trainer_state.pt"):
            assert (c / f).exists(), f"{c / f} missing"
    stats = json.loads((ckpts[-1] / "training_stats.json").read_text())
    assert stats["iteration"] == 10 and sum(stats["outcome_counts"].values()) == 16
    for key in ("rollout/reward_mean", "rollout/success_rate", "rollout/kl_to_base_k3", "train/policy_loss"):
        assert key in stats["metrics"]
    log = (tmp_path / "train.log").read_text()
    assert "iteration 10/10 reward=" in log  # the run's log holds its lines
    # it ends by saying what it reached, where the adapter is and what to run next, on the console and in the log
    newest = tmp_path / "checkpoints/iter_000010"
    for line in ("done: 10 iterations in", f"adapter: {newest}", f"tensorboard --logdir {tmp_path / 'tb'}",
                 f"python evaluate.py adapter={newest}", "experiment=target_word_warmstart"):
        assert line in proc.stdout and line in log, line
    assert (tmp_path / "transcripts/iter_000005.html").exists()  # logged samples, readable in a browser
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr and "Tip" not in proc.stderr  # a quiet console
    # TensorBoard carries every metric family and transcripts
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for tag in ("rollout/reward_mean", "rollout/success_rate", "rollout/outcome/correct", "rollout/turns_mean",
                "train/policy_loss", "train/entropy", "train/approx_kl_k3", "rollout/kl_to_base_k3",
                "train/clip_frac", "train/value_loss", "train/explained_variance", "train/grad_norm", "train/lr",
                "perf/rollout_tokens_per_s", "perf/train_tokens_per_s", "check/logprob_max_abs_dev",
                "perf/generate_s", "perf/env_wait_s", "perf/prepare_s", "perf/update_s"):
        assert tag in tags, tag
    assert acc.Tags()["tensors"], "no transcripts logged"


def test_saved_adapter_loads_with_plain_peft_and_matches_trained_module(tmp_path):
    config = compose(FAST + ["trainer.iterations=3", "trainer.checkpoint_every=0"])
    trainer, module, _ = build_run(config, tmp_path)
    base_before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if not p.requires_grad}
    lora_before = {n: p.detach().clone() for n, p in module.policy.named_parameters() if "lora_" in n}
    head_before = module.policy.value_head.weight.detach().clone()
    trainer.fit(module)
    params = dict(module.policy.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in base_before.items()), "a base weight changed"
    assert any(not torch.equal(params[n], v) for n, v in lora_before.items()), "no LoRA weight changed"
    assert not torch.equal(module.policy.value_head.weight, head_before), "value head did not train"
    ckpt = tmp_path / "checkpoints" / "iter_000003"
    loaded = _peft_load(ckpt)
    ids = torch.tensor([[257, 84, 82, 68, 81, 198, 71, 64, 258, 198]])
    module.policy.eval()
    with torch.no_grad():
        ours = module.policy.lm(input_ids=ids).logits
        theirs = loaded(input_ids=ids).logits
    assert torch.allclose(ours, theirs, atol=1e-5)
    head = load_file(str(ckpt / "value_head.safetensors"))
    assert torch.equal(head["weight"], module.policy.value_head.weight.detach().cpu())


def _reward_curve(overrides, run_dir):
    import lightning as L

    curve = []

    class Record(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            curve.append(module.last_stats["rollout/reward_mean"])

    trainer, module, _ = build_run(compose(FAST + ["trainer.checkpoint_every=0"] + overrides), run_dir)
    trainer.callbacks.append(Record())
    trainer.fit(module)
    return curve


@pytest.mark.slow  # the suite's learning check is test_the_learning_demo_raises_held_out_success
def test_policy_learns_on_toy_env_and_not_with_zero_lr(tmp_path):
    learn = _reward_curve(["trainer.iterations=40"], tmp_path / "a")
    frozen = _reward_curve(["trainer.iterations=40", "algorithm.optim.lr=0"], tmp_path / "b")
    start, end = sum(learn[:5]) / 5, sum(learn[-5:]) / 5
    f_start, f_end = sum(frozen[:5]) / 5, sum(frozen[-5:]) / 5
    print(f"learning curve: start {start:.3f} end {end:.3f}; lr=0: start {f_start:.3f} end {f_end:.3f}")
    assert learn[0] == frozen[0]  # same seed, same first batch
    assert end > start + 0.1, learn
    assert f_end < f_start + 0.05, frozen


@pytest.mark.parametrize("advantage", ["grpo", "reinforce"])
def test_other_algorithms_and_full_finetune_run(tmp_path, advantage):
    config = compose(FAST + ["trainer.iterations=2", f"algorithm={advantage}", "model.lora.rank=0", "algorithm.kl_coef=0.05"])
    trainer, module, _ = build_run(config, tmp_path)
    before = {n: p.detach().clone() for n, p in module.policy.lm.named_parameters()}
    trainer.fit(module)
    after = dict(module.policy.lm.named_parameters())
    assert module.policy.value_head is None
    assert sum(not torch.equal(after[n], v) for n, v in before.items()) > len(before) // 2  # full FT moves base weights
    assert (tmp_path / "checkpoints/iter_000002/model.safetensors").exists()
    assert "rollout/kl_to_base_k3" in module.last_stats
    if advantage == "grpo":  # a full model checkpoint loads on its own, tokenizer included, in evaluate.py
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "adapter=none",
                               f"model_path={tmp_path / 'checkpoints/iter_000002'}", "env=target_word", "num_samples=4"],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "success_rate" in proc.stdout, proc.stderr[-2000:]


def test_grpo_skips_groups_whose_rewards_are_equal(tmp_path):
    """algorithm.skip_uniform_groups: an iteration whose groups all got equal rewards (the random
    model fails every db_bench task alike) runs no forward, backward or optimizer step; where
    rewards differ (target_word's graded reward) those groups are trained on."""
    skip = ["trainer.progress_bar=false", "algorithm=grpo", "algorithm.skip_uniform_groups=true", "trainer.iterations=1",
            "algorithm.envs_per_rank=8"]
    trainer, module, _ = build_run(compose(skip + ["env=db_bench"]), tmp_path / "db")
    trainer.fit(module)
    assert module.last_stats["train/informative_share"] == 0.0
    assert trainer.global_step == 0 and "train/loss" not in module.last_stats
    trainer, module, _ = build_run(compose(skip + ["env=target_word"]), tmp_path / "tw")
    trainer.fit(module)
    assert 0 < module.last_stats["train/informative_share"] <= 1 and trainer.global_step > 0
    assert "train/loss" in module.last_stats


def test_logprob_mismatch_fails_loudly(tmp_path):
    config = compose(FAST + ["trainer.iterations=1"])
    trainer, module, _ = build_run(config, tmp_path)
    real_generate = module.policy.generate

    def stale_generate(*args, **kwargs):  # simulate sampling with weights that differ from training
        gen = real_generate(*args, **kwargs)
        gen.logprobs += 0.5
        return gen

    module.policy.generate = stale_generate
    with pytest.raises(RuntimeError, match="logprob_tolerance"):
        trainer.fit(module)


@pytest.mark.distributed
@pytest.mark.parametrize("algorithm", [[], ["algorithm=grpo", "algorithm.skip_uniform_groups=true"]], ids=["ppo", "grpo-skip"])
def test_ddp_two_processes_sync_gradients(tmp_path, algorithm):
    """(grpo-skip: each rank trains on as many episodes as the rank with the most informative groups.)"""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"}
    args = ["env=target_word", "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.iterations=2",
            "algorithm.envs_per_rank=8", "algorithm.minibatch_size=4", "trainer.progress_bar=false", *algorithm]
    proc = subprocess.run([sys.executable, str(ROOT / "tests/integration/ddp_sync_script.py"), str(tmp_path), *args],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert "SYNC_OK world=2" in proc.stdout, proc.stderr[-3000:]
    assert _peft_load(tmp_path / "checkpoints/iter_000002") is not None


@pytest.mark.distributed
def test_fsdp2_two_processes_train_and_save_loadable_adapter(tmp_path):
    proc = run_train(["env=target_word", "strategy=fsdp", "trainer.devices=2", "trainer.accelerator=cpu", "trainer.iterations=2",
                      "algorithm.envs_per_rank=8", "trainer.progress_bar=false", "model.lora.rank=4", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = tmp_path / "checkpoints/iter_000002"
    model = _peft_load(ckpt)
    tensors = load_file(str(ckpt / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in tensors.items()), "adapter did not train"
    assert tensors[next(k for k in tensors if "lora_A" in k)].shape[0] == 4
    assert model is not None


def test_periodic_evaluation_logs_held_out_metrics(tmp_path):
    from lorarl.callbacks import PeriodicEvaluation

    config = compose(FAST + ["trainer.iterations=2", "trainer.eval_every=1", "trainer.eval_samples=6", "algorithm.envs_per_rank=4"])
    trainer, module, _ = build_run(config, tmp_path)
    trainer.fit(module)
    (cb,) = [c for c in trainer.callbacks if isinstance(c, PeriodicEvaluation)]
    assert [h["iteration"] for h in cb.history] == [1, 2] and all(h["episodes"] == 6 for h in cb.history)
    for key in ("eval/success_rate", "eval/outcome/incorrect", "eval/reward_mean", "eval/turns_mean"):
        assert key in cb.last, key
    report = json.loads((tmp_path / "eval/iter_000002.json").read_text())
    assert report["config"]["env"]["id"] == config.env.id and report["config"]["sampling"]["greedy"] is True
    assert len(report["episodes"]) == 6  # and make_transcripts.py --from-report names the env of what it keeps
    from lorarl.transcripts import report_transcripts

    kept = list(report_transcripts(tmp_path / "eval/iter_000002.json", {e["outcome"] for e in report["episodes"]}))
    assert len(kept) == 6 and all(r["env"] == config.env.id for r in kept)


def test_runs_in_one_process_leave_no_workers_or_descriptors_behind(tmp_path):
    """A sweep or a notebook trains many times in one process: each run's envs (SQLite workers,
    their pipes) and stepping threads end with it, so the process never runs out of descriptors."""
    import threading

    def children():  # live processes whose parent is this one (whichever thread started them)
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and fields[0] != "Z":
                found.add(stat.parent.name)
        return found

    kept = []  # a notebook keeps its trainers and modules: nothing may wait for garbage collection

    def fit(name):
        config = compose(FAST + ["env=db_bench", "trainer.iterations=1", "trainer.eval_every=1",
                                 "trainer.eval_samples=4", "algorithm.envs_per_rank=4", "algorithm.sampling.max_new_tokens=8"])
        trainer, module, _ = build_run(config, tmp_path / name)
        trainer.fit(module)
        kept.append((trainer, module))

    fit("warm-up")  # imports, lazily built tables, logging handlers
    fds, procs, threads = len(os.listdir("/proc/self/fd")), children(), threading.active_count()
    for i in range(3):
        fit(f"run{i}")
    assert len(os.listdir("/proc/self/fd")) <= fds, sorted(os.listdir("/proc/self/fd"))
    assert children() <= procs and threading.active_count() <= threads


def test_shell_env_trains_end_to_end_and_bad_env_kwargs_are_one_line(tmp_path):
    from envs.os_interaction.sandbox import probe

    if reason := probe():
        pytest.skip(f"this machine cannot create the os_interaction sandbox: {reason}")
    proc = run_train(["env=os_interaction", "trainer.iterations=1", "trainer.checkpoint_every=1", "algorithm.envs_per_rank=4",
                      "trainer.progress_bar=false", f"hydra.run.dir={tmp_path / 'run'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "run/checkpoints/iter_000001/training_stats.json").read_text())
    assert sum(stats["outcome_counts"].values()) == 4
    bad = run_train(["env=os_interaction", "env.kwargs.source=bogus", f"hydra.run.dir={tmp_path / 'bad'}"])
    assert bad.returncode == 1
    assert bad.stderr.strip().splitlines()[-1] == (
        "config error: env lorarl/OSInteraction-v0: source='bogus': expected generator, agentbench or lifelong")


@pytest.mark.slow  # the same pipeline as the learning demo below, on db_bench with a BPE tokenizer
def test_one_command_warm_start_runs_sft_then_rl_and_reports_held_out_success(tmp_path):
    """experiment=db_count_warmstart, shrunk: oracle transcripts, SFT, RL from its adapter, which
    replays the oracle transcripts beside RL (sft.replay_coef: the generated file is its sft.data)."""
    proc = run_train(["experiment=db_count_warmstart", "sft.oracle_episodes=48", "sft.epochs=1", "trainer.iterations=2",
                      "sft.replay_coef=1",
                      "trainer.eval_every=0", "trainer.eval_samples=8", "algorithm.envs_per_rank=8",
                      "trainer.progress_bar=false", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(1 for _ in open(tmp_path / "transcripts.jsonl")) == 48
    assert (tmp_path / "sft/checkpoints/iter_000001/adapter_model.safetensors").exists()
    rl = tmp_path / "rl/checkpoints/iter_000002"
    cfg = json.loads((rl / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == (tmp_path / "sft/base_model").resolve()  # RL continued SFT's model
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("held-out success after SFT: ") for ln in lines)
    assert any(ln.startswith("held-out success: ") and "after SFT ->" in ln and "after 2 RL iterations" in ln
               for ln in lines), proc.stdout[-2000:]
    assert f"python evaluate.py adapter={rl}" in proc.stdout
    assert "train/replay_loss" in json.loads((rl / "training_stats.json").read_text())["metrics"]


def test_the_learning_demo_raises_held_out_success(tmp_path):
    """experiment=target_word_warmstart as the README runs it: RL raises held-out success over SFT."""
    import re

    proc = run_train(["experiment=target_word_warmstart", "trainer.progress_bar=false", f"hydra.run.dir={tmp_path}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sum(1 for _ in open(tmp_path / "transcripts.jsonl")) == 400  # the oracle's, then SFT, then RL from it
    rl = tmp_path / "rl/checkpoints/iter_000030"
    cfg = json.loads((rl / "adapter_config.json").read_text())
    assert Path(cfg["base_model_name_or_path"]) == (tmp_path / "sft/base_model").resolve()  # RL continued SFT's model
    assert "held-out success after SFT: " in proc.stdout and f"python evaluate.py adapter={rl}" in proc.stdout
    assert not (tmp_path / "rl/base_model").exists()  # the SFT run's base model and tokenizer are reused
    first = next(line for line in (tmp_path / "train.log").read_text().splitlines() if "iteration 1/30" in line)
    assert float(first.split("success=")[1].split()[0]) >= 0.5, first  # the warm start took: a random model scores 0
    assert float(first.split("kl=")[1].split()[0]) < 1e-3, first  # KL is to the adapter it started from, not the base
    got = re.search(r"held-out success: ([\d.]+) after SFT -> ([\d.]+) after 30 RL iterations", proc.stdout)
    assert got and float(got[2]) > float(got[1]) >= 0.5, proc.stdout[-2000:]
