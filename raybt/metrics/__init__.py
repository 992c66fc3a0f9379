"""Performance metrics of a backtest, cheap enough to compute after every simulation.

:func:`compute_metrics` turns one simulated equity curve and its trade records into a flat ``dict`` of floats (the
metric columns of the results, names in :data:`METRIC_NAMES`). Everything that depends only on the date range (bar
times, month and year boundaries, periods per year, buy-and-hold) is computed once per range by
:meth:`RangeCalendar.build` and shared by every strategy run on that range. The per-backtest work is essentially one
pass of numba-compiled loops over the equity curve (:func:`_scan_block`, a block at a time); no pandas objects are
created. In backtests and sweeps the simulation kernel feeds that scan as it values the equity (:class:`CurveScan`),
so the curve need not be stored and read back. The public per-metric functions (:func:`sharpe_ratio`,
:func:`max_drawdown`, ...) accept a numpy array or a pandas Series of equity and run the same compiled code.

Conventions
-----------
- *Returns* are fractions (0.05 = +5 %), durations are in days (86,400 s), counts are floats holding whole numbers
  (every value of the dict is a float, so result columns have one dtype).
- *Per-bar returns*: ``r[i] = equity[i] / equity[i-1] - 1`` with ``equity[-1] = initial_amount``, so ``n_bars``
  returns. The public functions called without ``initial_amount`` use the first equity value as the initial amount
  (``n_bars - 1`` returns).
- *Years* = number of per-bar returns / ``periods_per_year`` (``ppy`` below). ``ppy`` is NaN when it cannot be
  inferred (fewer than 2 bars), which makes the annualised metrics NaN.
- *Times*: ``equity[i]`` is dated at ``times[i]``; the initial amount is dated at ``times[0]``.
- *rf* is an annual risk-free rate, applied per bar as ``rf_bar = (1 + rf) ** (1 / periods_per_year) - 1``.
- A degenerate case gives the value listed below, never an exception or a numpy warning. If the equity reaches 0
  (or becomes negative), later returns are undefined (inf/NaN) and so are the return-based metrics.

Metrics
-------
======================  ===============================================================  =========================
name                    definition (units)                                               degenerate value
======================  ===============================================================  =========================
final_value             equity at the last bar (quote currency)                          NaN if no bars
total_return            final_value / initial_amount - 1                                 NaN if no bars
cagr                    (final / initial) ** (1 / years) - 1                             NaN if no bars, ppy NaN
                                                                                         or final < 0; -1.0 if
                                                                                         final == 0
volatility              std(r, ddof=1) * sqrt(ppy)                                       NaN if < 2 returns;
                                                                                         0.0 for a flat curve
sharpe                  mean(r - rf_bar) / std(r, ddof=1) * sqrt(ppy)                    NaN if < 2 returns or
                                                                                         std == 0
sortino                 mean(r - rf_bar) / dd * sqrt(ppy),                               NaN if < 2 returns or
                        dd = sqrt(mean(min(r - rf_bar, 0) ** 2)) over all bars           dd == 0 (no bar below rf)
calmar                  cagr / abs(max_drawdown)                                         NaN if max_drawdown == 0
max_drawdown            min(equity / running peak - 1), initial amount = first peak      0.0 if never below a
                        (negative fraction)                                              peak; NaN if no bars
max_drawdown_duration   longest time from a peak until equity is back at or above it,    0.0 if never below a
                        or until the last bar if it never is (days)                      peak; NaN if no bars
var_95                  5th percentile of r, linear interpolation as np.percentile       NaN if no returns or
                        (a loss is negative)                                             any return is NaN
cvar_95                 mean of the returns <= var_95                                    as var_95
best_month              max monthly return: equity at a month's last bar / equity at     NaN if no bars
                        the previous month's last bar - 1 (first month against the
                        initial amount; partial months at the edges count; UTC)
worst_month             min monthly return                                               NaN if no bars
pct_winning_months      fraction (0-1) of months with a return > 0                       NaN if no bars
best_year, worst_year   as best/worst_month with calendar years                          NaN if no bars
exposure                bars_in_market / n_bars (fraction)                               NaN if no bars
n_trades                number of trade records, open ones included                      0.0
n_winning_trades        trades with PNL > 0                                              0.0
n_losing_trades         trades with PNL < 0 (PNL == 0 is neither)                        0.0
win_rate                n_winning_trades / n_trades                                      NaN if no trades
profit_factor           sum of positive PNL / abs(sum of negative PNL)                   inf if no losing trade
                                                                                         and some winning one;
                                                                                         NaN if neither
avg_trade_return        mean RETURN of all trades                                        NaN if no trades
best_trade, worst_trade max / min RETURN                                                 NaN if no trades
avg_win, avg_loss       mean RETURN of winning / losing trades                           NaN if none
win_loss_ratio          avg_win / abs(avg_loss)                                          NaN if no winning or no
                                                                                         losing trade
max_consecutive_wins    longest run of winning trades in row order (a PNL == 0 trade     0.0 if no trades
                        ends both kinds of run)
max_consecutive_losses  longest run of losing trades in row order                        0.0 if no trades
avg_trade_duration      mean of times[EXIT_BAR] - times[ENTRY_BAR] (days)                NaN if no trades
trades_per_year         n_trades / years                                                 NaN if no bars or ppy NaN
total_fees              sum of FEES (quote currency)                                     0.0 if no trades
buy_and_hold_return     from the RangeCalendar: equal-weight mean over symbols of        NaN if no symbol has a
                        last valid close / first valid close - 1, no fees                price
n_unfunded_entries      entries the simulation skipped because the cash left could not   0.0 (also for curves
                        fund them (all of it held by other positions, or less than the   not from raybt's
                        fixed fee): see :mod:`raybt.engine`; given, not computed         simulation)
======================  ===============================================================  =========================

Modules
-------
``_base`` (names, units, compiled-code conventions), ``scan`` (the block-wise scan of a curve), ``tail`` (the
quantile and the mean below it, by selection), ``values`` (metric values from a finished scan), ``calendar`` (what a
date range contributes), ``compute`` (:func:`compute_metrics`, :class:`CurveScan`), ``functions`` (the public
per-metric functions), ``_inputs`` (input checks and work space).
"""

from __future__ import annotations


# Private names that raybt.engine, raybt.batch_eval and the tests import from here:
from raybt.metrics._base import (
    _BLOCK_BARS,
    _CURVE_BLOCK_BARS,
    COUNT,
    METRIC_NAMES,
    STAT,
    EquityLike,
    ScanArrays,
    TimesLike,
)
from raybt.metrics.calendar import RangeCalendar, infer_periods_per_year
from raybt.metrics.compute import CurveScan, compute_metrics, metric_values
from raybt.metrics.functions import (
    bar_returns,
    cagr,
    calmar_ratio,
    conditional_value_at_risk,
    max_drawdown,
    max_drawdown_duration,
    monthly_returns,
    sharpe_ratio,
    sortino_ratio,
    total_return,
    value_at_risk,
    volatility,
    yearly_returns,
)
from raybt.metrics.compute import _LIMIT_FACTOR, _scan_row
from raybt.metrics.scan import _scan_block, _scan_start
from raybt.metrics.values import _rf_per_bar
from raybt.metrics.tail import _collect_below, _select_pair, _split

__all__ = [
    "METRIC_NAMES",
    "CurveScan",
    "RangeCalendar",
    "bar_returns",
    "cagr",
    "calmar_ratio",
    "compute_metrics",
    "conditional_value_at_risk",
    "infer_periods_per_year",
    "max_drawdown",
    "max_drawdown_duration",
    "metric_values",
    "monthly_returns",
    "sharpe_ratio",
    "sortino_ratio",
    "total_return",
    "value_at_risk",
    "volatility",
    "yearly_returns",
]
