"""glibc's malloc told to keep large freed blocks for reuse, in the processes that evaluate batches.

A batch allocates the same large temporaries again and again: each chunk's stacked signals (bars × jobs bytes,
twice: 17 MB each for 1,915 one-year hourly jobs), a ``signals_many`` hook's stacked averages, the user's own numpy
temporaries. By default glibc serves a block above its mmap threshold (128 KiB, raised as large blocks are freed, to
32 MiB at most) with a fresh mapping, and gives freed memory at the top of its heap back to the kernel beyond its
trim threshold (twice the mmap threshold). Each chunk's arrays then start as untouched pages that fault in and that
the kernel fills with zeros: several µs per backtest, more with two workers sharing the memory bus (figures in the
README, "Hot path"). With the mmap threshold at its 32 MiB maximum and the trim threshold at
256 MiB, freed blocks stay in the heap and the next chunk reuses them.

:func:`keep_freed_memory` applies this once per process, when the process first evaluates a batch (a sweep's Ray
workers, the driver of an in-process sweep), never at import. The price: up to 256 MiB of freed memory stays mapped
in such a process, to be reused, not leaked. Setting the thresholds turns off glibc's dynamic adjustment of them.

The twin changes nothing: with ``RAYBT_PORTABLE=1`` (:mod:`raybt._accel`), or where the C library has no
``mallopt`` (musl, macOS, Windows). Values never depend on it: only where memory comes from changes.
"""

from __future__ import annotations

import ctypes
import threading

from raybt._accel import PORTABLE

MMAP_THRESHOLD_BYTES = 32 << 20
"""Blocks up to this size come from the heap (glibc's upper limit for the mmap threshold on 64-bit systems)."""
TRIM_THRESHOLD_BYTES = 256 << 20
"""Freed memory at the top of the heap is returned to the kernel only beyond this."""

_M_TRIM_THRESHOLD = -1  # mallopt parameters, <malloc.h>
_M_MMAP_THRESHOLD = -3

_lock = threading.Lock()
_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD_BYTES`, :data:`TRIM_THRESHOLD_BYTES`) once in
    this process; later calls do nothing. Returns whether they are set (False for the twin: portable mode or no
    glibc ``mallopt``)."""
    global _applied
    with _lock:
        if _applied is None:
            _applied = False if PORTABLE else _set_thresholds()
        return _applied


def _set_thresholds() -> bool:
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, so a C library refusing it leaves the trim one alone
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
