"""Past one machine, proven on loopback: two torchrun "nodes" (TorchElastic, gloo) train the same
adapter as one node with two processes, write each file once, survive a killed node with one line
naming it, and resume; SLURM's variables are read as Lightning's SLURMEnvironment reads them."""

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

pytestmark = pytest.mark.distributed
# REINFORCE: its running baseline is all-reduced, so rank 0's saved copy must be every rank's
TINY = ["env=target_word", "algorithm=reinforce", "algorithm.envs_per_rank=8", "trainer.checkpoint_every=1", "strategy.collective_timeout_s=30",
        "trainer.progress_bar=false"]  # the last: the script sets it itself


def _nodes(run, args, port):
    """Start two torchrun nodes (each in its own session, so a node can be killed whole)."""
    procs = []
    for node in (0, 1):
        cmd = ["torchrun", "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node), "--master-addr",
               "127.0.0.1", "--master-port", str(port), str(ROOT / "train.py"), "trainer.num_nodes=2", "strategy=ddp",
               "trainer.accelerator=cpu", f"hydra.run.dir={run}", *TINY, *args]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, stdout=open(f"{run}.node{node}.log", "w"), stderr=subprocess.STDOUT,
                                      start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}))
    return procs


def _adapter(run, iteration):
    from safetensors.torch import load_file

    return load_file(str(run / f"checkpoints/iter_{iteration:06d}/adapter_model.safetensors"))


def _kill_tree(pid):
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for kid in kids:
        _kill_tree(int(kid))
    os.kill(pid, signal.SIGKILL)


def test_two_nodes_match_one_node_log_once_and_resume_after_a_lost_node(tmp_path):
    import torch

    from lorarl import checkpointing as ckpt

    port = 29500 + os.getpid() % 500
    whole = tmp_path / "two_nodes"  # through the script users run (scripts/two_nodes.sh)
    script = subprocess.run(["bash", str(ROOT / "scripts/two_nodes.sh"), str(whole), *TINY[:-1], "trainer.iterations=3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "MASTER_PORT": str(port)})
    assert script.returncode == 0, (tmp_path / "two_nodes.node0.log").read_text()[-2000:]
    one = tmp_path / "one_node"
    single = subprocess.run([sys.executable, str(ROOT / "train.py"), "strategy=ddp", "trainer.devices=2",
                             "trainer.accelerator=cpu", f"hydra.run.dir={one}", *TINY, "trainer.iterations=3"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    a, b = _adapter(whole, 3), _adapter(one, 3)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    lines = (whole / "train.log").read_text().splitlines()
    assert sum("iteration 2/3" in ln for ln in lines) == 1 and sum("torch CPU threads" in ln for ln in lines) == 1
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == [f"iter_00000{i}" for i in (1, 2, 3)]

    # a node dies mid-run: the other stops in one line naming it; the checkpoints stay good; a rerun
    # of both nodes resumes and ends with the adapter of the run that was never interrupted
    lost = tmp_path / "lost"
    procs = _nodes(lost, ["trainer.iterations=3"], port + 1)
    deadline = time.monotonic() + 300
    while "iteration 2/3" not in ((lost / "train.log").read_text() if (lost / "train.log").exists() else ""):
        assert time.monotonic() < deadline and procs[0].poll() is None
        time.sleep(0.1)
    _kill_tree(procs[1].pid)
    start = time.monotonic()
    assert procs[0].wait(timeout=120) != 0 and time.monotonic() - start < 60
    said = (tmp_path / "lost.node0.log").read_text()
    assert "distributed run stopped" in said and "rank 1 (pid" in said, said[-2000:]
    newest = ckpt.latest_checkpoint(lost / "checkpoints")
    assert newest is not None and ckpt.verify(newest) is None
    assert all(p.wait(timeout=300) == 0 for p in _nodes(lost, ["trainer.iterations=3"], port + 2))
    assert "resuming from" in (lost / "train.log").read_text()
    c = _adapter(lost, 3)
    assert all(torch.equal(a[k], c[k]) for k in a)
    state = lambda run: torch.load(run / "checkpoints/iter_000003/trainer_state.pt", weights_only=False)["lorarl"]  # noqa: E731
    assert state(lost)["advantage_state"] == state(whole)["advantage_state"]
    assert state(whole)["advantage_state"]["baseline"] != 0.0


def test_slurm_and_torchrun_variables_are_read_as_lightning_reads_them(monkeypatch):
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    from lorarl.factory import first_process
    from lorarl.strategies import check_launcher

    slurm = {"SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NUM_NODES": "2", "SLURM_NNODES": "2",
             "SLURM_JOB_ID": "77", "SLURM_JOB_NAME": "lorarl", "SLURM_NODELIST": "gpu[01-02]", "SLURM_NODEID": "1",
             "SLURM_PROCID": "3", "SLURM_LOCALID": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "NODE_RANK", "MASTER_ADDR"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        check_launcher(2)
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    check_launcher(2)  # srun started every task
    env = SLURMEnvironment()
    assert SLURMEnvironment.detect() and (env.global_rank(), env.local_rank(), env.node_rank(), env.world_size()) == (3, 1, 1, 4)
    assert not first_process()
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert first_process()
    torchrun = {"TORCHELASTIC_RUN_ID": "x", "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "GROUP_RANK": "1",
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "LOCAL_WORLD_SIZE": "1"}
    for key, value in torchrun.items():
        monkeypatch.setenv(key, value)
    assert TorchElasticEnvironment.detect() and not first_process()  # torchrun's RANK wins over SLURM's
