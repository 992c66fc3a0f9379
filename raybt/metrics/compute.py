"""The per-backtest entry points: compute_metrics on a stored curve, CurveScan inside the kernel."""

from __future__ import annotations

import math

import numpy as np

from raybt.metrics._base import (
    ScanArrays,
    COUNT,
    STAT,
    METRIC_NAMES,
    _BLOCK_BARS,
    _LANES,
    _VALUES_SIZE,
    _VAR_QUANTILE,
    _WORK_SIZE,
    _jit,
)
from raybt.metrics._inputs import (
    _as_float_array,
    _as_trades,
    _cache_aligned,
    _check_initial,
    _check_risk_free,
    _scratch,
    _scratch_size,
)
from raybt.metrics.calendar import RangeCalendar
from raybt.metrics.scan import _scan_start, _scan_summary
from raybt.metrics.tail import _scan_tail
from raybt.metrics.values import _curve_values, _metrics_row, _rf_per_bar, _trade_stats


def compute_metrics(
    equity: np.ndarray,
    trades: np.ndarray,
    bars_in_market: int,
    *,
    initial_amount: float,
    calendar: RangeCalendar,
    risk_free_rate: float = 0.0,
    unfunded_entries: int = 0,
) -> dict[str, float]:
    """All metrics of one backtest, keyed by :data:`METRIC_NAMES` (definitions in the module docstring).

    ``equity``: float64 ``(n_bars,)`` portfolio value at each bar's close over ``calendar``'s range.
    ``trades``: float64 ``(n_trades, rec.N_TRADE_FIELDS)`` trade records (open trades included).
    ``bars_in_market``: bars with any open position. ``initial_amount``: cash at the start (> 0).
    ``risk_free_rate``: annual rate (> -1) subtracted from the returns in sharpe and sortino.
    ``unfunded_entries``: the simulation's count of entries it could not fund (``n_unfunded_entries``).
    Inputs may be read-only; they are not modified. The cost is mostly one pass over the curve in blocks (see
    ``_scan_curve`` and ``_scan_block``): the returns, their moments, the drawdown, and the few percent of returns below
    a limit sampled beforehand, among which the 5 % quantile is then selected (see ``_tail_of_below``; all returns only
    when the sample misled). Work space is a per-thread scratch array (see ``_scratch``). Backtests and sweeps do not
    call this: the simulation kernel runs the same block scan as it values the equity (:class:`CurveScan`).
    """
    return dict(zip(METRIC_NAMES, metric_values(equity, trades, bars_in_market, initial_amount=initial_amount,
                                                calendar=calendar, risk_free_rate=risk_free_rate,
                                                unfunded_entries=unfunded_entries)))


def metric_values(
    equity: np.ndarray,
    trades: np.ndarray,
    bars_in_market: int,
    *,
    initial_amount: float,
    calendar: RangeCalendar,
    risk_free_rate: float = 0.0,
    unfunded_entries: int = 0,
) -> tuple[float, ...]:
    """:func:`compute_metrics`' values as a tuple in :data:`METRIC_NAMES` order, the form of a result row."""
    values = _as_float_array(equity)
    records = _as_trades(trades)
    if values.size != calendar.times_ns.size:
        raise ValueError(f"equity has {values.size} bars, the calendar {calendar.times_ns.size}")
    _check_initial(initial_amount)
    _check_risk_free(risk_free_rate)
    return _metrics_row(
        values,
        records,
        int(bars_in_market),
        float(initial_amount),
        calendar.times_ns,
        calendar.month_last_bar,
        calendar.year_last_bar,
        calendar.periods_per_year,
        float(risk_free_rate),
        calendar.buy_and_hold_return,
        _scratch(_scratch_size(values.size)),
    ) + (float(unfunded_entries),)


# ---------------------------------------------------------------------------------------------------------------------
# CurveScan: the metrics computed while the simulation kernel values the equity (a sweep's per-backtest path)
# ---------------------------------------------------------------------------------------------------------------------

# Tail limit of a backtest: the var_95 per unit of position size of the previous backtest on the same range, times
# _LIMIT_FACTOR, times this backtest's size. For returns of a bell-shaped distribution about twice as many returns
# as the quantile needs lie below it, so a backtest with a thinner tail (less time in the market) than the previous
# one still finds its quantile there; _LIMITS_KEPT ranges are remembered.
_LIMIT_FACTOR = 0.7
_VAR_95 = METRIC_NAMES.index("var_95")  # its position in a row
_LIMITS_KEPT = 64


@_jit
def _scan_row(stats, counts, tail, values, times, month_values, year_values, trades, bars_in_market, initial,
              periods_per_year, buy_and_hold_return):
    """``(found, values of METRIC_NAMES)`` of a finished kernel scan; found is False (and the row meaningless)
    when the tail quantile's order statistics were not below the scan's limit."""
    summary = _scan_summary(stats, counts, times)
    n = counts[COUNT.seen]
    found, var, cvar = True, np.nan, np.nan
    if not math.isnan(summary[0]):
        found, var, cvar = _scan_tail(stats, counts, tail, _VAR_QUANTILE)
    final = values[0] if n > 0 else np.nan
    equity_part = _curve_values(summary, var, cvar, final, initial, n, bars_in_market, month_values, year_values,
                                periods_per_year, stats[STAT.rf_bar])
    return found, equity_part + _trade_stats(trades, times, n / periods_per_year) + (buy_and_hold_return,)


class CurveScan:
    """The equity-curve metrics of a backtest, computed by the simulation kernel while it values the equity,
    without the curve being stored (what a sweep runs: see :func:`raybt.engine.simulate`'s ``scan``).

    The kernel hands the equity over in blocks of up to _BLOCK_BARS runs (:func:`_scan_block`: the same code that
    scans a stored curve for :func:`compute_metrics`), a stretch with nothing open as one run (its zero returns
    counted, not computed). Not writing the curve and reading it back keeps a backtest's working set in the CPU
    caches. The values equal :func:`compute_metrics`' on the same curve up to rounding of the sums (var/cvar
    exactly).

    Only the returns below a limit are kept for var/cvar (see _LIMIT_FACTOR; all returns for the first backtest of a
    range). If this backtest's quantile is not below it, :meth:`row` says so and the backtest must run again with
    ``begin(..., exact=True)``. Reuse one scan from backtest to backtest (one per thread): :meth:`begin`, then the
    simulation (which takes the scan's arrays once: :meth:`take`), then :meth:`row`.
    """

    def __init__(self) -> None:
        self._work = _cache_aligned(_WORK_SIZE)
        self.slots = np.zeros(_BLOCK_BARS, dtype=np.int64)
        """First bar of each run buffered in :attr:`values`."""
        self._stats = np.zeros(len(STAT))
        self._counts = np.zeros(len(COUNT), dtype=np.int64)
        self._tail = np.empty(0)
        self._months = np.empty(0)
        self._years = np.empty(0)
        self._unit_limits: dict[RangeCalendar, float] = {}  # range -> tail limit per unit of position size
        self._calendar: RangeCalendar | None = None
        self._initial = math.nan
        self._size = 1.0
        self._kernel_arrays: ScanArrays | None = None

    @property
    def values(self) -> np.ndarray:
        """Buffer of the equity handed over: ``values[0]`` the previous bar's, ``values[1:]`` room for a block of
        runs."""
        return self._work[:_VALUES_SIZE]

    def begin(self, calendar: RangeCalendar, initial_amount: float, risk_free_rate: float = 0.0, *,
              size: float = 1.0, exact: bool = False) -> None:
        """Start the scan of a backtest over ``calendar``'s range, for a strategy investing fraction ``size`` of its
        equity per position (its returns scale with it, and so does the tail limit); ``exact``: keep all returns
        for var/cvar."""
        _check_initial(initial_amount)
        _check_risk_free(risk_free_rate)
        if not size > 0:
            raise ValueError(f"size must be positive, got {size}")
        times = calendar.times_ns
        if self._tail.size < times.size + 2 * _LANES:
            self._tail = _cache_aligned(times.size + 2 * _LANES)
        if self._calendar is not calendar:
            self._months = np.empty(calendar.month_last_bar.size)
            self._years = np.empty(calendar.year_last_bar.size)
            self._calendar = calendar
        self._initial = float(initial_amount)
        self._size = float(size)
        rf_bar = 0.0 if risk_free_rate == 0 else _rf_per_bar(float(risk_free_rate), calendar.periods_per_year)
        limit = math.inf if exact else self._unit_limits.get(calendar, math.inf) * self._size
        _scan_start(self._initial, times[0] if times.size else 0, rf_bar, limit, self.values, self._stats,
                    self._counts)
        self._kernel_arrays = ScanArrays(times, calendar.month_last_bar, self._months, calendar.year_last_bar,
                                         self._years, self._stats, self._counts, self._work[_VALUES_SIZE:], self._tail)

    def take(self, n_bars: int) -> ScanArrays:
        """What the simulation kernel takes for a run of ``n_bars`` bars. Once per :meth:`begin` (the tail has room
        for one run's returns only)."""
        arrays = self._kernel_arrays
        if arrays is None:
            raise ValueError("the scan must be begun (CurveScan.begin) before each simulation")
        if arrays.times.size != n_bars:
            raise ValueError(f"the scan was begun for {arrays.times.size} bars, the simulation has {n_bars}")
        self._kernel_arrays = None
        return arrays

    def row(self, trades: np.ndarray, bars_in_market: int, unfunded_entries: int = 0) -> tuple[float, ...] | None:
        """The values of :data:`METRIC_NAMES` once the kernel has run, or None if var/cvar need an exact run (never
        after ``begin(..., exact=True)``)."""
        calendar = self._calendar
        found, row = _scan_row(self._stats, self._counts, self._tail, self._work, calendar.times_ns, self._months,
                               self._years, trades, int(bars_in_market), self._initial, calendar.periods_per_year,
                               calendar.buy_and_hold_return)
        if not found:
            return None
        var = row[_VAR_95]
        if len(self._unit_limits) >= _LIMITS_KEPT and calendar not in self._unit_limits:
            self._unit_limits.clear()
        self._unit_limits[calendar] = var * _LIMIT_FACTOR / self._size if var < 0.0 else math.inf
        return row + (float(unfunded_entries),)
