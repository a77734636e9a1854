"""Process-wide settings that the serving path depends on for speed.

Kept apart from the kernel and the model code: they change how the whole process allocates
memory, so the entry points (``bnn-serve``, the app factory, the benchmarks) opt in explicitly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
_M_MMAP_THRESHOLD = -3
_applied = False


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Let glibc reuse freed activation buffers instead of returning them to the OS.

    By default glibc serves an allocation above its mmap threshold (128 KiB at first) with fresh
    pages from ``mmap`` and unmaps them on ``free``, so each graph node's output (1-3 MB for a
    batch of 32 small images) page-faults again on every call: in ``fashion-mnist-bnn`` at batch
    32 an element-wise add or PReLU then costs several times its compute. With the thresholds raised, those
    buffers stay in the heap and are reused; resident memory stays at the working set's peak
    (at most ``trim_threshold`` of free memory is kept at the top of the heap).

    Returns True when applied (glibc), False where the C library has no ``mallopt``. Idempotent.
    """
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.info("mallopt not available; allocator left as it is")
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    _applied = ok
    return ok


def freeze_startup_objects() -> None:
    """Move everything allocated so far (torch, the app, the loaded models) out
    of the garbage collector's reach.

    A full collection walks every tracked object (``bench/asgi_cost.py`` prints how many and how long), and
    under load one runs every so often, stalling the event loop and every request in flight (it
    was the p99 of ``bench/load_predict.py`` with batching on). Objects created at start-up live
    as long as the process, so the collector need not look at them again. Call once, after
    start-up.
    """
    gc.collect()
    gc.freeze()
