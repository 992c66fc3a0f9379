"""Metric values from a finished scan and the trade records, in METRIC_NAMES order."""

from __future__ import annotations

import math

import numpy as np

from raybt import _records as rec
from raybt.metrics._base import (
    COUNT,
    STAT,
    _CURVE_WORK_SIZE,
    _LANES,
    _NS_PER_DAY,
    _SAMPLED_SELECT_MIN,
    _VAR_QUANTILE,
    _jit,
)
from raybt.metrics.scan import _fill_returns, _scan_curve
from raybt.metrics.tail import _curve_sample_limit, _lower_tail, _scan_tail


@_jit
def _fill_period_returns(equity, initial, last_bars, out):
    """``out[j]`` = return of the period ending at bar ``last_bars[j]``, the first one against ``initial``."""
    previous = initial
    for j in range(last_bars.size):
        value = equity[last_bars[j]]
        out[j] = value / previous - 1.0
        previous = value


@_jit
def _period_stats(period_values, initial):
    """``(best, worst, fraction > 0)`` of the period returns: ``period_values`` is the equity at each period's last
    bar, the first period measured against ``initial`` (best and worst NaN if one is, as numpy's max and min); NaNs
    without periods."""
    m = period_values.size
    if m == 0:
        return np.nan, np.nan, np.nan
    previous = initial
    best = -np.inf
    worst = np.inf
    winning = 0
    any_nan = False
    for j in range(m):
        value = period_values[j]
        ret = value / previous - 1.0
        previous = value
        best = ret if ret > best else best
        worst = ret if ret < worst else worst
        winning += np.int64(ret > 0.0)
        any_nan |= math.isnan(ret)
    if any_nan:
        return np.nan, np.nan, winning / m
    return best, worst, winning / m


@_jit
def _growth(final, initial):
    return final / initial - 1.0


@_jit
def _cagr(final, initial, years):
    if not years > 0.0:
        return np.nan
    return (final / initial) ** (1.0 / years) - 1.0


@_jit
def _annualised_ratio(mean_excess, risk, periods_per_year):
    """Sharpe/Sortino: mean excess return per bar over a per-bar risk, annualised; NaN unless risk > 0."""
    if not risk > 0.0:
        return np.nan
    return mean_excess / risk * math.sqrt(periods_per_year)


@_jit
def _calmar(cagr_value, worst_drawdown):
    if worst_drawdown == 0.0:
        return np.nan
    return cagr_value / abs(worst_drawdown)


@_jit
def _rf_per_bar(risk_free_rate, periods_per_year):
    if risk_free_rate == 0.0:
        return 0.0
    return (1.0 + risk_free_rate) ** (1.0 / periods_per_year) - 1.0


@_jit
def _mean_or_nan(total, count):
    return total / count if count > 0 else np.nan


@_jit
def _trade_stats(trades, times, years):
    """Trade metrics in METRIC_NAMES order from n_trades to total_fees (see the module table).

    ``times`` are the bar times of the equity curve the ENTRY_BAR/EXIT_BAR positions point into.
    """
    n = trades.shape[0]
    n_bars = times.size
    n_win = n_loss = 0
    gross_profit = gross_loss = 0.0
    sum_return = sum_win = sum_loss = 0.0
    best = worst = np.nan
    run_win = run_loss = max_run_win = max_run_loss = 0
    duration_ns = 0.0
    fees = 0.0
    for i in range(n):
        pnl = trades[i, rec.PNL]
        ret = trades[i, rec.RETURN]
        sum_return += ret
        best = ret if i == 0 else max(best, ret)
        worst = ret if i == 0 else min(worst, ret)
        if pnl > 0.0:
            n_win += 1
            gross_profit += pnl
            sum_win += ret
            run_win += 1
            run_loss = 0
        elif pnl < 0.0:
            n_loss += 1
            gross_loss -= pnl
            sum_loss += ret
            run_loss += 1
            run_win = 0
        else:
            run_win = run_loss = 0
        max_run_win = max(max_run_win, run_win)
        max_run_loss = max(max_run_loss, run_loss)
        entry = int(trades[i, rec.ENTRY_BAR])
        exit_ = int(trades[i, rec.EXIT_BAR])
        if not (0 <= entry < n_bars and 0 <= exit_ < n_bars):
            raise ValueError("trade ENTRY_BAR/EXIT_BAR outside the equity curve")
        duration_ns += times[exit_] - times[entry]
        fees += trades[i, rec.FEES]
    if gross_loss > 0.0:
        profit_factor = gross_profit / gross_loss
    elif gross_profit > 0.0:
        profit_factor = np.inf
    else:
        profit_factor = np.nan
    avg_win = _mean_or_nan(sum_win, n_win)
    avg_loss = _mean_or_nan(sum_loss, n_loss)
    return (
        float(n),
        float(n_win),
        float(n_loss),
        _mean_or_nan(float(n_win), n),
        profit_factor,
        _mean_or_nan(sum_return, n),
        best,
        worst,
        avg_win,
        avg_loss,
        avg_win / abs(avg_loss),
        float(max_run_win),
        float(max_run_loss),
        _mean_or_nan(duration_ns, n) / _NS_PER_DAY,
        n / years if years > 0.0 else np.nan,
        fees,
    )


@_jit
def _curve_values(summary, var, cvar, final, initial, n_bars, bars_in_market, month_values, year_values,
                  periods_per_year, rf_bar):
    """Equity-curve metrics in METRIC_NAMES order from final_value to exposure (see the module table), from a
    finished scan: :func:`_scan_summary`'s ``summary``, the tail's ``var`` and ``cvar``, the equity at period ends."""
    mean, std, downside, worst_drawdown, drawdown_ns = summary
    cagr_value = _cagr(final, initial, n_bars / periods_per_year)
    best_month, worst_month, winning_months = _period_stats(month_values, initial)
    best_year, worst_year, _ = _period_stats(year_values, initial)
    return (
        final,
        _growth(final, initial),
        cagr_value,
        std * math.sqrt(periods_per_year),
        _annualised_ratio(mean - rf_bar, std, periods_per_year),
        _annualised_ratio(mean - rf_bar, downside, periods_per_year),
        _calmar(cagr_value, worst_drawdown),
        worst_drawdown,
        drawdown_ns / _NS_PER_DAY,
        var,
        cvar,
        best_month,
        worst_month,
        winning_months,
        best_year,
        worst_year,
        _mean_or_nan(float(bars_in_market), n_bars),
    )


@_jit
def _equity_stats(
    equity, bars_in_market, initial, times, month_last, year_last, periods_per_year, risk_free_rate, scratch
):
    """Equity-curve metrics in METRIC_NAMES order from final_value to exposure (see the module table).

    ``scratch``: work space of :func:`_scratch_size` values starting on a cache line: the scan's work space, the
    tail of the returns and, if the tail was not enough, all returns (each part starting on a cache line: vector
    loads then do not straddle two).
    """
    n = equity.size
    rf_bar = _rf_per_bar(risk_free_rate, periods_per_year)
    room = (n + 2 * _LANES - 1) // _LANES * _LANES
    tail = scratch[_CURVE_WORK_SIZE : _CURVE_WORK_SIZE + room]
    limit = _curve_sample_limit(equity, initial, _VAR_QUANTILE) if n >= _SAMPLED_SELECT_MIN else np.inf
    stats = np.empty(len(STAT))
    counts = np.empty(len(COUNT), dtype=np.int64)
    month_values = np.empty(month_last.size)
    year_values = np.empty(year_last.size)
    summary = _scan_curve(equity, initial, times, times[0] if n > 0 else 0, rf_bar, limit, scratch[:_CURVE_WORK_SIZE],
                          stats, counts, tail, month_last, month_values, year_last, year_values)
    var = cvar = np.nan
    if not math.isnan(summary[0]):
        found, var, cvar = _scan_tail(stats, counts, tail, _VAR_QUANTILE)
        if not found:  # the sample misled (or returns are infinite): the quantile from all returns
            returns = scratch[_CURVE_WORK_SIZE + room : _CURVE_WORK_SIZE + room + n]
            _fill_returns(equity, initial, returns)
            var, cvar = _lower_tail(returns, _VAR_QUANTILE, tail)
    final = equity[n - 1] if n > 0 else np.nan
    return _curve_values(summary, var, cvar, final, initial, n, bars_in_market, month_values, year_values,
                         periods_per_year, rf_bar)


@_jit
def _metrics_row(
    equity,
    trades,
    bars_in_market,
    initial,
    times,
    month_last,
    year_last,
    periods_per_year,
    risk_free_rate,
    buy_and_hold_return,
    scratch,
):
    """The values of METRIC_NAMES, in order, as one tuple (see :func:`_equity_stats` for ``scratch``)."""
    equity_part = _equity_stats(
        equity, bars_in_market, initial, times, month_last, year_last, periods_per_year, risk_free_rate, scratch
    )
    return equity_part + _trade_stats(trades, times, equity.size / periods_per_year) + (buy_and_hold_return,)


# ---------------------------------------------------------------------------------------------------------------------
# Per-range calendar
