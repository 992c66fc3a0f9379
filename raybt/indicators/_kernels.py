"""The numba kernels of the indicators over 2-D arrays (bars × symbols), and the crossings."""

from __future__ import annotations

import numba as nb
import numpy as np

from raybt._jit import jit, jit_on_first_call
from raybt.indicators._columns import _ARR2D, _JIT, _OUT2D, _OUT_ROWS, _ROWS, _sma_col, _smooth_col, _std_col, _wma_col


@jit_on_first_call((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _sma_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _sma_col(x[:, j], out[:, j], n)


@jit_on_first_call((_ROWS, nb.int64, _OUT_ROWS), **_JIT)
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


@jit_on_first_call((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _wma_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _wma_col(x[:, j], out[:, j], n)


@jit_on_first_call((_ARR2D, nb.int64, nb.int64, _OUT2D), **_JIT)
def _std_2d(x: np.ndarray, n: int, ddof: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _std_col(x[:, j], out[:, j], n, ddof)


@jit_on_first_call((_ARR2D, nb.int64, _OUT2D), **_JIT)
def _ema_2d(x: np.ndarray, n: int, out: np.ndarray) -> None:
    for j in range(x.shape[1]):
        _smooth_col(x[:, j], out[:, j], n, 2.0 / (n + 1.0))


@jit_on_first_call((_ARR2D, nb.int64, nb.int64, nb.float64, _OUT2D, _OUT2D, _OUT2D), **_JIT)
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


@jit_on_first_call((_ARR2D, nb.int64, nb.int64, nb.int64, _OUT2D, _OUT2D, _OUT2D), **_JIT)
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


@jit_on_first_call((_ARR2D, nb.int64, _OUT2D), **_JIT)
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


@jit_on_first_call((_ARR2D, _ARR2D, _ARR2D, nb.int64, _OUT2D), **_JIT)
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


@jit_on_first_call((_ARR2D, _ARR2D, _ARR2D, nb.int64, nb.int64, _OUT2D, _OUT2D), **_JIT)
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


@jit(**_JIT)
def _relations(x: np.ndarray, y: np.ndarray, rel: np.ndarray) -> None:
    """Write the relation code of ``x[t]`` to ``y[t]`` to ``rel[t]`` (1-D)."""
    for i in range(x.shape[0]):
        rel[i] = (_AT_OR_ABOVE if x[i] >= y[i] else _NEITHER) | (
            _AT_OR_BELOW if x[i] <= y[i] else _NEITHER
        )


@jit(**_JIT)
def _level_relations(x: np.ndarray, level: float, rel: np.ndarray) -> None:
    """:func:`_relations` of ``x`` to a constant level."""
    for i in range(x.shape[0]):
        rel[i] = (_AT_OR_ABOVE if x[i] >= level else _NEITHER) | (
            _AT_OR_BELOW if x[i] <= level else _NEITHER
        )


@jit(**_JIT)
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


@jit_on_first_call((_ROWS, _ROWS), **_JIT)
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


@jit_on_first_call((_ROWS, nb.float64), **_JIT)
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


_BOOL_ROWS = nb.types.Array(nb.bool_, 2, "C")  # an output as (columns, bars)
_POSITIONS = nb.types.Array(nb.int64, 1, "C", readonly=True)


@jit_on_first_call((_ROWS, _POSITIONS, _POSITIONS, _POSITIONS, _BOOL_ROWS, _BOOL_ROWS), **_JIT)
def _pair_crossings_rows(
    rows: np.ndarray, left: np.ndarray, right: np.ndarray, order: np.ndarray, up: np.ndarray, down: np.ndarray
) -> None:
    """:func:`_crossings_rows` of the pairs of rows ``(rows[left[p]], rows[right[p]])`` into ``up[p]`` and
    ``down[p]``: the same relation codes and crossing passes, one pair at a time, so the rules are those of
    ``crossed_above`` / ``crossed_below`` by construction. Pairs are visited in the sequence ``order`` (see
    :func:`_pair_order`); positions are checked by the caller."""
    rel = np.empty(rows.shape[1], dtype=np.uint8)
    for p in order:
        _relations(rows[left[p]], rows[right[p]], rel)
        _crossings_of(rel, up[p], down[p])


_RIGHT_BLOCK = 8
"""Right rows per block of :func:`_pair_order`: 8 rows of a year of hourly bars (560 KB) stay in a core's L2 cache."""


def _pair_order(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """The sequence in which :func:`_pair_crossings_rows` visits the pairs: by blocks of :data:`_RIGHT_BLOCK` right
    rows, then by left row, so that each left row is read once per block while the block's right rows stay in the
    CPU caches (instead of one row read from memory per pair). Results do not depend on the order."""
    return np.lexsort((right, left, right // _RIGHT_BLOCK))


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
