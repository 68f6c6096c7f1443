"""Same config, same result, however busy the machine: an uninterrupted run, a run killed and
resumed, a run that falls back past a damaged checkpoint and a two-rank resumed run all end with
the same adapter bytes, while busy-loop processes load every core and the env's steps take a
random time (up to 0.1 s, from an unseeded clock, so no two runs share their timing)."""

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

JITTER = ["env=target_word", "env.id=jitter:jitter/TargetWord-v0", "+env.kwargs.max_delay_s=0.1"]
COMMON = [*JITTER, "trainer.progress_bar=false", "trainer.checkpoint_every=1", "algorithm.envs_per_rank=8"]


def _spin():
    while True:
        pass


@pytest.fixture(scope="module")
def busy():
    """Busy loops on half the cores for the whole module: every run below shares the CPUs with
    them, so its threads are preempted at times no two runs share (a loop per core only doubled
    the suite's time for the same effect)."""
    hogs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(max(1, (os.cpu_count() or 2) // 2))]
    for h in hogs:
        h.start()
    yield
    for h in hogs:
        h.kill()


def train(args: list[str], wait: bool = True, check: bool = True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    cmd = [sys.executable, str(ROOT / "train.py"), *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 or not check, proc.stderr[-3000:]
    return proc


def adapter(run: Path, iteration: int) -> dict:
    return load_file(str(run / f"checkpoints/iter_{iteration:06d}/adapter_model.safetensors"))


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(busy, tmp_path_factory):
    run = tmp_path_factory.mktemp("reference")
    train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={run}"])
    return run


def test_killed_and_resumed_equals_uninterrupted(reference, tmp_path):
    run = tmp_path / "run"
    proc = train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={run}"], wait=False)
    deadline = time.monotonic() + 600
    while not (run / "checkpoints/iter_000002/manifest.json").exists() and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # mid-run, wherever it is: between saves or inside one
    proc.communicate()
    for later in ("iter_000003", "iter_000004"):  # a machine fast enough to finish first: as if killed after 2
        shutil.rmtree(run / "checkpoints" / later, ignore_errors=True)
    (run / "checkpoints/.tmp-iter_000009").mkdir()  # what a save killed half-way leaves: never picked up
    (run / "checkpoints/iter_000009").mkdir()
    out = train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={run}"])
    assert "resuming from" in out.stdout + out.stderr and "skipping checkpoint iter_000009" in out.stdout + out.stderr
    assert same(adapter(run, 4), adapter(reference, 4))
    head = lambda r: load_file(str(r / "checkpoints/iter_000004/value_head.safetensors"))  # noqa: E731
    assert same(head(run), head(reference))
    stats = lambda r: json.loads((r / "checkpoints/iter_000004/training_stats.json").read_text())  # noqa: E731
    assert stats(run)["global_step"] == stats(reference)["global_step"]
    assert stats(run)["metrics"]["rollout/reward_mean"] == stats(reference)["metrics"]["rollout/reward_mean"]


def test_fallback_past_a_damaged_checkpoint_redoes_the_same_iterations_once_in_tensorboard(reference, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    damaged = run / "checkpoints/iter_000004/adapter_model.safetensors"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    out = train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={run}"])
    assert "iter_000003/trainer_state.pt" in out.stdout + out.stderr
    assert same(adapter(run, 4), adapter(reference, 4))
    events = EventAccumulator(str(run / "tb")).Reload()
    steps = [e.step for e in events.Scalars("rollout/reward_mean")]
    assert sorted(steps) == [1, 2, 3, 4], steps  # the redone iteration 4 is shown once
    damaged.write_bytes(b"")
    bad = train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={tmp_path / 'other'}",
                          f"resume={damaged.parent}"], check=False)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and lines[-1].startswith("config error: resume=") and damaged.name in lines[-1]
    for ckpt in (run / "checkpoints").glob("iter_*"):
        (ckpt / "trainer_state.pt").write_bytes(b"")
    refused = train(COMMON + ["trainer.iterations=4", f"hydra.run.dir={run}"], check=False)
    lines = [ln for ln in refused.stderr.splitlines() if ln.strip()]
    assert refused.returncode != 0 and "none of the 4 checkpoints" in lines[-1] and "resume=null" in lines[-1], lines
    assert len(list((run / "checkpoints").glob("iter_*"))) == 4  # kept, not overwritten


@pytest.mark.distributed
@pytest.mark.slow  # the suite's test_multinode resumes two ranks exactly (REINFORCE too); this one under busy loops
def test_two_rank_resumed_run_equals_an_uninterrupted_one(busy, tmp_path):
    """REINFORCE's running baseline is all-reduced, so rank 0's saved copy is every rank's."""
    common = [*JITTER, "algorithm=reinforce", "strategy=ddp", "trainer.devices=2", "trainer.accelerator=cpu",
              "trainer.progress_bar=false", "trainer.checkpoint_every=2", "algorithm.envs_per_rank=4",
              "algorithm.minibatch_size=2"]
    a, b = tmp_path / "a", tmp_path / "b"
    train(common + ["trainer.iterations=3", f"hydra.run.dir={a}"])
    shutil.copytree(a, b)  # as if stopped after the save of iteration 2: a second run resumes there
    shutil.rmtree(b / "checkpoints/iter_000003")
    out = train(common + ["trainer.iterations=3", f"hydra.run.dir={b}"])
    assert "resuming from" in out.stdout + out.stderr and "iter_000002" in out.stdout + out.stderr
    assert same(adapter(a, 3), adapter(b, 3))
    state = lambda run: torch.load(run / "checkpoints/iter_000003/trainer_state.pt", weights_only=False)["lorarl"]
    assert state(a)["advantage_state"] == state(b)["advantage_state"] and state(a)["advantage_state"]["baseline"] != 0.0
