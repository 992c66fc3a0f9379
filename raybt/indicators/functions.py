"""The public indicators."""

from __future__ import annotations

import numbers
from typing import TypeVar

import numpy as np
import pandas as pd

from raybt.indicators._evaluate import _evaluate, _inspect, _present
from raybt.indicators._kernels import (
    _atr_2d,
    _bollinger_2d,
    _crossings_2d,
    _ema_2d,
    _macd_2d,
    _pair_crossings_rows,
    _pair_order,
    _rsi_2d,
    _sma_kernel,
    _std_2d,
    _stochastic_2d,
    _wma_2d,
)
from raybt.indicators.cache import _CACHE, _as_float2d, _positive_int

Data = TypeVar("Data", pd.DataFrame, pd.Series, np.ndarray)


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


def pair_crossings(
    values: np.ndarray | pd.DataFrame, left: np.ndarray, right: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Crossings of many pairs of columns at once: ``(above, below)``.

    ``values`` is 2-D, bars × columns (a float array or DataFrame, e.g. one
    moving average per distinct window); ``left`` and ``right`` are 1-D
    integer arrays of column positions of equal length, one pair per
    element.  For each pair ``p``, ``above[:, p]`` is
    ``crossed_above(values[:, left[p]], values[:, right[p]])`` and
    ``below[:, p]`` is ``crossed_below`` of the same columns, with exactly
    their rules: above now and at or below on the bar before (below: below
    now, at or above before), the first bar False, any comparison with NaN
    False.  A crossover strategy swept over many parameter sets (SMA, EMA,
    MACD and signal lines...) computes each distinct line once and all its
    sets' signals in one compiled pass (see :meth:`raybt.demo.SmaCross.signals_many`).

    Returns two new boolean numpy arrays, bars × pairs, in Fortran order:
    each pair's column is contiguous (``above.T`` is a C-contiguous
    ``(pairs, bars)`` array).  Pass ``values`` with contiguous columns
    (Fortran order, e.g. ``np.stack(columns).T``) to avoid a copy.  Not
    cached.

    >>> import numpy as np
    >>> from raybt import indicators
    >>> values = np.array([[1.0, 2.0, np.nan], [3.0, 2.0, 2.0], [1.0, 2.0, 2.0]])
    >>> above, below = indicators.pair_crossings(values, [0, 0], [1, 2])
    >>> above.T.tolist()  # 0 crosses above 1 at bar 1; above 2 too, but 2 is NaN on bar 0
    [[False, True, False], [False, False, False]]
    >>> below.T.tolist()
    [[False, False, True], [False, False, True]]
    """
    matrix = np.asarray(values.to_numpy() if isinstance(values, pd.DataFrame) else values, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"values must be 2-D (bars × columns), got {matrix.ndim}-D")
    left_positions = _column_positions(left, "left", matrix.shape[1])
    right_positions = _column_positions(right, "right", matrix.shape[1])
    if left_positions.shape != right_positions.shape:
        raise ValueError(
            f"left and right must have the same length (one pair per element), got {left_positions.size} "
            f"and {right_positions.size}"
        )
    up = np.empty((left_positions.size, matrix.shape[0]), dtype=np.bool_)
    down = np.empty_like(up)
    order = _pair_order(left_positions, right_positions)
    _pair_crossings_rows(np.ascontiguousarray(matrix.T), left_positions, right_positions, order, up, down)
    return up.T, down.T


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


def _column_positions(positions: np.ndarray, role: str, n_columns: int) -> np.ndarray:
    """``positions`` as a 1-D int64 array, checked to name columns ``0 .. n_columns - 1`` (negative positions are
    refused: counting from the end is more likely a mistake here than meant)."""
    array = np.asarray(positions)
    if array.ndim != 1 or not (array.dtype.kind in "iu" or array.size == 0):
        raise TypeError(f"{role} must be a 1-D array of integer column positions, got {array.dtype} of shape "
                        f"{array.shape}")
    array = np.ascontiguousarray(array, dtype=np.int64)
    outside = (array < 0) | (array >= n_columns)
    if outside.any():
        raise IndexError(f"{role} holds column position {array[outside][0]}, outside 0..{n_columns - 1} "
                         f"({n_columns} columns in values)")
    return array


_ARRAY_LIKE = (pd.DataFrame, pd.Series, np.ndarray)


def _crossed(name: str, a: Data, b: Data | float, above: bool) -> Data:
    """Shared body of :func:`crossed_above` / :func:`crossed_below`.

    One fused pass computes both crossings of the pair.  The one asked for is
    returned; for eligible inputs (see the module docstring) the other is
    parked in the cache's single slot for the matching call that usually
    follows (``crossed_below(f, s)`` after ``crossed_above(f, s)``), which
    then takes it without a pass over the inputs (and, when they are the
    very same numpy arrays, without inspecting them again).
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
    taken = _CACHE.take_parked_over(name, params, tuple([x for x, _ in inputs]))
    if taken is not None:  # the second crossing of the pair, over the same untouched arrays
        return _present(taken[0], taken[1][0])[0]
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
