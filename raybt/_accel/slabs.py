"""Memory for cached indicator outputs, carved from large mappings backed by transparent huge pages.

An indicator output is written once into fresh memory, and each 4 KB page of it costs a page fault on first touch: for a
43,800-bar column the faults cost more than computing its SMA. A sweep's worker computes each average it caches once, so
those faults are a sizeable part of a short sweep. Outputs carved from 4 MiB slabs advised ``MADV_HUGEPAGE`` fault in 2
MiB at a time, which makes an SMA computed into fresh memory faster (``benchmarks/bench_core.py``, "sma miss, fresh
memory"; figures in the README, "Hot path"), and later reads of it take fewer TLB misses. Each output is a numpy array
over part of a slab (``np.frombuffer``: the slab is at the end of its chain of bases); a slab is unmapped once no array
over it is left and no new output goes into it (:meth:`SlabAllocator.release` retires the one being filled).

Slabs are used only where the kernel backs advised memory with huge pages (Linux,
``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``always`` or ``madvise``) and only for outputs of
:data:`MIN_BYTES` to :data:`MAX_BYTES`: smaller ones take few pages, and larger ones get huge pages from numpy
itself (it advises allocations from 4 MiB on). Elsewhere, and with ``RAYBT_PORTABLE=1`` (:mod:`raybt._accel`),
:meth:`SlabAllocator.carve` returns None and the caller allocates as usual (the same values in other memory).
"""

from __future__ import annotations

import mmap
import threading
from pathlib import Path

import numpy as np

from raybt._accel import PORTABLE

SLAB_BYTES = 4 << 20
"""Usable bytes of one slab (two huge pages)."""
MIN_BYTES = 64 << 10
"""Smallest output carved from a slab (smaller ones fault in a few pages and should not pin a slab)."""
MAX_BYTES = SLAB_BYTES // 4
"""Largest output carved from a slab (at most a quarter of one is left unused at its end)."""
_HUGE_PAGE = 2 << 20
_ALIGN = 64  # outputs start on a cache line
_THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def huge_pages_advisable() -> bool:
    """True if this system backs memory advised ``MADV_HUGEPAGE`` with transparent huge pages."""
    if not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        setting = _THP_SETTING.read_text()
    except OSError:
        return False
    return "[always]" in setting or "[madvise]" in setting


def _map_slab() -> tuple[mmap.mmap, int]:
    """A new anonymous mapping and the offset in it of :data:`SLAB_BYTES` starting on a huge-page boundary, advised
    ``MADV_HUGEPAGE`` (the mapping is one huge page larger; its untouched head and tail cost no memory)."""
    mapping = mmap.mmap(-1, SLAB_BYTES + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    probe = np.frombuffer(mapping, dtype=np.uint8, count=1)
    start = -probe.ctypes.data % _HUGE_PAGE
    del probe  # releases the buffer export
    mapping.madvise(mmap.MADV_HUGEPAGE, start, SLAB_BYTES)
    return mapping, start


class SlabAllocator:
    """Carves float64 arrays out of huge-page slabs, one slab at a time (thread-safe)."""

    def __init__(self, enabled: bool | None = None) -> None:
        """``enabled``: carve at all; by default where :func:`huge_pages_advisable`, unless ``RAYBT_PORTABLE=1``
        (:mod:`raybt._accel`: the twin is numpy's own allocation)."""
        self.enabled = (not PORTABLE and huge_pages_advisable()) if enabled is None else enabled
        self._lock = threading.Lock()
        self._slab: mmap.mmap | None = None
        self._offset = 0
        self._end = 0

    def carve(self, rows: int, columns: int) -> tuple[np.ndarray, mmap.mmap] | None:
        """A new writable C-contiguous float64 ``(rows, columns)`` array over a slab, and that slab; None if the array
        is not carved (disabled, its size outside :data:`MIN_BYTES`..:data:`MAX_BYTES`, or no slab could be
        mapped)."""
        count = rows * columns
        nbytes = count * 8
        if not (self.enabled and MIN_BYTES <= nbytes <= MAX_BYTES):
            return None
        with self._lock:
            if self._slab is None or self._offset + nbytes > self._end:
                try:
                    self._slab, self._offset = _map_slab()
                except OSError:  # e.g. out of memory or of mappings: the caller allocates as usual
                    self._slab = None
                    return None
                self._end = self._offset + SLAB_BYTES
            slab, offset = self._slab, self._offset
            self._offset += -(-nbytes // _ALIGN) * _ALIGN
        return np.frombuffer(slab, dtype=np.float64, count=count, offset=offset).reshape(rows, columns), slab

    def release(self) -> None:
        """Put no more outputs into the slab being filled: it is unmapped once its arrays are gone."""
        with self._lock:
            self._slab = None
            self._offset = self._end = 0
