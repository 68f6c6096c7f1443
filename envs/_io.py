"""Waiting on a worker's pipe, for any file descriptor number.

``select.select`` fails on descriptors >= 1024 (FD_SETSIZE), which a trainer process passes with
a few hundred envs, each holding a worker's pipes, or after many runs in one process; ``poll``
has no such limit.
"""

from __future__ import annotations

import select


def wait_readable(fd: int, timeout_s: float) -> bool:
    """Whether ``fd`` has data (or end of file) within ``timeout_s`` seconds."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(max(0, int(timeout_s * 1000 + 0.999))))
