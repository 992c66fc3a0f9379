"""Names, units and compiled-code conventions shared by the metrics modules."""

from __future__ import annotations

import threading
from typing import NamedTuple, TypeAlias

import numpy as np
import pandas as pd

from raybt._accel import NO_REFCOUNT
from raybt._accel.llvm import COMPRESS_LANES
from raybt._jit import jit

EquityLike: TypeAlias = "np.ndarray | pd.Series"
"""A 1-D equity curve: a numpy array or a pandas Series (whose DatetimeIndex can serve as the bar times)."""
TimesLike: TypeAlias = "np.ndarray | pd.DatetimeIndex"
"""Bar times: int64 UTC nanoseconds, or anything :class:`pandas.DatetimeIndex` accepts (naive times are UTC)."""

METRIC_NAMES: tuple[str, ...] = (
    "final_value",
    "total_return",
    "cagr",
    "volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
    "max_drawdown_duration",
    "var_95",
    "cvar_95",
    "best_month",
    "worst_month",
    "pct_winning_months",
    "best_year",
    "worst_year",
    "exposure",
    "n_trades",
    "n_winning_trades",
    "n_losing_trades",
    "win_rate",
    "profit_factor",
    "avg_trade_return",
    "best_trade",
    "worst_trade",
    "avg_win",
    "avg_loss",
    "win_loss_ratio",
    "max_consecutive_wins",
    "max_consecutive_losses",
    "avg_trade_duration",
    "trades_per_year",
    "total_fees",
    "buy_and_hold_return",
    "n_unfunded_entries",
)
"""Keys of the dict :func:`compute_metrics` returns, in the order of the result columns."""

_thread_local = threading.local()  # per-thread scratch (see _scratch)
_SCRATCH_KEPT = 1 << 21  # values (16 MB)
_NS_PER_DAY = 86_400 * 10**9
_NS_PER_YEAR = 365 * _NS_PER_DAY
_VAR_QUANTILE = 0.05
# Tail quantile: from _SAMPLED_SELECT_MIN returns on, a strided sample of about _SAMPLE_SIZE returns gives a limit
# _SAMPLE_SIGMAS standard errors above the quantile, so only the few percent of returns below it are ordered.
_SAMPLE_SIZE = 1024
_SAMPLE_SIGMAS = 4.0
_SAMPLED_SELECT_MIN = 8 * _SAMPLE_SIZE
# Curve scan in blocks (the largest and smallest equity of a block tell whether the drawdown needs to look at its runs
# one by one): the kernel hands over blocks of up to _BLOCK_BARS runs (larger blocks measured no faster).
_BLOCK_BARS = 128
# Selection: parts of at most _SMALL_SELECT values are sorted by insertion.
_SMALL_SELECT = np.uint64(16)
_LANES = COMPRESS_LANES
_LANES_U = np.uint64(_LANES)
_ONE = np.uint64(1)
_INT64_MIN = np.int64(np.iinfo(np.int64).min)
_INT64_MAX = np.int64(np.iinfo(np.int64).max)
# Work space of a scan: the equity of a block after the previous bar's (padded to whole vectors), then its returns.
_VALUES_SIZE = (_BLOCK_BARS + 1 + _LANES - 1) // _LANES * _LANES
_WORK_SIZE = _VALUES_SIZE + _BLOCK_BARS + _LANES
# A stored curve is scanned in longer blocks (fewer per-block costs; its blocks need no buffer but the first).
_CURVE_BLOCK_BARS = 1024
_CURVE_VALUES_SIZE = (_CURVE_BLOCK_BARS + 1 + _LANES - 1) // _LANES * _LANES
_CURVE_WORK_SIZE = _CURVE_VALUES_SIZE + _CURVE_BLOCK_BARS + _LANES

# error_model="numpy": float division by zero gives inf/NaN instead of raising, as in numpy (without warnings).
# Loops that index with a runtime start use uint64 indices: with signed ones numba's negative-index wraparound
# defeats vectorisation (LLVM falls back to gathers, very slow on this hardware).
_jit = jit(error_model="numpy")
# Reassociation lets LLVM vectorise float sums, contraction fuses multiply-adds: results differ from sequential
# separate operations by rounding only.
_jit_vector = jit(error_model="numpy", fastmath={"reassoc", "contract"})
# The scan of an equity curve, block by block, also runs inside the simulation kernel: it allocates nothing and is
# compiled without numba's reference counting (see raybt.engine), which would otherwise cost an atomic increment and
# decrement per array argument and call.
_jit_scan = jit(error_model="numpy", fastmath={"reassoc", "contract"}, **NO_REFCOUNT)




class ScanStats(NamedTuple):
    """Positions in a curve scan's float64 running state ``stats`` (``len(STAT)`` values), advanced block by block
    by :func:`~raybt.metrics.scan._scan_block`: ``stats[STAT.peak]``. numba folds them in as constants."""

    first: int = 0
    """The first return (the sums below are of deviations from it)."""
    sum_dev: int = 1
    """Sum of the returns' deviations from the first."""
    sum_dev2: int = 2
    """Sum of their squares."""
    sum_down2: int = 3
    """Sum of the squared shortfalls below the risk-free rate per bar."""
    rf_bar: int = 4
    """Risk-free rate per bar."""
    limit: int = 5
    """Returns below this are kept in the tail for var/cvar."""
    peak: int = 6
    """Running peak of the equity."""
    worst: int = 7
    """Max drawdown so far (negative fraction)."""
    floor: int = 8
    """Equity level under the peak that would deepen the max drawdown."""


class ScanCounts(NamedTuple):
    """Positions in a curve scan's int64 running counts ``counts`` (``len(COUNT)`` values): ``counts[COUNT.seen]``."""

    seen: int = 0
    """Bars scanned."""
    tail: int = 1
    """Returns kept in the tail."""
    flat: int = 2
    """Zero returns counted, not computed (bars repeating the previous bar's equity)."""
    peak_bar: int = 3
    """Last bar at the peak (-1: the initial amount)."""
    peak_time: int = 4
    """Its time (int64 UTC ns)."""
    longest: int = 5
    """Longest drawdown so far (ns)."""
    month: int = 6
    """Next month end to record."""
    year: int = 7
    """Next year end to record."""


STAT = ScanStats()
COUNT = ScanCounts()


class ScanArrays(NamedTuple):
    """The arrays a curve scan runs on inside the simulation kernel (:meth:`~raybt.metrics.CurveScan.take`); numba
    passes them as one argument."""

    times: np.ndarray
    """int64 UTC nanoseconds of each bar of the range (read-only)."""
    month_last: np.ndarray
    """int64 positions of the last bar of each calendar month (read-only)."""
    month_values: np.ndarray
    """float64 equity at those bars, written by the scan."""
    year_last: np.ndarray
    """int64 positions of the last bar of each calendar year (read-only)."""
    year_values: np.ndarray
    """float64 equity at those bars, written by the scan."""
    stats: np.ndarray
    """float64 running state, positions :data:`STAT` (empty: no scan)."""
    counts: np.ndarray
    """int64 running counts, positions :data:`COUNT`."""
    returns: np.ndarray
    """float64 work space for a block's returns."""
    tail: np.ndarray
    """float64 returns below ``stats[STAT.limit]``, in bar order."""
