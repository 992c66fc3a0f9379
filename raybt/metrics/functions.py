"""Public per-metric functions for any equity curve (numpy array or pandas Series)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from raybt.metrics._base import COUNT, STAT, EquityLike, TimesLike, _CURVE_WORK_SIZE, _LANES, _NS_PER_DAY, _VAR_QUANTILE
from raybt.metrics._inputs import (
    _as_float_array,
    _as_times_ns,
    _check_initial,
    _check_periods,
    _check_risk_free,
    _readonly,
)
from raybt.metrics.calendar import _period_last_bars
from raybt.metrics.scan import _fill_returns, _scan_curve
from raybt.metrics.tail import _tail_risk
from raybt.metrics.values import _annualised_ratio, _cagr, _calmar, _fill_period_returns, _growth, _rf_per_bar


def bar_returns(equity: EquityLike, initial_amount: float | None = None) -> np.ndarray:
    """Per-bar returns: ``equity[i] / equity[i-1] - 1``, the first against ``initial_amount``.

    Without ``initial_amount`` the first equity value is the initial amount, giving one return fewer than bars.
    """
    curve, initial = _curve(equity, initial_amount)
    return _scan(curve, initial)[0]


def total_return(equity: EquityLike, initial_amount: float | None = None) -> float:
    """Last equity / initial amount - 1 (fraction); NaN for an empty curve."""
    curve, initial = _curve(equity, initial_amount)
    return _growth(float(curve[-1]), initial) if curve.size else math.nan


def cagr(equity: EquityLike, periods_per_year: float, initial_amount: float | None = None) -> float:
    """Compound annual growth rate ``(final / initial) ** (1 / years) - 1``, years = returns / periods_per_year.

    NaN for an empty curve or a negative final value; -1.0 if the final value is 0.
    """
    _check_periods(periods_per_year)
    curve, initial = _curve(equity, initial_amount)
    final = curve[-1] if curve.size else math.nan
    return _cagr(float(final), initial, curve.size / periods_per_year)


def volatility(equity: EquityLike, periods_per_year: float, initial_amount: float | None = None) -> float:
    """Annualised volatility ``std(r, ddof=1) * sqrt(periods_per_year)``; NaN below 2 returns, 0.0 if flat."""
    _, std, _ = _stats(equity, initial_amount, 0.0, periods_per_year)
    return std * math.sqrt(periods_per_year)


def sharpe_ratio(
    equity: EquityLike, periods_per_year: float, risk_free_rate: float = 0.0, initial_amount: float | None = None
) -> float:
    """Annualised Sharpe ratio ``mean(r - rf_bar) / std(r, ddof=1) * sqrt(periods_per_year)``.

    ``risk_free_rate`` is annual; ``rf_bar = (1 + rf) ** (1 / periods_per_year) - 1``. NaN below 2 returns or when
    the returns do not vary (std == 0).
    """
    mean, std, _ = _stats(equity, initial_amount, risk_free_rate, periods_per_year)
    return _annualised_ratio(mean, std, periods_per_year)


def sortino_ratio(
    equity: EquityLike, periods_per_year: float, risk_free_rate: float = 0.0, initial_amount: float | None = None
) -> float:
    """Annualised Sortino ratio ``mean(r - rf_bar) / dd * sqrt(periods_per_year)``.

    ``dd = sqrt(mean(min(r - rf_bar, 0) ** 2))`` over all bars. NaN below 2 returns or when no return is below
    ``rf_bar`` (dd == 0).
    """
    mean, _, downside = _stats(equity, initial_amount, risk_free_rate, periods_per_year)
    return _annualised_ratio(mean, downside, periods_per_year)


def max_drawdown(equity: EquityLike, initial_amount: float | None = None) -> float:
    """Deepest fall from a running peak, ``min(equity / peak - 1)`` (negative fraction; 0.0 if none).

    The initial amount (default: the first value) is the first peak. NaN for an empty curve.
    """
    curve, initial = _curve(equity, initial_amount)
    return _scan(curve, initial)[1][3]


def max_drawdown_duration(
    equity: EquityLike, times: TimesLike | None = None, initial_amount: float | None = None
) -> float:
    """Longest time (days) from a peak until equity is back at or above it, or until the last bar if never.

    ``times``: bar times (int64 UTC ns or datetime-like); default: the index of a pandas Series ``equity``.
    The initial amount is dated at the first time. 0.0 without drawdown, NaN for an empty curve.
    """
    curve, initial = _curve(equity, initial_amount)
    stamps, t0 = _curve_times(equity, times, initial_amount)
    return _scan(curve, initial, stamps=stamps, t0=t0)[1][4] / _NS_PER_DAY


def calmar_ratio(equity: EquityLike, periods_per_year: float, initial_amount: float | None = None) -> float:
    """``cagr / abs(max_drawdown)``; NaN when there is no drawdown."""
    return _calmar(cagr(equity, periods_per_year, initial_amount), max_drawdown(equity, initial_amount))


def value_at_risk(equity: EquityLike, quantile: float = _VAR_QUANTILE, initial_amount: float | None = None) -> float:
    """Historical VaR: the ``quantile`` quantile of per-bar returns (as ``np.percentile``, linear interpolation).

    A loss is negative. NaN without returns or if a return is NaN.
    """
    return _tail(equity, quantile, initial_amount)[0]


def conditional_value_at_risk(
    equity: EquityLike, quantile: float = _VAR_QUANTILE, initial_amount: float | None = None
) -> float:
    """Historical CVaR (expected shortfall): mean of the per-bar returns at or below :func:`value_at_risk`."""
    return _tail(equity, quantile, initial_amount)[1]


def monthly_returns(
    equity: EquityLike, times: TimesLike | None = None, initial_amount: float | None = None
) -> np.ndarray:
    """Return of each calendar month (UTC) present: equity at its last bar / at the previous month's last bar - 1.

    The first month is measured against the initial amount (default: the first value, which then belongs to no
    month). ``times`` defaults to the index of a pandas Series ``equity``.
    """
    return _period_returns(equity, times, initial_amount, "M")


def yearly_returns(
    equity: EquityLike, times: TimesLike | None = None, initial_amount: float | None = None
) -> np.ndarray:
    """Return of each calendar year (UTC) present; see :func:`monthly_returns`."""
    return _period_returns(equity, times, initial_amount, "Y")


def _curve(equity: EquityLike, initial_amount: float | None) -> tuple[np.ndarray, float]:
    """(equity after the initial amount, initial amount); the first value is the initial amount if None."""
    _check_initial(initial_amount)
    values = _as_float_array(equity)
    if initial_amount is not None:
        return values, float(initial_amount)
    if values.size == 0:
        return values, math.nan
    return values[1:], float(values[0])


def _curve_times(equity: EquityLike, times: TimesLike | None, initial_amount: float | None) -> tuple[np.ndarray, int]:
    """Times matching :func:`_curve`'s equity, and the time of the initial amount."""
    if times is None:
        if not isinstance(equity, pd.Series):
            raise ValueError("times are needed unless equity is a pandas Series with a DatetimeIndex")
        times = equity.index
    stamps = _as_times_ns(times)
    if stamps.size != np.shape(equity)[0]:
        raise ValueError(f"{stamps.size} times for {np.shape(equity)[0]} equity values")
    if stamps.size == 0:
        return _readonly(stamps), 0
    return _readonly(stamps if initial_amount is not None else stamps[1:]), int(stamps[0])


def _scan(
    curve: np.ndarray, initial: float, *, rf_bar: float = 0.0, stamps: np.ndarray | None = None, t0: int = 0
) -> tuple[np.ndarray, tuple[float, float, float, float, float]]:
    """``(returns, _scan_curve's first five statistics)`` of a user's curve; without ``stamps`` drawdown durations
    are 0."""
    if stamps is None:
        stamps = _readonly(np.zeros(curve.size, dtype=np.int64))
    returns = np.empty(curve.size)
    _fill_returns(curve, initial, returns)
    no_periods = np.empty(0, dtype=np.int64)
    summary = _scan_curve(curve, initial, stamps, t0, rf_bar, -np.inf, np.empty(_CURVE_WORK_SIZE), np.empty(len(STAT)),
                          np.empty(len(COUNT), dtype=np.int64), np.empty(_LANES), no_periods, np.empty(0), no_periods,
                          np.empty(0))
    return returns, summary


def _stats(
    equity: EquityLike, initial_amount: float | None, risk_free_rate: float, periods_per_year: float
) -> tuple[float, float, float]:
    """``(mean(r - rf_bar), std(r), downside deviation)`` of a user's equity curve."""
    _check_risk_free(risk_free_rate)
    _check_periods(periods_per_year)
    curve, initial = _curve(equity, initial_amount)
    rf_bar = _rf_per_bar(risk_free_rate, periods_per_year)
    mean, std, downside, _, _ = _scan(curve, initial, rf_bar=rf_bar)[1]
    return mean - rf_bar, std, downside


def _tail(equity: EquityLike, quantile: float, initial_amount: float | None) -> tuple[float, float]:
    if not 0.0 <= quantile <= 1.0:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    curve, initial = _curve(equity, initial_amount)
    returns, (mean, *_) = _scan(curve, initial)
    return _tail_risk(returns, mean, quantile, np.empty(curve.size + _LANES))


def _period_returns(equity: EquityLike, times: TimesLike | None, initial_amount: float | None, unit: str) -> np.ndarray:
    curve, initial = _curve(equity, initial_amount)
    stamps, _ = _curve_times(equity, times, initial_amount)
    last_bars = _readonly(_period_last_bars(stamps, unit))
    out = np.empty(last_bars.size)
    _fill_period_returns(curve, initial, last_bars, out)
    return out
