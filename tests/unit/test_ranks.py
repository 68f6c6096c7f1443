"""A run that loses a rank stops with one line naming it, also when the loss shows first in a
checkpoint save's collective (found as a flaky test_multinode: the killed rank died mid-save)."""

import json
import os
import socket
import subprocess
import sys

from lorarl.checkpointing import CheckpointError
from lorarl.ranks import lost_process

GLOO = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] read error [127.0.0.1]:1711: "
        "connection reset by peer. this is typically caused by a remote worker hanging or bugs in the application.")


def _ranks(run_dir, dead_pid):
    d = run_dir / ".ranks"
    d.mkdir()
    for rank, pid in ((0, os.getpid()), (1, dead_pid)):
        (d / f"rank{rank}.json").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "world": 2}))


def test_a_save_that_failed_on_a_lost_rank_names_the_rank(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _ranks(tmp_path, gone.pid)
    said = lost_process(CheckpointError(f"{GLOO} in {tmp_path / 'checkpoints'}"), tmp_path)
    assert said and said.startswith("distributed run stopped") and f"rank 1 (pid {gone.pid}) on this host ended" in said


def test_a_save_that_failed_on_a_full_disk_stays_a_save_failure(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _ranks(tmp_path, gone.pid)
    assert lost_process(CheckpointError(f"the disk is full in {tmp_path}"), tmp_path) is None
