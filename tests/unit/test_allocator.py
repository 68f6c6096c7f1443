"""Freed tensor memory goes back to the OS (lorarl.allocator): without it, peak RSS grew with the
number of micro-batches rather than staying at one micro-batch's."""

import sys

import pytest
import torch

from lorarl.allocator import return_freed_memory


def _rss_mib() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise KeyError("VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_activation_sized_tensors_leave_the_process():
    assert return_freed_memory()
    # glibc's dynamic threshold rises once a big mmapped block is freed: free one first, as a
    # finished micro-batch does, then allocate what the next one would (tensors of 2-24 MiB)
    big = torch.ones(25 << 18)  # 25 MiB
    del big
    before = _rss_mib()
    tensors, kept = [], []
    for i in range(40):  # 2..24 MiB each, ~520 MiB in all, each followed by a small tensor that lives on
        tensors.append(torch.ones(((i % 12) + 1) << 19))
        kept.append(torch.ones(1 << 14))
    assert _rss_mib() - before > 400
    del tensors
    # back to the OS, not left as holes in the heap between the tensors that live on
    assert _rss_mib() - before < 48
