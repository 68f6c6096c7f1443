"""Freed CPU tensor memory goes back to the OS, so peak RSS follows the token budget.

glibc serves allocations below its mmap threshold from heap arenas, and raises that threshold (up
to 32 MiB on 64-bit) each time a large mmapped block is freed. A micro-batch's activations are
tensors of 1-30 MiB: after the first micro-batch they come from the heap, and the next
micro-batch's tensors of other sizes land beside the holes the last one left, so the process's
peak RSS grows with the number of micro-batches instead of staying at one micro-batch's
(SmolLM2-135M, two micro-batches of 4,096 tokens: 14.1 GB with glibc's default, 6.0 GB with a
fixed 1 MiB threshold; bench/token_budget.py). A fixed threshold gives every allocation over it its
own mapping, unmapped when freed; smaller ones (most of Python's) are unaffected.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3


def return_freed_memory(threshold_bytes: int = 1 << 20) -> bool:
    """Fix glibc's mmap threshold at ``threshold_bytes`` (and trim the heap above it). True when
    set; False off glibc (macOS, musl), where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(M_MMAP_THRESHOLD, threshold_bytes) == 1 and mallopt(M_TRIM_THRESHOLD, threshold_bytes) == 1
    if not done:
        log.debug("mallopt refused the mmap threshold: the C library is not glibc")
    return done
