"""What the metrics need to know about a date range, computed once per range."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from raybt.metrics._base import TimesLike, _NS_PER_YEAR
from raybt.metrics._inputs import _as_times_ns, _check_periods, _readonly


def infer_periods_per_year(times_ns: TimesLike) -> float:
    """Bars per 365-day year from the median spacing of ``times_ns``: 1h -> 8760.0, 1d -> 365.0, 5min -> 105120.0.

    ``times_ns`` is int64 UTC nanoseconds (or anything :class:`pandas.DatetimeIndex` accepts). With fewer than 2
    bars there is no spacing and the result is NaN (annualised metrics then come out NaN; pass
    ``periods_per_year`` explicitly to avoid that). Raises ValueError if the median spacing is not positive.
    """
    times = _as_times_ns(times_ns)
    if times.size < 2:
        return math.nan
    spacing = float(np.median(np.diff(times)))
    if not spacing > 0:
        raise ValueError("bar times must be increasing to infer periods_per_year")
    return _NS_PER_YEAR / spacing


@dataclass(frozen=True, eq=False)
class RangeCalendar:
    """What the metrics need to know about a date range, computed once and shared by all its backtests.

    Build it with :meth:`build`. Arrays are read-only (numba compiles one signature for them). Instances compare
    by identity (arrays have no single truth value).
    """

    times_ns: np.ndarray
    """int64 UTC nanoseconds of each bar of the range."""
    periods_per_year: float
    """Bars per year used to annualise (NaN if it could not be inferred)."""
    month_last_bar: np.ndarray
    """int64 positions of the last bar of each calendar month (UTC) present in the range."""
    year_last_bar: np.ndarray
    """int64 positions of the last bar of each calendar year (UTC) present in the range."""
    buy_and_hold_return: float
    """Equal-weight mean over symbols of last valid close / first valid close - 1 (no fees); NaN if no prices."""

    @classmethod
    def build(cls, times_ns: TimesLike, close: np.ndarray, periods_per_year: float | None = None) -> RangeCalendar:
        """Calendar of a range with bar times ``times_ns`` and closes ``close``.

        ``times_ns``: int64 UTC nanoseconds, or anything :class:`pandas.DatetimeIndex` accepts (pandas 3 indexes
        may hold microseconds: pass the index itself or ``index.as_unit("ns").asi8``, not ``index.asi8``).
        ``close``: float64 ``(n_bars, n_symbols)`` (or ``(n_bars,)``) closes, NaN where a symbol has no bar;
        symbols without any close are left out of the buy-and-hold mean.
        ``periods_per_year``: inferred by :func:`infer_periods_per_year` when None.
        """
        times = np.array(_as_times_ns(times_ns), dtype=np.int64)  # a private copy, frozen below
        if times.ndim != 1:
            raise ValueError(f"times_ns must be one-dimensional, got shape {times.shape}")
        if np.any(np.diff(times) <= 0):
            raise ValueError("bar times must be strictly increasing")
        times.flags.writeable = False
        prices = np.asarray(close, dtype=np.float64)
        if prices.ndim == 1:
            prices = prices[:, None]
        if prices.ndim != 2 or prices.shape[0] != times.size:
            raise ValueError(f"close must have one row per bar ({times.size}), got shape {prices.shape}")
        if periods_per_year is None:
            periods_per_year = infer_periods_per_year(times)
        else:
            _check_periods(periods_per_year)
        return cls(
            times_ns=times,
            periods_per_year=float(periods_per_year),
            month_last_bar=_readonly(_period_last_bars(times, "M")),
            year_last_bar=_readonly(_period_last_bars(times, "Y")),
            buy_and_hold_return=_buy_and_hold_return(prices),
        )


def _period_last_bars(times_ns: np.ndarray, unit: str) -> np.ndarray:
    """Positions of the last bar of each calendar period (numpy datetime unit "M" or "Y") in sorted UTC times."""
    if times_ns.size == 0:
        return np.empty(0, dtype=np.int64)
    first, last = times_ns[[0, -1]].view("datetime64[ns]").astype(f"datetime64[{unit}]")
    next_starts = np.arange(first + 1, last + 1).astype("datetime64[ns]").view(np.int64)
    ends = np.searchsorted(times_ns, next_starts, side="left") - 1
    # A period without bars repeats the previous period's last bar: unique() drops it.
    return np.unique(np.append(ends, times_ns.size - 1)).astype(np.int64)


def _buy_and_hold_return(close: np.ndarray) -> float:
    """Equal-weight mean over symbols with prices of last valid close / first valid close - 1."""
    by_symbol = np.ascontiguousarray(close.T)
    valid = ~np.isnan(by_symbol)
    has_price = valid.any(axis=1)
    if not has_price.any():
        return math.nan
    rows = np.flatnonzero(has_price)
    first = valid[rows].argmax(axis=1)
    last = by_symbol.shape[1] - 1 - valid[rows, ::-1].argmax(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero first close gives inf/NaN, not a warning
        return float(np.mean(by_symbol[rows, last] / by_symbol[rows, first] - 1.0))
