"""Checkpoints are proven good: verified against their manifest when written and before resume
(the fallback past a damaged one, and exact resumes, are in test_reproducible.py); a full disk,
while saving a checkpoint, writing TensorBoard's events or the base model, stops the run with one
line naming the directory, and leaves older checkpoints intact."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT, run_train

COMMON = ["env=target_word", "trainer.progress_bar=false", "trainer.checkpoint_every=2", "algorithm.envs_per_rank=8"]


def _same_adapters(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference")
    proc = run_train(COMMON + ["trainer.iterations=2", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    return run


def test_manifest_lists_every_file_with_size_and_hash(reference):
    from lorarl.checkpointing import verify

    ckpt = reference / "checkpoints/iter_000002"
    files = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert set(files) == {p.name for p in ckpt.iterdir()} - {"manifest.json"}
    assert all(len(m["sha256"]) == 64 and m["size"] == (ckpt / n).stat().st_size for n, m in files.items())
    assert verify(ckpt) is None


def _can_unshare() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare (user + mount namespaces) to mount a small tmpfs")
def test_full_disk_is_one_line_and_leaves_older_checkpoints_intact(tmp_path):
    """The checkpoints directory is a 16 MiB tmpfs (in a private mount namespace); once the first
    checkpoint is there, the rest of the tmpfs is filled, so the second save hits ENOSPC."""
    run = tmp_path / "run"
    args = " ".join(COMMON + ["trainer.checkpoint_every=1", "trainer.iterations=3", f"hydra.run.dir={run}"])
    script = f"""
set -u
mkdir -p {run}/checkpoints && mount -t tmpfs -o size=16m tmpfs {run}/checkpoints || exit 90
cd {ROOT}
{sys.executable} train.py {args} > {tmp_path}/first.out 2> {tmp_path}/first.err &
pid=$!
while [ ! -d {run}/checkpoints/iter_000001 ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
dd if=/dev/zero of={run}/checkpoints/filler bs=1M 2>/dev/null
wait $pid; echo "FIRST_EXIT=$?"
echo "LEFT=$(ls -A {run}/checkpoints | tr '\\n' ' ')"
{sys.executable} -c "from lorarl.checkpointing import verify; from pathlib import Path; print('ITER1', verify(Path('{run}/checkpoints/iter_000001')))"
rm {run}/checkpoints/filler
{sys.executable} train.py {args} > {tmp_path}/second.out 2> {tmp_path}/second.err; echo "SECOND_EXIT=$?"
echo "FINAL=$(ls -A {run}/checkpoints | tr '\\n' ' ')"
"""
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = proc.stdout
    assert "FIRST_EXIT=1" in out, (out, (tmp_path / "first.err").read_text()[-2000:])
    err = [ln for ln in (tmp_path / "first.err").read_text().splitlines() if ln.strip()]
    assert err[-1] == f"checkpoint save failed: no space left on device in {run}/checkpoints", err[-5:]
    assert "Traceback" not in (tmp_path / "first.err").read_text()
    assert "LEFT=filler iter_000001 " in out  # no .tmp- directory left behind
    assert "ITER1 None" in out  # the older checkpoint verifies
    assert "SECOND_EXIT=0" in out and "iter_000002" in out and "iter_000003" in out, out
    assert "resuming from" in (tmp_path / "second.out").read_text()


@pytest.mark.skipif(not _can_unshare(), reason="needs unshare (user + mount namespaces) to mount a small tmpfs")
@pytest.mark.parametrize("full,size", [("tb", "12k"), (".", "300k")], ids=["tensorboard events", "base model"])
def test_a_full_disk_anywhere_is_one_line_naming_the_directory(tmp_path, full, size):
    """TensorBoard's writer thread, Lightning's hparams file, the base model: wherever the run
    writes when the disk fills, the user gets one line, and no half-written base_model copy."""
    run = tmp_path / "run"
    args = " ".join(COMMON + ["trainer.iterations=40", "trainer.transcripts_every=1", f"hydra.run.dir={run}"])
    script = f"""
mkdir -p {run}/{full} && mount -t tmpfs -o size={size} tmpfs {run}/{full} || exit 90
cd {ROOT}
{sys.executable} train.py {args} > {tmp_path}/out 2> {tmp_path}/err; echo "EXIT=$?"
echo "LEFT=$(ls -A {run} | tr '\\n' ' ')"
"""
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = (tmp_path / "err").read_text()
    assert "EXIT=1" in proc.stdout, (proc.stdout, err[-2000:])
    where = run / full if full != "." else run
    assert [ln for ln in err.splitlines() if ln.strip()] == [f"disk full: no space left on device in {where.resolve()}"], err
    assert ".tmp-base_model" not in proc.stdout
