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
otherwise (RSI and stochastic are 0..100).

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
arrays, handed out once.

Memory bound: the cache counts the bytes of the output arrays it stores and
evicts least-recently-used entries once the total exceeds the limit, 256 MiB
per process by default.  Outputs of 64 KiB to 1 MiB (e.g. a 43,800-bar column,
350 KB) are carved from 4 MiB slabs of memory the kernel backs with
transparent huge pages, where it does (Linux with THP "always" or "madvise";
see :mod:`raybt._slabs`): first touches fault 2 MiB at a time (an SMA into
fresh memory: 116-131 instead of ~166 µs here).  A slab counts whole (4 MiB)
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
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from itertools import starmap
from typing import NamedTuple, TypeVar

import numba as nb
from numba.extending import intrinsic
import numpy as np
import pandas as pd

from raybt import _frames, _slabs

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
    "rolling_std",
    "rsi",
    "set_cache_limit",
    "sma",
    "stochastic",
    "wma",
]

Data = TypeVar("Data", pd.DataFrame, pd.Series, np.ndarray)

_CACHE_ENV_VAR = "RAYBT_INDICATOR_CACHE_MB"
_DEFAULT_CACHE_MB = 256.0
_BYTES_PER_MB = 1 << 20


# ---------------------------------------------------------------------------
# numba kernels
#
# Every kernel takes 2-D float64 arrays (rows = bars, columns = symbols) and
# is compiled once, eagerly, for read-only arrays of any layout: numba
# converts writable and C/F-contiguous arrays to that type safely, so a single
# machine-code version serves read-only market data, writable user arrays and
# sliced views alike.  Kernels write into outputs the caller allocates
# (:func:`_new_outputs`), Fortran-ordered so that each symbol's column is
# contiguous (the layout pandas uses for its blocks).
# ---------------------------------------------------------------------------

_ARR2D = nb.types.Array(nb.float64, 2, "A", readonly=True)
_ROWS = nb.types.Array(nb.float64, 2, "C", readonly=True)  # (columns, bars), each column contiguous
_OUT2D = nb.types.Array(nb.float64, 2, "A")  # an output (bars, columns), written in place
_OUT_ROWS = nb.types.Array(nb.float64, 2, "C")  # an output as (columns, bars)
_JIT = {"cache": True, "nogil": True}
# Running window sums are recomputed exactly from the window at least every
# max(n, _REFRESH_BARS) bars, bounding rounding drift at negligible cost.
_REFRESH_BARS = 1024


@nb.njit(**_JIT)
def _next_full_window(src: np.ndarray, out: np.ndarray, start: int, n: int) -> int:
    """Find the first ``stop > start`` with ``src[stop-n:stop]`` free of NaN.

    Writes NaN to ``out[start:stop-1]`` and returns ``stop``, or writes NaN to
    the rest of ``out`` and returns -1 if there is no such window.
    """
    run = 0
    for i in range(start, src.shape[0]):
        run = 0 if np.isnan(src[i]) else run + 1
        if run == n:
            return i + 1
        out[i] = np.nan
    return -1


@nb.njit(**_JIT)
def _window_sum(src: np.ndarray, stop: int, n: int) -> float:
    total = 0.0
    for w in range(stop - n, stop):
        total += src[w]
    return total


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's fma: one instruction on CPUs with FMA, vectorised in loops)."""

    def codegen(context, builder, sig, args):
        return builder.fma(*args)

    return nb.types.float64(nb.types.float64, nb.types.float64, nb.types.float64), codegen


@nb.njit(**_JIT)
def _divide_in_place(values: np.ndarray, start: int, stop: int, n: int) -> None:
    """``values[start:stop] /= n``, bit for bit, without dividing.

    ``q = t * (1/n)`` is within an ulp of ``t / n``; the remainder
    ``t - q * n`` is exact with an FMA, and one correction step
    ``q + remainder * (1/n)`` gives the correctly rounded quotient
    (Markstein's theorem; a test compares with numpy's division bit for bit).
    Vectorised multiply-adds instead of a division per bar.
    """
    d = float(n)
    reciprocal = 1.0 / d
    u = np.uint64(start)
    end = np.uint64(stop)
    while u < end:
        t = values[u]
        q = t * reciprocal
        remainder = _fma(-q, d, t)
        # no remainder: q is the quotient (the correction would turn -0.0 into 0.0)
        values[u] = q if remainder == 0.0 else _fma(remainder, reciprocal, q)
        u += np.uint64(1)


@nb.njit(**_JIT)
def _nan_free_until(src: np.ndarray, start: int) -> int:
    """The first index ``>= start`` where ``src`` is NaN, else ``len(src)``.
    Blocks of 64 values are tested by one vectorised OR-reduction; only the
    block holding the NaN is searched value by value."""
    m = np.uint64(src.shape[0])
    i = np.uint64(start)
    block = np.uint64(64)
    while i + block <= m:
        unordered = False
        k = i
        end = i + block
        while k < end:
            unordered |= src[k] != src[k]
            k += np.uint64(1)
        if unordered:
            break
        i = end
    while i < m and not np.isnan(src[i]):
        i += np.uint64(1)
    return int(i)


@nb.njit(**_JIT)
def _window_sums(src: np.ndarray, out: np.ndarray, n: int, first: int, stop: int, every: int) -> None:
    """``out[t]`` = the sum of ``src[t-n+1 : t+1]`` for ``first <= t < stop``
    (windows free of NaN), in chunks of ``every`` bars: exact from the window
    at each chunk's first bar, a running update ``+ (src[t] - src[t-n])``
    after.  A running sum is a chain of dependent additions (~4 cycles
    each); four chunks at a time are four independent chains.  Unsigned
    indices: numba wraps negative signed ones, a compare and select per
    access.
    """
    w = np.uint64(n)
    e = np.uint64(every)
    c = np.uint64(first)
    end = np.uint64(stop)
    one = np.uint64(1)
    group = np.uint64(4) * e
    while c + group <= end:
        c0 = c
        c1 = c0 + e
        c2 = c1 + e
        c3 = c2 + e
        t0 = _window_sum(src, int(c0) + 1, n)
        t1 = _window_sum(src, int(c1) + 1, n)
        t2 = _window_sum(src, int(c2) + 1, n)
        t3 = _window_sum(src, int(c3) + 1, n)
        out[c0] = t0
        out[c1] = t1
        out[c2] = t2
        out[c3] = t3
        j = one
        while j < e:
            u0, u1, u2, u3 = c0 + j, c1 + j, c2 + j, c3 + j
            t0 += src[u0] - src[u0 - w]
            t1 += src[u1] - src[u1 - w]
            t2 += src[u2] - src[u2 - w]
            t3 += src[u3] - src[u3 - w]
            out[u0] = t0
            out[u1] = t1
            out[u2] = t2
            out[u3] = t3
            j += one
        c += group
    while c < end:  # the remaining chunks, one at a time
        total = _window_sum(src, int(c) + 1, n)
        out[c] = total
        chunk_end = min(c + e, end)
        u = c + one
        while u < chunk_end:
            total += src[u] - src[u - w]
            out[u] = total
            u += one
        c = chunk_end


@nb.njit(**_JIT)
def _sma_col(src: np.ndarray, out: np.ndarray, n: int) -> None:
    """Rolling mean of one column: window sums (exact every
    ``max(n, 1024)`` bars, running in between), then divided by ``n``, over
    each stretch of full NaN-free windows."""
    every = max(n, _REFRESH_BARS)
    m = src.shape[0]
    i = _next_full_window(src, out, 0, n)
    while i > 0:
        stop = _nan_free_until(src, i)
        _window_sums(src, out, n, i - 1, stop, every)
        _divide_in_place(out, i - 1, stop, n)
        i = _next_full_window(src, out, stop, n) if stop < m else -1


@nb.njit(**_JIT)
def _window_moments(src: np.ndarray, stop: int, n: int) -> tuple[float, float]:
    """Mean and sum of squared deviations of ``src[stop-n:stop]`` (two-pass)."""
    mean = _window_sum(src, stop, n) / n
    m2 = 0.0
    for w in range(stop - n, stop):
        m2 += (src[w] - mean) ** 2
    return mean, m2


@nb.njit(**_JIT)
def _std_col(src: np.ndarray, out: np.ndarray, n: int, ddof: int) -> None:
    """Rolling standard deviation of one column.

    Slides the window mean and sum of squared deviations ``M2`` by one bar
    with ``M2' = M2 + (new - old) * (new - mean' + old - mean)``, refreshed
    exactly (two-pass) from the window every ``n`` bars: variance suffers
    from cancellation, so error carried over from a volatile stretch must
    not outlive the window (e.g. into a flat stretch, whose std is ~0).
    Unsigned bar numbers in the running loop, as in :func:`_sma_col`.
    """
    every = n
    inv_n = 1.0 / n
    inv_dof = 1.0 / (n - ddof)
    m = np.uint64(src.shape[0])
    width = np.uint64(n)
    i = _next_full_window(src, out, 0, n)
    while i > 0:
        mean, m2 = _window_moments(src, i, n)
        out[i - 1] = np.sqrt(m2 * inv_dof)
        left = every
        u = np.uint64(i)
        while u < m and not np.isnan(src[u]):
            left -= 1
            if left == 0:
                mean, m2 = _window_moments(src, int(u) + 1, n)
                left = every
            else:
                step = src[u] - src[u - width]
                new_mean = mean + step * inv_n
                m2 += step * (src[u] - new_mean + src[u - width] - mean)
                mean = new_mean
            out[u] = np.sqrt(max(m2, 0.0) * inv_dof)
            u += np.uint64(1)
        i = _next_full_window(src, out, int(u), n)


@nb.njit(**_JIT)
def _window_weighted_sums(src: np.ndarray, stop: int, n: int) -> tuple[float, float]:
    """Plain sum and weighted sum (weights 1..n, oldest first) of a window."""
    plain = 0.0
    weighted = 0.0
    for w in range(n):
        v = src[stop - n + w]
        plain += v
        weighted += (w + 1) * v
    return plain, weighted


@nb.njit(**_JIT)
def _wma_col(src: np.ndarray, out: np.ndarray, n: int) -> None:
    """Linearly weighted rolling mean of one column (newest weight ``n``).

    Slides the plain window sum ``S`` and weighted sum ``W`` by one bar with
    ``W' = W + n*new - S`` and ``S' = S + new - old``, refreshed exactly from
    the window periodically.  Unsigned bar numbers in the running loop, as
    in :func:`_sma_col`.
    """
    every = max(n, _REFRESH_BARS)
    denom = n * (n + 1) / 2.0
    m = np.uint64(src.shape[0])
    width = np.uint64(n)
    i = _next_full_window(src, out, 0, n)
    while i > 0:
        plain, weighted = _window_weighted_sums(src, i, n)
        out[i - 1] = weighted / denom
        left = every
        u = np.uint64(i)
        while u < m and not np.isnan(src[u]):
            left -= 1
            if left == 0:
                plain, weighted = _window_weighted_sums(src, int(u) + 1, n)
                left = every
            else:
                weighted += n * src[u] - plain
                plain += src[u] - src[u - width]
            out[u] = weighted / denom
            u += np.uint64(1)
        i = _next_full_window(src, out, int(u), n)


@nb.njit(**_JIT)
def _smooth_col(src: np.ndarray, out: np.ndarray, n: int, alpha: float) -> None:
    """Seeded exponential smoothing of one column, skipping NaN bars.

    The first output is the mean of the first ``n`` valid values; after that
    ``y = (1 - alpha) * y + alpha * x``.  ``out`` may alias ``src``.
    """
    beta = 1.0 - alpha
    count = 0
    state = 0.0
    for i in range(src.shape[0]):
        v = src[i]
        if np.isnan(v):
            out[i] = np.nan
        elif count < n:
            state += v
            count += 1
            if count == n:
                state /= n
                out[i] = state
            else:
                out[i] = np.nan
        else:
            state = beta * state + alpha * v
            out[i] = state


@nb.njit((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _sma_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _sma_col(x[:, j], out[:, j], n)


@nb.njit((_ROWS, nb.int64, _OUT_ROWS), **_JIT)
def _sma_rows(rows: np.ndarray, n: int, out_rows: np.ndarray) -> None:
    """:func:`_sma_2d` of ``rows.T`` into ``out_rows.T``, for inputs whose
    columns are contiguous (``rows`` typed C-contiguous, so numba knows each
    column is and the loops of :func:`_sma_col` vectorise)."""
    for j in range(rows.shape[0]):
        _sma_col(rows[j], out_rows[j], n)


def _sma_kernel(x: np.ndarray, n: int, out: np.ndarray) -> None:
    """The sma kernel for ``x`` (bars × columns) into ``out`` (its shape, columns contiguous): :func:`_sma_rows`
    when the columns of ``x`` are contiguous."""
    rows = x.T
    if rows.flags.c_contiguous:
        _sma_rows(rows, n, out.T)
    else:
        _sma_2d(x, n, out)


@nb.njit((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _wma_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _wma_col(x[:, j], out[:, j], n)


@nb.njit((_ARR2D, nb.int64, nb.int64, _OUT2D), **_JIT)
def _std_2d(x: np.ndarray, n: int, ddof: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _std_col(x[:, j], out[:, j], n, ddof)


@nb.njit((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _ema_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _smooth_col(x[:, j], out[:, j], n, 2.0 / (n + 1.0))


@nb.njit((_ARR2D, nb.int64, nb.int64, nb.float64, _OUT2D, _OUT2D, _OUT2D), **_JIT)
def _bollinger_2d(
    x: np.ndarray, n: int, ddof: int, k: float, middle: np.ndarray, upper: np.ndarray, lower: np.ndarray
) -> None:
    nrows, ncols = x.shape
    for j in range(ncols):
        _sma_col(x[:, j], middle[:, j], n)
        _std_col(x[:, j], upper[:, j], n, ddof)
        for i in range(nrows):
            width = k * upper[i, j]
            upper[i, j] = middle[i, j] + width
            lower[i, j] = middle[i, j] - width


@nb.njit((_ARR2D, nb.int64, nb.int64, nb.int64, _OUT2D, _OUT2D, _OUT2D), **_JIT)
def _macd_2d(
    x: np.ndarray, fast: int, slow: int, signal: int, line: np.ndarray, sig: np.ndarray, hist: np.ndarray
) -> None:
    nrows, ncols = x.shape
    for j in range(ncols):
        _smooth_col(x[:, j], line[:, j], fast, 2.0 / (fast + 1.0))
        _smooth_col(x[:, j], hist[:, j], slow, 2.0 / (slow + 1.0))
        for i in range(nrows):
            line[i, j] -= hist[i, j]
        _smooth_col(line[:, j], sig[:, j], signal, 2.0 / (signal + 1.0))
        for i in range(nrows):
            hist[i, j] = line[i, j] - sig[i, j]


@nb.njit((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _rsi_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    nrows, ncols = x.shape
    gain = np.empty(nrows)
    loss = np.empty(nrows)
    for j in range(ncols):
        prev = np.nan
        for i in range(nrows):
            v = x[i, j]
            if np.isnan(v) or np.isnan(prev):
                gain[i] = np.nan
                loss[i] = np.nan
            else:
                gain[i] = max(v - prev, 0.0)
                loss[i] = max(prev - v, 0.0)
            if not np.isnan(v):
                prev = v
        _smooth_col(gain, gain, n, 1.0 / n)
        _smooth_col(loss, loss, n, 1.0 / n)
        for i in range(nrows):
            total = gain[i] + loss[i]
            if np.isnan(total):
                out[i, j] = np.nan
            elif total > 0.0:
                out[i, j] = 100.0 * gain[i] / total
            else:
                out[i, j] = 50.0


@nb.njit((_ARR2D, _ARR2D, _ARR2D, nb.int64, _OUT2D), **_JIT)
def _atr_2d(high: np.ndarray, low: np.ndarray, close: np.ndarray, n: int, out: np.ndarray) -> None:
    nrows, ncols = close.shape
    for j in range(ncols):
        col = out[:, j]
        prev_close = np.nan
        for i in range(nrows):
            h = high[i, j]
            lo = low[i, j]
            c = close[i, j]
            if np.isnan(h) or np.isnan(lo) or np.isnan(c):
                col[i] = np.nan
                continue
            if np.isnan(prev_close):
                col[i] = np.nan
            else:
                col[i] = max(h - lo, abs(h - prev_close), abs(lo - prev_close))
            prev_close = c
        _smooth_col(col, col, n, 1.0 / n)


@nb.njit((_ARR2D, _ARR2D, _ARR2D, nb.int64, nb.int64, _OUT2D, _OUT2D), **_JIT)
def _stochastic_2d(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, k: int, d: int, pct_k: np.ndarray, pct_d: np.ndarray
) -> None:
    nrows, ncols = close.shape
    # Monotonic deques of bar indices: highs decreasing, lows increasing.
    max_q = np.empty(nrows, dtype=np.int64)
    min_q = np.empty(nrows, dtype=np.int64)
    for j in range(ncols):
        run = 0
        max_head = max_tail = min_head = min_tail = 0
        for i in range(nrows):
            h = high[i, j]
            lo = low[i, j]
            c = close[i, j]
            if np.isnan(h) or np.isnan(lo) or np.isnan(c):
                run = 0
                max_head = max_tail = min_head = min_tail = 0
                pct_k[i, j] = np.nan
                continue
            run += 1
            while max_tail > max_head and high[max_q[max_tail - 1], j] <= h:
                max_tail -= 1
            max_q[max_tail] = i
            max_tail += 1
            if max_q[max_head] <= i - k:
                max_head += 1
            while min_tail > min_head and low[min_q[min_tail - 1], j] >= lo:
                min_tail -= 1
            min_q[min_tail] = i
            min_tail += 1
            if min_q[min_head] <= i - k:
                min_head += 1
            if run < k:
                pct_k[i, j] = np.nan
                continue
            highest = high[max_q[max_head], j]
            lowest = low[min_q[min_head], j]
            span = highest - lowest
            pct_k[i, j] = 100.0 * (c - lowest) / span if span != 0.0 else 50.0
        _sma_col(pct_k[:, j], pct_d[:, j], d)


# Relation of a value ``a`` to a value ``b`` as a bit set: ``a >= b`` sets
# _AT_OR_ABOVE and ``a <= b`` sets _AT_OR_BELOW, so the code is 1 above,
# 2 below, 3 equal and 0 unordered (NaN on either side).
_AT_OR_ABOVE = np.uint8(1)
_AT_OR_BELOW = np.uint8(2)
_NEITHER = np.uint8(0)


@nb.njit(**_JIT)
def _relations(x: np.ndarray, y: np.ndarray, rel: np.ndarray) -> None:
    """Write the relation code of ``x[t]`` to ``y[t]`` to ``rel[t]`` (1-D)."""
    for i in range(x.shape[0]):
        rel[i] = (_AT_OR_ABOVE if x[i] >= y[i] else _NEITHER) | (
            _AT_OR_BELOW if x[i] <= y[i] else _NEITHER
        )


@nb.njit(**_JIT)
def _level_relations(x: np.ndarray, level: float, rel: np.ndarray) -> None:
    """:func:`_relations` of ``x`` to a constant level."""
    for i in range(x.shape[0]):
        rel[i] = (_AT_OR_ABOVE if x[i] >= level else _NEITHER) | (
            _AT_OR_BELOW if x[i] <= level else _NEITHER
        )


@nb.njit(**_JIT)
def _crossings_of(rel: np.ndarray, up: np.ndarray, down: np.ndarray) -> None:
    """Crossings from the relation codes of one column (1-D).

    ``up[t]``: above at ``t`` and at or below at ``t - 1``; ``down[t]``:
    below at ``t`` and at or above at ``t - 1``; bar 0 is False.  Each output
    is one independent pass over shifted views of ``rel`` (no ``t - 1``
    index arithmetic), which LLVM vectorises.
    """
    n = rel.shape[0]
    if n == 0:
        return
    up[0] = False
    down[0] = False
    now = rel[1:]
    before = rel[:-1]
    u = up[1:]
    d = down[1:]
    for i in range(n - 1):
        u[i] = (now[i] == _AT_OR_ABOVE) & ((before[i] & _AT_OR_BELOW) != _NEITHER)
    for i in range(n - 1):
        d[i] = (now[i] == _AT_OR_BELOW) & ((before[i] & _AT_OR_ABOVE) != _NEITHER)


@nb.njit((_ROWS, _ROWS), **_JIT)
def _crossings_rows(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crossings along the rows of C-contiguous ``(columns, bars)`` arrays.

    Returns ``(above, below)`` with ``above[j, t] = a[j, t] > b[j, t] and
    a[j, t-1] <= b[j, t-1]`` and ``below`` likewise with ``<`` and ``>=``;
    bar 0 is False and any comparison with NaN is False.  Both come from one
    pass over the inputs (the pair is nearly always asked for together): it
    compares each bar once, into one relation byte, and the crossings are
    then read from those bytes.  Every loop is contiguous and vectorises.
    """
    ncols, nrows = a.shape
    up = np.empty((ncols, nrows), dtype=np.bool_)
    down = np.empty((ncols, nrows), dtype=np.bool_)
    rel = np.empty(nrows, dtype=np.uint8)
    for j in range(ncols):
        _relations(a[j], b[j], rel)
        _crossings_of(rel, up[j], down[j])
    return up, down


@nb.njit((_ROWS, nb.float64), **_JIT)
def _level_crossings_rows(a: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_crossings_rows` against a constant level."""
    ncols, nrows = a.shape
    up = np.empty((ncols, nrows), dtype=np.bool_)
    down = np.empty((ncols, nrows), dtype=np.bool_)
    rel = np.empty(nrows, dtype=np.uint8)
    for j in range(ncols):
        _level_relations(a[j], level, rel)
        _crossings_of(rel, up[j], down[j])
    return up, down


def _crossings_2d(
    a: np.ndarray, b: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray]:
    """``(above, below)`` crossings of a 2-D ``(bars, columns)`` array and
    another like it or a level (a float); output columns contiguous, like the
    other kernels' outputs."""
    # C-contiguous (columns, bars) views: the columns of a and b are
    # contiguous (pandas blocks, market data, indicator outputs), else copies
    rows = np.ascontiguousarray(a.T)
    if isinstance(b, float):
        up, down = _level_crossings_rows(rows, b)
    else:
        up, down = _crossings_rows(rows, np.ascontiguousarray(b.T))
    return up.T, down.T


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


class _Operand(NamedTuple):
    """An array-like input, inspected without copying anything."""

    obj: object  # the caller's object
    values: np.ndarray  # its numpy data
    root: np.ndarray  # the last ndarray in the chain of ``base`` arrays of values
    labels: tuple[object, object]  # (index, columns), (index, name) or _NO_LABELS
    # (shape, strides, dtype) of values and the ids of obj, root and labels
    state: tuple[object, ...]


def _operand(x: object, role: str) -> _Operand:
    """Inspect one array-like input (no copy is made).

    ``state`` is what a cache hit requires to be unchanged.  It is part of
    the cache key, so one dict lookup compares the layout and, by ``id()``,
    the very objects: a cache record holds its operands, so those ids cannot
    be reused while it lives.  The root decides whether the memory is
    read-only: if it is, no view of it can be written (numpy refuses to make
    such a view writable); a root that is not an ndarray (a foreign buffer)
    is beyond the chain, so the last ndarray decides.
    """
    known = _CACHE.operand_of(x)  # a cached result, passed on (e.g. the averages a crossing compares)
    if known is not None:
        return known
    kind = type(x)
    if kind is np.ndarray:  # the common kinds first, by exact type (cheaper than isinstance)
        values = x
        labels: tuple[object, object] = _NO_LABELS
    elif kind is pd.DataFrame or isinstance(x, pd.DataFrame):
        # What ``.values`` presents: the frame's one numpy block, or a copy
        # if it has several (then it is writable, so never cached).
        values = _frames.values(x)
        labels = (x.index, x.columns)
    elif isinstance(x, pd.Series):
        values = x.to_numpy()
        labels = (x.index, x.name)
    elif isinstance(x, np.ndarray):
        values = x
        labels = _NO_LABELS
    else:
        raise TypeError(
            f"{role} must be a pandas DataFrame/Series or numpy ndarray, "
            f"got {type(x).__name__}"
        )
    if values.ndim not in (1, 2):
        raise ValueError(f"{role} must be 1-D or 2-D, got {values.ndim}-D")
    root, state = _root_and_state(x, values, labels)
    # tuple.__new__ is what the NamedTuple constructor calls, minus a frame.
    return _new_tuple(_Operand, (x, values, root, labels, state))


def _root_and_state(
    obj: object, values: np.ndarray, labels: tuple[object, object]
) -> tuple[np.ndarray, tuple[object, ...]]:
    """The root array of ``values`` (the last ndarray in its chain of
    ``base`` arrays) and the :attr:`_Operand.state` of ``obj``, which
    presents ``values`` with ``labels``."""
    root = values
    while isinstance(root.base, np.ndarray):
        root = root.base
    state = (
        values.shape, values.strides, values.dtype, id(obj), id(root),
        id(labels[0]), id(labels[1]),
    )
    return root, state


_new_tuple = tuple.__new__
_NO_LABELS = (None, None)  # the labels of a numpy array
_FLOAT64 = np.dtype(np.float64)


def _as_float2d(values: np.ndarray) -> np.ndarray:
    """float64 2-D view of ``values`` (copies only to convert the dtype)."""
    if type(values) is np.ndarray and values.dtype == _FLOAT64:
        arr = values  # what np.asarray would return, without the call
    else:
        arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _positive_int(value: int, name: str) -> int:
    """Validate a window length / period."""
    if type(value) is int and value >= 1:  # the common case, without ABC checks
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


class CacheInfo(NamedTuple):
    """Statistics of this process's indicator cache.

    ``hits`` and ``misses`` count lookups with cache-eligible (read-only)
    inputs only; calls on writable inputs bypass the cache and are not
    counted.  ``bytes`` is the memory the stored outputs hold (their size;
    outputs carved from huge-page slabs count as whole slabs, see the module
    docstring) and ``limit`` the bound in bytes.
    """

    hits: int
    misses: int
    entries: int
    bytes: int
    limit: int


class _Handout(NamedTuple):
    """How a cached result object looked when it was handed out.

    Hits return the very same object, which a caller may have changed in
    place since (``df.columns = ...``, ``df["A"] = ...``, ``arr.shape = ...``;
    its memory is read-only, so only labels, layout or the memory itself can
    change).  A hit checks the object against its handout and replaces it
    by a fresh wrapper of the cached memory if it no longer matches, so one
    caller's edits never reach another caller.
    """

    # What the check compares: operand.state (for a DataFrame, its
    # raybt._frames.stamp instead).  Its ids stay valid: the cache entry holds
    # the object, its root (the kernel output) and, through its operands, the
    # labels.
    state: tuple[object, ...]
    # What _operand() finds for the object as handed out (its root is the
    # kernel output): a later call taking the object as an input reuses this
    # while the object is untouched.
    operand: _Operand


def _handout(
    obj: object, values: np.ndarray, labels: tuple[object, object]
) -> _Handout:
    """The :class:`_Handout` of ``obj``, which presents ``values`` (what
    :func:`_operand` finds for it) and ``labels``."""
    root, state = _root_and_state(obj, values, labels)
    operand = _new_tuple(_Operand, (obj, values, root, labels, state))
    if type(obj) is pd.DataFrame:  # checked by what it presents (see raybt._frames), ~0.2 µs instead of ~3
        state = _frames.stamp(obj)
    return _new_tuple(_Handout, (state, operand))


def _untouched(obj: object, handout: _Handout) -> bool:
    """True if ``obj`` still presents the memory, layout and labels it was
    handed out with."""
    if type(obj) is np.ndarray:
        # An array's state (see _root_and_state) without the walk: numpy keeps
        # a view's ``base`` at the array owning the memory, the root.
        state = handout.state
        return (
            obj.base is handout.operand.root
            and obj.shape == state[0]
            and obj.strides == state[1]
            and obj.dtype == state[2]
        )
    if type(obj) is pd.DataFrame:
        return _frames.unchanged(obj, handout.state)
    try:
        op = _operand(obj, "result")
    except ValueError:  # e.g. an array reshaped to 3-D
        return False
    return op.state == handout.state and op.root is handout.operand.root


class _Entry(NamedTuple):
    operands: tuple[_Operand, ...]  # held: keeps the ids in the key valid
    raws: tuple[np.ndarray, ...]  # the read-only kernel outputs
    result: tuple[object, ...]  # their wrappers, as handed out
    handouts: tuple[_Handout, ...]
    nbytes: int  # of the outputs not carved from slabs
    slabs: tuple[object, ...]  # the slabs the others were carved from (see raybt._slabs)


class _Parked(NamedTuple):
    """A result computed ahead of its call (see :meth:`_ResultCache.park`)."""

    key: tuple[object, ...]
    operands: tuple[_Operand, ...]
    raw: np.ndarray


class _ResultCache:
    """Thread-safe LRU map from call keys to read-only results, bounded in bytes.

    A key is ``(name, params, states)`` with the :attr:`_Operand.state` of
    each input, so a lookup that finds an entry has found one made from the
    very same, unchanged inputs.  Beside the LRU it keeps one *parked*
    result (see :func:`_crossed`), computed ahead of the call that will most
    likely ask for it next.

    ``nbytes`` is the memory the entries hold: the size of their outputs,
    except that outputs carved from slabs count as whole slabs
    (:data:`raybt._slabs.SLAB_BYTES` for each slab holding an entry's output,
    however little of it), so the bound holds for what stays mapped.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._entries: OrderedDict[tuple[object, ...], _Entry] = OrderedDict()
        self._slab_entries: dict[int, list] = {}  # id(slab) -> [slab, entries holding outputs in it]
        # id(result object) -> its _Handout, for the arrays and DataFrames the entries hand out (see operand_of)
        self._handouts: dict[int, _Handout] = {}
        self._parked: _Parked | None = None
        self._lock = threading.Lock()
        self.limit = limit_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, key: tuple[object, ...]) -> _Entry | None:
        """The entry of ``key``, if any.

        The caller checks the result objects against their handouts (see
        :class:`_Handout`); a hit means that nothing needs computing.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def take_parked(self, key: tuple[object, ...]) -> np.ndarray | None:
        """The result parked under ``key`` (see :meth:`park`), handed over
        and no longer held; None (a miss) if another is parked."""
        with self._lock:
            parked = self._parked
            if parked is not None and parked.key == key:
                self._parked = None
                self.hits += 1
                return parked.raw
            self.misses += 1
            return None

    def store(
        self,
        key: tuple[object, ...],
        operands: tuple[_Operand, ...],
        raws: tuple[np.ndarray, ...],
        result: tuple[object, ...],
        handouts: tuple[_Handout, ...],
        nbytes: int,
        slabs: tuple[object, ...],
    ) -> None:
        """Store (or replace) the entry of ``key``: ``raws`` are the frozen
        kernel outputs and ``result`` their wrappers, being handed out;
        ``nbytes`` the size of the outputs not carved from ``slabs``."""
        entry = _new_tuple(_Entry, (operands, raws, result, handouts, nbytes, slabs))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._uncount(old)
            self._entries[key] = entry
            self.nbytes += nbytes
            for obj, handout in zip(result, handouts):
                # only the kinds _untouched checks directly: for others it calls _operand, which consults this
                if type(obj) is np.ndarray or type(obj) is pd.DataFrame:
                    self._handouts[id(obj)] = handout
            for slab in slabs:
                users = self._slab_entries.get(id(slab))
                if users is None:
                    self._slab_entries[id(slab)] = [slab, 1]
                    self.nbytes += _slabs.SLAB_BYTES
                else:
                    users[1] += 1
            self._evict()

    def _uncount(self, entry: _Entry) -> None:
        """Take a removed entry out of :attr:`nbytes` (a slab leaves it with its last entry) and its result objects
        out of the handouts."""
        for obj in entry.result:
            handout = self._handouts.get(id(obj))
            if handout is not None and handout.operand.obj is obj:
                del self._handouts[id(obj)]
        self.nbytes -= entry.nbytes
        for slab in entry.slabs:
            users = self._slab_entries[id(slab)]
            users[1] -= 1
            if users[1] == 0:
                del self._slab_entries[id(slab)]
                self.nbytes -= _slabs.SLAB_BYTES

    def park(
        self, key: tuple[object, ...], operands: tuple[_Operand, ...], raw: np.ndarray
    ) -> None:
        """Hold one result computed ahead of its call (the other crossing of
        a pair) until that call takes it or the next :meth:`park` replaces it:
        a single slot, so at most one such result is ever kept.  ``operands``
        are held so that the ids in ``key`` stay valid meanwhile."""
        parked = _new_tuple(_Parked, (key, operands, raw))
        with self._lock:
            self._parked = parked

    def set_limit(self, limit_bytes: int) -> None:
        with self._lock:
            self.limit = limit_bytes
            if limit_bytes <= 0:
                self._parked = None
            self._evict()

    def operand_of(self, obj: object) -> _Operand | None:
        """The :class:`_Operand` of ``obj`` if it is an array or DataFrame a stored entry handed out and it is
        untouched since (~0.3 instead of ~1 µs for a DataFrame); else None."""
        handout = self._handouts.get(id(obj))
        if handout is None or handout.operand.obj is not obj or not _untouched(obj, handout):
            return None
        return handout.operand

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._slab_entries.clear()
            self._handouts.clear()
            self._parked = None
            self.nbytes = 0
            self.hits = 0
            self.misses = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._entries), self.nbytes, self.limit)

    def _evict(self) -> None:
        while self.nbytes > self.limit and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._uncount(entry)


def _limit_from_env() -> int:
    """Cache bound in bytes from ``RAYBT_INDICATOR_CACHE_MB`` (default 256)."""
    raw = os.environ.get(_CACHE_ENV_VAR)
    if raw is None or not raw.strip():
        return int(_DEFAULT_CACHE_MB * _BYTES_PER_MB)
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        warnings.warn(
            f"ignoring invalid {_CACHE_ENV_VAR}={raw!r}; using {_DEFAULT_CACHE_MB:g} MB",
            RuntimeWarning,
            stacklevel=2,
        )
        megabytes = _DEFAULT_CACHE_MB
    return int(megabytes * _BYTES_PER_MB)


_CACHE = _ResultCache(_limit_from_env())
_SLABS = _slabs.SlabAllocator()
# Outputs are carved from slabs (see raybt._slabs) only under a bound of at least this many bytes: a slab counts
# whole against it.
_CARVE_MIN_LIMIT = 16 * _slabs.SLAB_BYTES


def set_cache_limit(megabytes: float) -> None:
    """Bound this process's cache to ``megabytes`` MiB of stored outputs.

    Least-recently-used entries are evicted immediately if the cache is over
    the new bound; 0 disables caching.
    """
    if not megabytes >= 0:
        raise ValueError(f"megabytes must be >= 0, got {megabytes!r}")
    _CACHE.set_limit(int(megabytes * _BYTES_PER_MB))
    _SLABS.release()


def clear_cache() -> None:
    """Drop every cached result (releasing its inputs and, once no result over it is held elsewhere, its memory)
    and reset hit/miss counts."""
    _CACHE.clear()
    _SLABS.release()


def cache_info() -> CacheInfo:
    """Return ``CacheInfo(hits, misses, entries, bytes, limit)`` for this process."""
    return _CACHE.info()


# ---------------------------------------------------------------------------
# Evaluation: cache lookup, kernel call, output wrapping
# ---------------------------------------------------------------------------

_Kernel = Callable[..., None]


def _freeze(arr: np.ndarray) -> None:
    """Make ``arr`` and every ndarray it views read-only."""
    node: object = arr
    while isinstance(node, np.ndarray):
        node.setflags(write=False)
        node = node.base


def _present(raw: np.ndarray, like: _Operand) -> tuple[object, np.ndarray]:
    """Present a 2-D kernel output as the same kind of object as ``like``:
    ``(object, the numpy data it presents)``.

    pandas objects reuse the input's very index and columns (or index and
    name) objects, so that e.g. ``signal_arrays`` recognises the labels by
    identity, and keep the kernel's memory (no copy): a DataFrame's
    ``values`` present ``raw`` itself, a Series' ``to_numpy()`` its one
    column.  Arrays are handed out as new views, never as ``raw`` itself,
    which the cache keeps pristine for re-wrapping.
    """
    obj = like.obj
    labels = like.labels
    if isinstance(obj, pd.DataFrame):
        return _frames.frame(raw.T, labels[0], labels[1]), raw  # raw.T: the block, (columns, bars)
    if isinstance(obj, pd.Series):
        values = raw[:, 0]
        return pd.Series(values, index=labels[0], name=labels[1], copy=False), values
    values = raw.view() if like.values.ndim == 2 else raw[:, 0]
    return values, values


def _wrap(raw: np.ndarray, like: _Operand) -> tuple[object, _Handout]:
    """:func:`_present` a cached output: the object and its :class:`_Handout`."""
    out, values = _present(raw, like)
    return out, _handout(out, values, like.labels)


def _wrap_all(
    raws: tuple[np.ndarray, ...], like: _Operand
) -> tuple[tuple[object, ...], tuple[_Handout, ...]]:
    """:func:`_wrap` each of ``raws``: ``(objects, handouts)``."""
    wrapped = [_wrap(raw, like) for raw in raws]
    return tuple([w[0] for w in wrapped]), tuple([w[1] for w in wrapped])


def _inspect(
    name: str, params: tuple[object, ...], inputs: tuple[tuple[object, str], ...]
) -> tuple[tuple[_Operand, ...], tuple[object, ...] | None]:
    """Operands of ``inputs`` ((object, role) pairs), checked to have one
    shape, and the cache key of the call (see :class:`_ResultCache`), or
    None if it may not use the cache: only read-only memory is eligible
    (see the module docstring)."""
    # Written out for one and two inputs (nearly every call): loops and
    # comprehensions cost microseconds per call here.
    first = _operand(*inputs[0])
    if len(inputs) == 1:
        if first.root.flags.writeable or _CACHE.limit <= 0:
            return (first,), None
        return (first,), (name, params, (first.state,))
    if len(inputs) == 2:
        second = _operand(*inputs[1])
        _check_shape(second, inputs[1][1], first, inputs[0][1])
        writable = first.root.flags.writeable or second.root.flags.writeable
        if writable or _CACHE.limit <= 0:
            return (first, second), None
        return (first, second), (name, params, (first.state, second.state))
    operands = (first, *starmap(_operand, inputs[1:]))
    for op, (_, role) in zip(operands[1:], inputs[1:]):
        _check_shape(op, role, first, inputs[0][1])
    if _CACHE.limit <= 0 or any(op.root.flags.writeable for op in operands):
        return operands, None
    return operands, (name, params, tuple([op.state for op in operands]))


def _check_shape(op: _Operand, role: str, first: _Operand, first_role: str) -> None:
    """Raise unless ``op`` has the shape of the call's first input."""
    if op.values.shape != first.values.shape:
        raise ValueError(
            f"{role} has shape {op.values.shape}, expected {first.values.shape} "
            f"like {first_role}"
        )


def _new_outputs(
    count: int, nrows: int, ncols: int, carve: bool
) -> tuple[tuple[np.ndarray, ...], int, tuple[object, ...]]:
    """``count`` uninitialised float64 ``(nrows, ncols)`` outputs with contiguous columns, the bytes of those
    allocated on their own, and the slabs the others were carved from (see :mod:`raybt._slabs`; only if
    ``carve``)."""
    outputs = []
    own_bytes = 0
    slabs: list[object] = []
    for _ in range(count):
        carved = _SLABS.carve(ncols, nrows) if carve else None
        if carved is None:
            out = np.empty((ncols, nrows)).T
            own_bytes += out.nbytes
        else:
            out = carved[0].T
            if not any(slab is carved[1] for slab in slabs):
                slabs.append(carved[1])
        outputs.append(out)
    return tuple(outputs), own_bytes, tuple(slabs)


def _evaluate(
    name: str,
    params: tuple[object, ...],
    inputs: tuple[tuple[object, str], ...],
    kernel: _Kernel,
    n_outputs: int = 1,
) -> tuple[object, ...]:
    """Compute ``kernel`` on ``inputs`` or fetch the cached result.

    ``inputs`` are (object, role) pairs; ``kernel`` receives their float64
    2-D arrays and then ``n_outputs`` arrays of the same shape to write its
    outputs to, which are wrapped like the first input.  Outputs to be cached
    are carved from huge-page slabs where they fit (see :mod:`raybt._slabs`).
    A hit returns the cached result objects, or fresh wrappers of the cached
    memory if a caller changed one of them in place (see :class:`_Handout`).
    """
    operands, key = _inspect(name, params, inputs)
    cache = _CACHE
    first = operands[0]
    if key is not None:
        entry = cache.lookup(key)
        if entry is not None:
            result = entry.result
            for obj, handout in zip(result, entry.handouts):
                if not _untouched(obj, handout):
                    raws = entry.raws
                    result, handouts = _wrap_all(raws, first)
                    cache.store(key, operands, raws, result, handouts, entry.nbytes, entry.slabs)
                    break
            return result

    arrays = [_as_float2d(op.values) for op in operands]
    nrows, ncols = arrays[0].shape
    carve = key is not None and cache.limit >= _CARVE_MIN_LIMIT
    raws, nbytes, slabs = _new_outputs(n_outputs, nrows, ncols, carve)
    kernel(*arrays, *raws)
    if key is None or nbytes > cache.limit:
        return _wrap_all(raws, first)[0]
    for raw in raws:
        _freeze(raw)
    result, handouts = _wrap_all(raws, first)
    cache.store(key, operands, raws, result, handouts, nbytes, slabs)
    return result


# ---------------------------------------------------------------------------
# Public indicators
# ---------------------------------------------------------------------------


def sma(x: Data, n: int) -> Data:
    """Simple moving average over ``n`` bars.

    ``sma[t] = (x[t] + x[t-1] + ... + x[t-n+1]) / n``, in the units of ``x``.
    Warm-up: NaN for the first ``n - 1`` bars of each column (counted from its
    first valid value); any window containing NaN is NaN, exactly like
    pandas ``x.rolling(n).mean()``.  O(rows): a running window sum, recomputed
    exactly at least every ``max(n, 1024)`` bars.
    """
    n = _positive_int(n, "n")
    return _evaluate("sma", (n,), ((x, "x"),), lambda a, out: _sma_kernel(a, n, out))[0]


def wma(x: Data, n: int) -> Data:
    """Linearly weighted moving average over ``n`` bars (newest weighs most).

    ``wma[t] = sum_{i=0}^{n-1} (n - i) * x[t-i] / (n (n + 1) / 2)``, in the
    units of ``x``.  Warm-up: NaN for the first ``n - 1`` bars of each column;
    any window containing NaN is NaN (as pandas ``rolling(n)``).
    """
    n = _positive_int(n, "n")
    return _evaluate("wma", (n,), ((x, "x"),), lambda a, out: _wma_2d(a, n, out))[0]


def rolling_std(x: Data, n: int, ddof: int = 1) -> Data:
    """Rolling standard deviation over ``n`` bars.

    ``std[t] = sqrt(sum_{i=0}^{n-1} (x[t-i] - mean[t])**2 / (n - ddof))`` with
    ``mean[t] = sma(x, n)[t]``, in the units of ``x``.  The default
    ``ddof=1`` (sample standard deviation) matches pandas
    ``x.rolling(n).std()``; use ``ddof=0`` for the population value.  Warm-up:
    NaN for the first ``n - 1`` bars of each column; any window containing NaN
    is NaN.  Requires ``n > ddof``.
    """
    n = _positive_int(n, "n")
    ddof = _ddof(ddof, n)
    return _evaluate(
        "rolling_std", (n, ddof), ((x, "x"),), lambda a, out: _std_2d(a, n, ddof, out)
    )[0]


def ema(x: Data, n: int) -> Data:
    """Exponential moving average with span ``n``, seeded by an SMA.

    ``alpha = 2 / (n + 1)``.  The first value, on a column's ``n``-th valid
    bar, is the simple mean of its first ``n`` valid values; after that
    ``ema[t] = (1 - alpha) * ema[t-1] + alpha * x[t]`` (pandas
    ``ewm(span=n, adjust=False)`` started from that seed).  Units of ``x``.
    Warm-up: NaN for the first ``n - 1`` valid bars.  NaN bars are skipped:
    they yield NaN and leave the average unchanged.
    """
    n = _positive_int(n, "n")
    return _evaluate("ema", (n,), ((x, "x"),), lambda a, out: _ema_2d(a, n, out))[0]


def rsi(x: Data, n: int = 14) -> Data:
    """Relative strength index with Wilder's smoothing, 0..100.

    With ``d[t] = x[t] - x[t-1]``, ``gain = max(d, 0)`` and
    ``loss = max(-d, 0)``, the average gain (loss) is first the simple mean of
    the first ``n`` gains (losses) and then
    ``avg[t] = (avg[t-1] * (n - 1) + value[t]) / n``;
    ``rsi = 100 - 100 / (1 + avg_gain / avg_loss)``, evaluated as
    ``100 * avg_gain / (avg_gain + avg_loss)``: 100 when the average loss is
    0, and 50 when both averages are 0 (a flat series).  Warm-up: the first
    ``n`` bars of each column are NaN (a change needs a previous bar), so the
    first value is on the ``n + 1``-th valid bar.  NaN bars are skipped and
    the next change is taken against the last valid value.
    """
    n = _positive_int(n, "n")
    return _evaluate("rsi", (n,), ((x, "x"),), lambda a, out: _rsi_2d(a, n, out))[0]


def atr(high: Data, low: Data, close: Data, n: int = 14) -> Data:
    """Average true range with Wilder's smoothing, in price units.

    ``tr[t] = max(high[t] - low[t], |high[t] - close[t-1]|,
    |low[t] - close[t-1]|)`` is defined from the second bar on; the ATR is
    first the simple mean of the first ``n`` true ranges and then
    ``atr[t] = (atr[t-1] * (n - 1) + tr[t]) / n``.  Warm-up: the first ``n``
    bars of each column are NaN.  A bar is valid only if high, low and close
    are all non-NaN; invalid bars yield NaN and are skipped (``close[t-1]`` is
    the previous valid bar's close).
    """
    n = _positive_int(n, "n")
    inputs = ((high, "high"), (low, "low"), (close, "close"))
    return _evaluate("atr", (n,), inputs, lambda h, lo, c, out: _atr_2d(h, lo, c, n, out))[0]


def bollinger(
    x: Data, n: int = 20, k: float = 2.0, ddof: int = 0
) -> tuple[Data, Data, Data]:
    """Bollinger bands: ``(middle, upper, lower)`` in the units of ``x``.

    ``middle = sma(x, n)``, ``upper = middle + k * sd``,
    ``lower = middle - k * sd`` with ``sd = rolling_std(x, n, ddof)``.  The
    default ``ddof=0`` (population standard deviation) is Bollinger's own
    definition; pass ``ddof=1`` to match pandas ``rolling(n).std()``.
    Warm-up and NaN handling as for :func:`sma`.
    """
    n = _positive_int(n, "n")
    ddof = _ddof(ddof, n)
    k = float(k)
    return _evaluate(
        "bollinger", (n, k, ddof), ((x, "x"),), lambda a, *out: _bollinger_2d(a, n, ddof, k, *out), 3
    )


def macd(
    x: Data, fast: int = 12, slow: int = 26, signal: int = 9
) -> tuple[Data, Data, Data]:
    """Moving average convergence/divergence: ``(macd, signal, histogram)``.

    ``macd = ema(x, fast) - ema(x, slow)``, ``signal = ema(macd, signal)``
    and ``histogram = macd - signal``, in the units of ``x``, each EMA seeded
    as documented in :func:`ema`.  Warm-up: ``macd`` is NaN for the first
    ``max(fast, slow) - 1`` valid bars of a column, ``signal`` and
    ``histogram`` for ``signal - 1`` more.  NaN bars are skipped.
    """
    fast = _positive_int(fast, "fast")
    slow = _positive_int(slow, "slow")
    signal = _positive_int(signal, "signal")
    return _evaluate(
        "macd",
        (fast, slow, signal),
        ((x, "x"),),
        lambda a, *out: _macd_2d(a, fast, slow, signal, *out),
        3,
    )


def stochastic(
    high: Data, low: Data, close: Data, k: int = 14, d: int = 3
) -> tuple[Data, Data]:
    """Stochastic oscillator ``(%K, %D)``, 0..100.

    ``%K[t] = 100 * (close[t] - LL) / (HH - LL)`` where ``HH`` is the highest
    high and ``LL`` the lowest low of the last ``k`` bars (including ``t``);
    ``%K = 50`` when ``HH == LL``.  ``%D = sma(%K, d)``.  Warm-up: ``%K`` is
    NaN for the first ``k - 1`` bars of each column and ``%D`` for the first
    ``k + d - 2``.  A bar is valid only if high, low and close are all
    non-NaN; a window containing an invalid bar is NaN.
    """
    k = _positive_int(k, "k")
    d = _positive_int(d, "d")
    inputs = ((high, "high"), (low, "low"), (close, "close"))
    return _evaluate(
        "stochastic", (k, d), inputs, lambda h, lo, c, *out: _stochastic_2d(h, lo, c, k, d, *out), 2
    )


def crossed_above(a: Data, b: Data | float) -> Data:
    """Bool: ``a`` crossed above ``b`` on this bar.

    ``a[t] > b[t] and a[t-1] <= b[t-1]``; the first bar is False, and any
    comparison with NaN is False.  ``b`` is a scalar or an array-like of the
    same shape as ``a`` (compared by position).  One fused pass computes both
    crossings; the other is kept for a matching :func:`crossed_below` call
    (see :func:`_crossed`).
    """
    return _crossed("crossed_above", a, b, True)


def crossed_below(a: Data, b: Data | float) -> Data:
    """Bool: ``a`` crossed below ``b`` on this bar.

    ``a[t] < b[t] and a[t-1] >= b[t-1]``; the first bar is False, and any
    comparison with NaN is False.  ``b`` is a scalar or an array-like of the
    same shape as ``a`` (compared by position).  One fused pass computes both
    crossings; the other is kept for a matching :func:`crossed_above` call
    (see :func:`_crossed`).
    """
    return _crossed("crossed_below", a, b, False)


# ---------------------------------------------------------------------------
# Helpers for the public functions
# ---------------------------------------------------------------------------


def _ddof(ddof: int, n: int) -> int:
    """Validate delta degrees of freedom for a window of ``n`` bars."""
    if isinstance(ddof, bool) or not isinstance(ddof, numbers.Integral):
        raise TypeError(f"ddof must be an integer, got {ddof!r}")
    if not 0 <= ddof < n:
        raise ValueError(f"ddof must satisfy 0 <= ddof < n={n}, got {ddof}")
    return int(ddof)


_ARRAY_LIKE = (pd.DataFrame, pd.Series, np.ndarray)


def _crossed(name: str, a: Data, b: Data | float, above: bool) -> Data:
    """Shared body of :func:`crossed_above` / :func:`crossed_below`.

    One fused pass computes both crossings of the pair.  The one asked for is
    returned; for eligible inputs (see the module docstring) the other is
    parked in the cache's single slot for the matching call that usually
    follows (``crossed_below(f, s)`` after ``crossed_above(f, s)``), which
    then takes it without a pass over the inputs.
    """
    if not isinstance(b, _ARRAY_LIKE) and isinstance(b, numbers.Real):
        level = float(b)
        # NaN != NaN would defeat the key lookup; all NaN levels are equivalent.
        params: tuple[object, ...] = ("nan",) if np.isnan(level) else (level,)
        inputs: tuple[tuple[object, str], ...] = ((a, "a"),)
    else:
        level = None
        params = ()
        inputs = ((a, "a"), (b, "b"))
    operands, key = _inspect(name, params, inputs)
    raw = _CACHE.take_parked(key) if key is not None else None
    if raw is None:
        x = _as_float2d(operands[0].values)
        rhs = level if level is not None else _as_float2d(operands[1].values)
        up, down = _crossings_2d(x, rhs)
        raw, other = (up, down) if above else (down, up)
        if key is not None:
            other_name = "crossed_below" if above else "crossed_above"
            _CACHE.park((other_name, *key[1:]), operands, other)
    return _present(raw, operands[0])[0]
