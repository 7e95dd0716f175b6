"""Training on the CPU: make glibc hand freed tensor memory back to the OS instead of keeping it in its heap.

glibc serves an allocation below its mmap threshold from the heap, and it raises that threshold (up to 32 MiB) every
time a larger memory-mapped block is freed. After the first few frees, every activation of a small model (1–17 MiB
at the Qwen2.5-0.5B shape) comes from the heap; the blocks freed between live ones (layers recomputed under gradient
checkpointing, weights a 4-bit layer dequantizes for each call) are reused only in part and never returned. At the
`benchmarks/memory.py` shape, 2.5 GiB of a 3.9 GiB resident set was free heap after one PPO backward. A fixed
threshold (`mallopt(M_MMAP_THRESHOLD, n)`, which also stops the raising) maps every block of at least `n` bytes on
its own and unmaps it when it is freed.
"""

from __future__ import annotations

import ctypes
import os
import sys


M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses larger thresholds on 64-bit (HEAP_MAX_SIZE / 2)


def set_malloc_mmap_threshold(nbytes: int) -> bool:
    """Serve allocations of at least `nbytes` with their own `mmap`, so freeing them returns the memory to the OS.

    Process-wide, like glibc's `MALLOC_MMAP_THRESHOLD_` environment variable, which wins when set. Returns whether
    the threshold was set: False off Linux, without glibc's `mallopt`, or when the environment variable is set.
    """
    if not 0 <= nbytes <= MMAP_THRESHOLD_MAX:
        raise ValueError(f"nbytes={nbytes} is invalid: glibc accepts 0 to {MMAP_THRESHOLD_MAX} (32 MiB)")
    if not sys.platform.startswith("linux") or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, nbytes))
