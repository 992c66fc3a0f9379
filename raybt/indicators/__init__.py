"""Vectorised technical indicators with a per-process result cache.

Inputs and outputs
------------------
Every indicator accepts a :class:`pandas.DataFrame` (one column per symbol,
time running down the rows), a :class:`pandas.Series`, or a 1-D / 2-D
:class:`numpy.ndarray` (2-D: rows are bars, columns are symbols).  It returns
the same kind of object, float64 (``bool`` for the crossing helpers), with the
input's index and columns (or index and name) for pandas inputs.  For
functions taking several series (``atr``, ``stochastic``, ``crossed_*``) all
array inputs must have the same shape; they are combined by position, not
aligned on labels, and the output takes the kind and labels of the first one.
Values are in the units of the input (prices) unless a docstring says
otherwise (RSI and stochastic are 0..100).  ``pair_crossings`` is the
exception: it takes a bars × columns table of many series and returns numpy
arrays (see its docstring).

Warm-up bars produce NaN.  Each column is processed independently, so a
column with leading NaN (a symbol that has not started trading yet) starts its
own warm-up at its first valid value.  NaN *inside* a column is handled by
one of two documented rules:

* rolling-window indicators (``sma``, ``wma``, ``rolling_std``,
  ``bollinger``, ``stochastic``) behave like pandas ``rolling(n)`` with
  ``min_periods=n``: any window that contains a NaN yields NaN, so the
  warm-up restarts after the NaN;
* recursive indicators (``ema``, ``macd``, ``rsi``, ``atr``) skip NaN bars:
  such a bar yields NaN, the smoothing state carries over unchanged, and the
  warm-up counts valid bars only (the indicator is computed on the column's
  valid values as if the NaN bars were absent).

Rolling windows are O(rows) running updates in numba kernels; the running
state is recomputed exactly from the window periodically (every ``n`` bars
for the standard deviation, at least every ``max(n, 1024)`` bars for sums),
so rounding error does not accumulate over long histories.  Kernels use
plain IEEE float64 arithmetic (no fast-math; ``sma`` divides through the
reciprocal with an FMA correction, which gives the IEEE quotient bit for bit).

Result cache
------------
A parameter sweep calls e.g. ``sma(view.close, 20)`` thousands of times in
one worker on the very same input object, so results are memoised in a
bounded, per-process LRU cache keyed by the indicator name, its parameters
and the identity and layout of the input objects.  To make a stale hit
impossible:

* only inputs whose memory is read-only are eligible.  The underlying numpy
  array (``to_numpy()`` for pandas) is followed through its chain of ``base``
  arrays to the root; the root's ``writeable`` flag decides (if the chain
  ends in a non-ndarray buffer, e.g. Ray's object store, the last ndarray's
  flag decides).  Writable arrays and frames are recomputed on every call and
  never stored, since their owner could modify them in place;
* the key holds, for each input, the ``id()`` of the object, of its
  memory's root array and, for pandas inputs, of its index/columns/name
  objects, and the shape, strides and dtype of its data.  An entry holds
  strong references to all those objects, so an ``id()`` cannot be recycled
  while the entry lives, and in-place relabelling or re-pointing of a frame
  gives another key: a miss (the old entry ages out of the LRU);
* stored outputs are made read-only before being wrapped (without copying)
  in pandas objects, and the *same* output object is returned on every hit,
  once checked: a caller may have changed it in place since (relabelled it,
  replaced a column, reshaped an array), and a changed object is replaced
  by a fresh wrapper of the cached memory, so one caller's edits never reach
  another caller.  Because they are read-only, cached outputs are
  themselves eligible inputs, so chains like ``rsi(sma(close, 5), 14)`` are
  cached as well.

Making an array read-only is taken as a promise that its contents will not
change while it is in use; an owner that turns the flag back on and writes
defeats the check.

The crossing helpers (``crossed_above``, ``crossed_below``) are not cached:
in a sweep each crossing of two averages is used once, by one parameter set,
so keeping them would fill the cache with dead results (evicting the
averages that are reused) and cost more than it saves.  Both crossings of a
pair come from one pass over the inputs, though: the one not asked for is
held in a single slot (keyed like a cache entry, for eligible inputs only)
for the call that usually follows, e.g. ``crossed_below(f, s)`` after
``crossed_above(f, s)``, which takes it.  Crossing results are new writable
arrays, handed out once.  ``pair_crossings`` (the crossings of many pairs
of columns in one compiled pass, for sweeps) is not cached either.

Memory bound: the cache counts the bytes of the output arrays it stores and
evicts least-recently-used entries once the total exceeds the limit, 256 MiB
per process by default.  Outputs of 64 KiB to 1 MiB (e.g. a 43,800-bar column,
350 KB) are carved from 4 MiB slabs of memory the kernel backs with
transparent huge pages, where it does (Linux with THP "always" or "madvise";
see :mod:`raybt._accel.slabs`): first touches fault 2 MiB at a time (figures:
``benchmarks/bench_core.py``, "sma miss, fresh memory").  A slab counts whole (4 MiB)
against the limit while it holds any stored output, so the bound holds for
the memory kept mapped; only limits of at least 64 MiB carve.  The limit is
read at import from the environment variable ``RAYBT_INDICATOR_CACHE_MB`` and
can be changed with :func:`set_cache_limit` (0 disables caching).  Results
larger than the limit are returned but not stored.  Input memory is not
counted because it is owned elsewhere, but note that an entry's strong
reference keeps its inputs alive until the entry is evicted or
:func:`clear_cache` is called.  Keys use object
identity, so pass the same object to get hits: e.g. ``df["AAPL"]`` builds a
new Series on every access and therefore never hits.  The cache is
thread-safe; computations run outside the lock.  A DataFrame whose columns
live in several pandas blocks (e.g. built from a dict of arrays) is copied by
``to_numpy()``, so it is computed every time; build frames from one 2-D array
to benefit from the cache.

The numba kernels are compiled when the module is first imported on a machine
(several seconds) and loaded from numba's on-disk cache afterwards.

Modules
-------
``functions`` (the public indicators), ``cache`` (the result cache and the inspection of inputs), ``_evaluate``
(lookup, kernel call, output wrapping), ``_kernels`` (numba kernels over 2-D arrays, crossings), ``_columns``
(numba kernels over one column).
"""

from __future__ import annotations

from raybt.indicators.cache import CacheInfo, cache_info, clear_cache, set_cache_limit
from raybt.indicators.functions import (
    atr,
    bollinger,
    crossed_above,
    crossed_below,
    ema,
    macd,
    pair_crossings,
    rolling_std,
    rsi,
    sma,
    stochastic,
    wma,
)

# Private names the tests import from here:
from raybt.indicators.cache import _CACHE, _CARVE_MIN_LIMIT, _SLABS, _limit_from_env, _operand

__all__ = [
    "CacheInfo",
    "atr",
    "bollinger",
    "cache_info",
    "clear_cache",
    "crossed_above",
    "crossed_below",
    "ema",
    "macd",
    "pair_crossings",
    "rolling_std",
    "rsi",
    "set_cache_limit",
    "sma",
    "stochastic",
    "wma",
]
