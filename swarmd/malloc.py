"""Give freed memory back: glibc malloc's mmap threshold, fixed (``swarmd serve``).

glibc starts with a 128 KiB mmap threshold and raises it to the size of every larger
block that is freed (up to 32 MiB), and the trim threshold with it. After the first
big answer or workflow history is freed, later blocks of that size come from the heap;
once freed they stay resident behind the small blocks allocated after them. A fixed
threshold (``mallopt(M_MMAP_THRESHOLD)``, which also turns the dynamic rule off) maps
each large block on its own, so freeing it returns it at once.

Measured on a 10,000-agent scatter-gather run: the app's peak RSS went from 315 to
259 MB (docs/benchmarks.md#engine-v2). Called once from the entrypoint, never at import.
On a C library without ``mallopt`` (musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

#: glibc's <malloc.h> parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def fix_mmap_threshold(threshold: int) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes (and the trim threshold at twice
    that); True when the C library took it. ``threshold`` 0 leaves the defaults."""
    if threshold <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.info("malloc: no mallopt in the C library (%s); thresholds left as they are", name)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(M_TRIM_THRESHOLD, 2 * threshold)
    )
    if not ok:
        log.warning("malloc: mallopt refused an mmap threshold of %d bytes", threshold)
    return ok
