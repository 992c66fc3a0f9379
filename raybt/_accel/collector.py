"""Python's cyclic garbage collector paused while a worker rebuilds a batch's strategies.

A Ray task's batch arrives pickled and is rebuilt in the worker: one strategy object per distinct parameter set, ten
thousand for a task of daily backtests, all created in one burst and alive for the whole task. CPython's collector
counts allocations: such a burst runs young collections that promote the new objects to the oldest generation, and
once enough have been promoted it runs a full collection, which walks every object of the worker (Ray, pandas,
numba), far more objects than the rebuild creates; with tasks of thousands of strategies, every few tasks (figures
in the README, "The hot path").

:func:`cyclic_gc_paused` turns the collector off for the duration of the rebuild. The objects a rebuild creates hold
no reference cycles (instances whose attributes are parameter values), so nothing is left for the collector to find;
reference counting frees them as usual, and the collector resumes with the next allocation after the rebuild. No
user code runs meanwhile, except the ``__init__`` of a strategy class that defines its own.

The twin changes nothing: with ``RAYBT_PORTABLE=1`` (:mod:`raybt._accel`) the collector is left alone. Values never
depend on it: only when memory of cyclic garbage would be reclaimed changes.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

from raybt._accel import PORTABLE

_lock = threading.Lock()
_depth = 0  # pauses in progress (nested, or in several threads); the collector resumes when the last one ends
_resume = False  # whether the collector was on when the first of them began


@contextlib.contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Run the block with the cyclic garbage collector off, then restore its state (on only if it was on before the
    outermost pause began, whatever the block raised). Does nothing in portable mode.

    >>> with cyclic_gc_paused():
    ...     strategies = [object() for _ in range(3)]
    """
    if PORTABLE:
        yield
        return
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()
