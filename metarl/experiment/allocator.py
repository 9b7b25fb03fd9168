"""Keep freed tensor memory in the process instead of returning it to the kernel (glibc only).

glibc's ``malloc`` gives every block above its mmap threshold a fresh mapping, unmapped again on
``free``, and hands the free top of its heap back to the kernel once it exceeds the trim threshold.
Either way the next block of that size starts as untouched pages, and the kernel faults in and
zeroes each 4 KiB page as the tensor is first written. A 2D-navigation meta-iteration creates and
frees hundreds of 16 MB activations (20 tasks x 2000 steps x 100 units), so these faults were a
large part of its time (``scripts/benchmark_iteration.py``; docs/sampling.md gives the figures).

:func:`reuse_freed_memory` fixes both thresholds (which also stops glibc's own adjustment of
them): blocks up to 32 MiB come from the heap, and up to 1 GiB of its free top is kept for reuse.
The process then keeps the memory of its peak. Results do not change: the tensors' values never
depend on where they are allocated (torch aligns every block to 64 bytes itself).
"""

from __future__ import annotations

import ctypes
import logging
import platform

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # the largest value glibc accepts on 64-bit machines
TRIM_THRESHOLD_BYTES = 1024 * 1024 * 1024

_applied = False


def reuse_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (see the module docstring).

    Returns whether they are set: False where the C library is not glibc (macOS, musl), where
    nothing changes. Calling it again does nothing more.
    """
    global _applied
    if _applied:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        logger.debug("not glibc: the allocator's thresholds are left as they are")
        return False
    libc = ctypes.CDLL(None)
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)):
        logger.warning("glibc refused the allocator thresholds (mallopt returned 0); freed memory is returned as usual")
        return False
    _applied = True
    return True
