"""Which process of a run is where, so that a run that loses one (a node that died, a process
killed) stops with one line naming it instead of a collective's traceback.

Each rank writes ``<run dir>/.ranks/rank<N>.json`` (host, pid) when training starts. When a
collective fails (gloo: "Connection closed by peer"; a timeout: ``strategy.collective_timeout_s``),
the surviving process reads them back and names the ranks of its own host whose process has ended,
and the hosts of the others (whose processes it cannot see).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import lightning as L

from lorarl.logs import chain

_SIGNS = ("connection closed by peer", "connection reset by peer", "timed out", "timeout", "broken pipe",
          "socket closed", "nccl communicator was aborted", "watchdog caught collective operation timeout")


class RankRegistry(L.Callback):
    """Writes this rank's host and pid when training starts (every stage)."""

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        register(trainer.default_root_dir, trainer.global_rank, trainer.world_size)


def register(run_dir: str | Path, rank: int, world: int) -> None:
    if world < 2:
        return
    d = Path(run_dir) / ".ranks"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"rank{rank}.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "world": world}))


def _alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def lost_process(exc: BaseException, run_dir: str | Path) -> str | None:
    """One line when ``exc`` is a collective that failed because another rank is gone or silent;
    None otherwise."""
    text = " ".join(str(e) for e in chain(exc)).lower()
    if not any(sign in text for sign in _SIGNS) or not any(
            "distributed" in type(e).__module__ or "gloo" in str(e).lower() or "nccl" in str(e).lower()
            or "ProcessGroup" in str(e) for e in chain(exc)):
        return None
    here, gone, elsewhere = socket.gethostname(), [], []
    for f in sorted((Path(run_dir) / ".ranks").glob("rank*.json")):
        try:
            info = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        rank = f.stem.removeprefix("rank")
        if info["host"] != here:
            elsewhere.append(f"rank {rank} on {info['host']}")
        elif info["pid"] != os.getpid() and not _alive(info["pid"]):
            gone.append(f"rank {rank} (pid {info['pid']})")
    what = "timed out waiting for" if "timed out" in text or "timeout" in text else "lost the connection to"
    if gone:
        who = f"{', '.join(gone)} on this host ended"
    elif elsewhere:
        who = f"no process of this host ended; the lost one is among {', '.join(elsewhere)}"
    else:
        who = "the other processes could not be identified"
    return (f"distributed run stopped: this process {what} another rank ({who}); its newest complete checkpoint "
            "is kept: rerun the same command on every node to resume from it")

