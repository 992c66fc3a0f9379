"""The numba kernels of the indicators, one column (one symbol's series) at a time."""

from __future__ import annotations

import numba as nb
import numpy as np

from raybt._accel.llvm import divide_in_place
from raybt._jit import jit


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
_JIT = {"nogil": True}  # options of every kernel (raybt._jit.jit caches them on disk)
# Running window sums are recomputed exactly from the window at least every
# max(n, _REFRESH_BARS) bars, bounding rounding drift at negligible cost.
_REFRESH_BARS = 1024


@jit(**_JIT)
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


@jit(**_JIT)
def _window_sum(src: np.ndarray, stop: int, n: int) -> float:
    total = 0.0
    for w in range(stop - n, stop):
        total += src[w]
    return total


@jit(**_JIT)
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


@jit(**_JIT)
def _window_sums(src: np.ndarray, out: np.ndarray, n: int, first: int, stop: int, every: int) -> None:
    """``out[t]`` = the sum of ``src[t-n+1 : t+1]`` for ``first <= t < stop``
    (windows free of NaN), in chunks of ``every`` bars: exact from the window
    at each chunk's first bar, a running update ``+ (src[t] - src[t-n])``
    after.  A running sum is a chain of dependent additions (each
    waits for the previous); four chunks at a time are four independent chains.  Unsigned
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


@jit(**_JIT)
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
        divide_in_place(out, i - 1, stop, n)
        i = _next_full_window(src, out, stop, n) if stop < m else -1


@jit(**_JIT)
def _window_moments(src: np.ndarray, stop: int, n: int) -> tuple[float, float]:
    """Mean and sum of squared deviations of ``src[stop-n:stop]`` (two-pass)."""
    mean = _window_sum(src, stop, n) / n
    m2 = 0.0
    for w in range(stop - n, stop):
        m2 += (src[w] - mean) ** 2
    return mean, m2


@jit(**_JIT)
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


@jit(**_JIT)
def _window_weighted_sums(src: np.ndarray, stop: int, n: int) -> tuple[float, float]:
    """Plain sum and weighted sum (weights 1..n, oldest first) of a window."""
    plain = 0.0
    weighted = 0.0
    for w in range(n):
        v = src[stop - n + w]
        plain += v
        weighted += (w + 1) * v
    return plain, weighted


@jit(**_JIT)
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


@jit(**_JIT)
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
