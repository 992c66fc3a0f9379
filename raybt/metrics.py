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
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np
import pandas as pd
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core import config as numba_config
from numba.extending import intrinsic

from raybt import _records as rec

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
# one by one): the kernel hands over blocks of up to _BLOCK_BARS runs (block sizes up to 1,024 measured no different).
_BLOCK_BARS = 128
# Selection: parts of at most _SMALL_SELECT values are sorted by insertion.
_SMALL_SELECT = np.uint64(16)
# Values per vector of the compress intrinsics (AVX-512: one register of float64).
_LANES = 8
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


def _compress_kind() -> str:
    """How the compress intrinsics store the selected lanes, for the CPU numba compiles for.

    "memory": ``llvm.masked.compressstore``, one AVX-512 compress to memory: the fastest on Intel, but microcoded
    (very slow) on AMD Zen 4 and one branch per lane without AVX-512. "register": a register compress and one vector
    store (``llvm.experimental.vector.compress``, LLVM 19+; a branch-free sequence without AVX-512). "lanes" (older
    LLVM): every lane stored at the next free slot, the slot advancing by the lane's mask bit (branch-free).
    """
    name = numba_config.CPU_NAME or llvm_binding.get_host_cpu_name()
    features = (numba_config.CPU_FEATURES or llvm_binding.get_host_cpu_features().flatten()).split(",")
    if "+avx512f" in features and not name.startswith("znver"):
        return "memory"
    return "register" if llvm_binding.llvm_version_info >= (19,) else "lanes"


_COMPRESS = _compress_kind()

# error_model="numpy": float division by zero gives inf/NaN instead of raising, as in numpy (without warnings).
# Loops that index with a runtime start use uint64 indices: with signed ones numba's negative-index wraparound
# defeats vectorisation (LLVM falls back to gathers, very slow on this hardware).
_jit = njit(cache=True, error_model="numpy")
# Reassociation lets LLVM vectorise float sums, contraction fuses multiply-adds: results differ from sequential
# separate operations by rounding only.
_jit_vector = njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
# The scan of an equity curve, block by block, also runs inside the simulation kernel: it allocates nothing and is
# compiled without numba's reference counting (see raybt.engine), which would otherwise cost an atomic increment and
# decrement per array argument and call (~0.5 µs per block).
_jit_scan = njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"}, _nrt=False)


# ---------------------------------------------------------------------------------------------------------------------
# Compress intrinsics: the values of a vector that pass a comparison, stored contiguously
# ---------------------------------------------------------------------------------------------------------------------


def _is_vector_array(array: types.Type, writable: bool = False) -> bool:
    """Whether ``array`` is a numba type the intrinsics can address directly: a C-contiguous 1-D float64 array
    (writable if asked)."""
    return (
        isinstance(array, types.Array)
        and array.ndim == 1
        and array.layout == "C"
        and array.dtype == types.float64
        and (array.mutable or not writable)
    )


def _splat(builder: ir.IRBuilder, value: ir.Value) -> ir.Value:
    """A vector of _LANES copies of the scalar ``value``."""
    vector = ir.VectorType(value.type, _LANES)
    first = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, first, ir.Constant(ir.VectorType(ir.IntType(32), _LANES), [0] * _LANES))


def _compress_store(
    builder: ir.IRBuilder,
    context: Any,
    array_type: types.Array,
    array: ir.Value,
    position: ir.Value,
    values: ir.Value,
    mask: ir.Value,
) -> ir.Value:
    """Store the lanes of ``values`` selected by ``mask`` contiguously from ``array[position]``; return their number.
    All _LANES slots from ``position`` on may be written (callers leave room). How: see _COMPRESS.
    """
    data = context.make_array(array_type)(context, builder, array).data
    target = builder.gep(data, [position])
    if _COMPRESS == "memory":
        signature = ir.FunctionType(ir.VoidType(), [values.type, target.type, mask.type])
        store = cgutils.get_or_insert_function(builder.module, signature, f"llvm.masked.compressstore.v{_LANES}f64")
        builder.call(store, [values, target, mask])
    elif _COMPRESS == "register":
        signature = ir.FunctionType(values.type, [values.type, mask.type, values.type])
        compress = cgutils.get_or_insert_function(
            builder.module, signature, f"llvm.experimental.vector.compress.v{_LANES}f64"
        )
        packed = builder.call(compress, [values, mask, ir.Constant(values.type, ir.Undefined)])
        builder.store(packed, builder.bitcast(target, values.type.as_pointer()), align=8)
    else:
        offset = ir.Constant(ir.IntType(64), 0)
        for lane in (ir.Constant(ir.IntType(32), j) for j in range(_LANES)):
            builder.store(builder.extract_element(values, lane), builder.gep(target, [offset]))
            offset = builder.add(offset, builder.zext(builder.extract_element(mask, lane), ir.IntType(64)))
    bits = ir.IntType(_LANES)
    popcount = builder.module.declare_intrinsic("llvm.ctpop", [bits])
    return builder.zext(builder.call(popcount, [builder.bitcast(mask, bits)]), ir.IntType(64))


def _load_lanes(
    builder: ir.IRBuilder, context: Any, array_type: types.Array, array: ir.Value, start: ir.Value
) -> ir.Value:
    """The _LANES float64 values ``array[start:start + _LANES]`` as a vector."""
    data = context.make_array(array_type)(context, builder, array).data
    vector = ir.VectorType(ir.DoubleType(), _LANES)
    return builder.load(builder.bitcast(builder.gep(data, [start]), vector.as_pointer()), align=8)


@intrinsic
def _float_from_bits(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits``."""

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@intrinsic
def _compress_below(typingctx, source, start, target, position, limit):
    """Append the values of ``source[start:start + _LANES]`` below ``limit`` (NaN is not) to ``target`` from
    ``position`` on, in order; return how many. No bounds checks: the caller guarantees them (uint64 indices)."""
    if not (_is_vector_array(source) and _is_vector_array(target, writable=True)):
        return None
    signature = types.uint64(source, types.uint64, target, types.uint64, types.float64)

    def codegen(context, builder, sig, args):
        source_value, start_value, target_value, position_value, limit_value = args
        values = _load_lanes(builder, context, sig.args[0], source_value, start_value)
        below = builder.fcmp_ordered("<", values, _splat(builder, limit_value))
        return _compress_store(builder, context, sig.args[2], target_value, position_value, values, below)

    return signature, codegen


@intrinsic
def _compress_split(typingctx, source, start, pivot, below, n_below, above, n_above):
    """Append the values of ``source[start:start + _LANES]`` below ``pivot`` to ``below`` from ``n_below`` on and
    those above it to ``above`` from ``n_above`` on; return both counts. Unchecked uint64 indices, as
    :func:`_compress_below`; ``below``/``above`` may be ``source`` itself when writing never passes reading."""
    if not (_is_vector_array(source) and _is_vector_array(below, True) and _is_vector_array(above, True)):
        return None
    index = types.uint64
    signature = types.UniTuple(index, 2)(source, index, types.float64, below, index, above, index)

    def codegen(context, builder, sig, args):
        source_value, start_value, pivot_value, below_value, n_below_value, above_value, n_above_value = args
        values = _load_lanes(builder, context, sig.args[0], source_value, start_value)
        pivots = _splat(builder, pivot_value)
        lower = builder.fcmp_ordered("<", values, pivots)
        higher = builder.fcmp_ordered(">", values, pivots)
        counts = [
            _compress_store(builder, context, sig.args[3], below_value, n_below_value, values, lower),
            _compress_store(builder, context, sig.args[5], above_value, n_above_value, values, higher),
        ]
        return context.make_tuple(builder, sig.return_type, counts)

    return signature, codegen


# ---------------------------------------------------------------------------------------------------------------------
# Compiled building blocks (shared by compute_metrics and the public per-metric functions)
# ---------------------------------------------------------------------------------------------------------------------


# A curve scan's running state, advanced block by block by :func:`_scan_block`: float64 values ...
_FIRST, _SUM_DEV, _SUM_DEV2, _SUM_DOWN2, _RF_BAR, _LIMIT, _PEAK, _WORST, _FLOOR = range(9)
_N_FLOATS = 9
# ... and int64 counts. _N_FLAT: zero returns counted, not computed (bars repeating the previous bar's equity).
_N_SEEN, _N_TAIL, _N_FLAT, _PEAK_BAR, _PEAK_TIME, _LONGEST, _MONTH, _YEAR = range(8)
_N_COUNTS = 8


@_jit_scan
def _scan_start(initial, t0, rf_bar, limit, values, stats, counts):
    """Reset a scan for a curve starting from ``initial`` (dated ``t0``, the first drawdown peak): the state arrays,
    and ``values[0]``, the equity before the first bar."""
    stats[:] = 0.0
    counts[:] = 0
    stats[_FIRST] = np.nan
    stats[_RF_BAR] = rf_bar
    stats[_LIMIT] = limit
    stats[_PEAK] = initial
    stats[_FLOOR] = initial
    counts[_PEAK_BAR] = -1
    counts[_PEAK_TIME] = t0
    values[0] = initial


@_jit_scan
def _run_start(slots, size, block_end, j):
    """First bar of run ``j`` of a block (see :func:`_scan_block`)."""
    return slots[j] if slots.size > 0 else block_end - size + j


@_jit_scan
def _run_end(slots, size, block_end, j):
    """Last bar of run ``j`` of a block (see :func:`_scan_block`)."""
    return _run_start(slots, size, block_end, j + 1) - 1 if j + 1 < size else block_end - 1


@_jit_scan
def _walk_drawdown(values, slots, size, block_end, times, stats, counts):
    """Advance the drawdown state run by run over a block (see :func:`_scan_block`), as a bar-by-bar walk would.

    A drawdown lasts from the last bar at a peak until the first bar back at or above it; a run at or above the
    peak ends at the peak, so its last bar becomes the peak bar. ``_FLOOR`` is the equity level that would deepen
    the max drawdown under the current peak (no division above it).
    """
    peak = stats[_PEAK]
    worst = stats[_WORST]
    floor = stats[_FLOOR]
    peak_bar = counts[_PEAK_BAR]
    peak_time = counts[_PEAK_TIME]
    longest = counts[_LONGEST]
    for j in range(size):
        value = values[1 + j]
        if value >= peak:
            bar = _run_start(slots, size, block_end, j)
            if peak_bar != bar - 1:
                longest = max(longest, times[bar] - peak_time)
            peak = value
            peak_bar = _run_end(slots, size, block_end, j)
            peak_time = times[peak_bar]
            floor = peak * (1.0 + worst)
        elif value < floor:
            worst = min(worst, value / peak - 1.0)
            floor = value
    stats[_PEAK] = peak
    stats[_WORST] = worst
    stats[_FLOOR] = floor
    counts[_PEAK_BAR] = peak_bar
    counts[_PEAK_TIME] = peak_time
    counts[_LONGEST] = longest


@_jit_scan
def _record_periods(last_bars, out, index, values, slots, size, block_end):
    """Write the equity at each period end in ``last_bars[index:]`` before ``block_end`` (all in the block) to
    ``out``; returns the next period's index."""
    j = 0
    while index < last_bars.size and last_bars[index] < block_end:
        bar = last_bars[index]
        if slots.size == 0:
            j = bar - (block_end - size)
        else:
            while j + 1 < size and slots[j + 1] <= bar:
                j += 1
        out[index] = values[1 + j]
        index += 1
    return index


@_jit_scan
def _block_returns(values, start, stop, returns, first, rf_bar):
    """The vectorised loop of :func:`_scan_block` over ``values[start:stop]`` (uint64 bounds; a loop from a
    constant start is not vectorised by LLVM here, hence a function of its own): writes ``returns[i - start]``,
    returns the sums of the deviations from ``first``, of their squares and of the squared shortfalls below
    ``rf_bar``, and the largest and smallest equity bit patterns."""
    bits = values.view(np.int64)
    sum_dev = 0.0
    sum_dev2 = 0.0
    sum_down2 = 0.0
    high = _INT64_MIN
    low = _INT64_MAX
    for i in range(start, stop):
        ret = values[i] / values[i - _ONE] - 1.0
        returns[i - start] = ret
        dev = ret - first
        sum_dev += dev
        sum_dev2 += dev * dev
        excess = ret - rf_bar
        down = excess if excess < 0.0 else 0.0
        sum_down2 += down * down
        pattern = bits[i]
        high = pattern if pattern > high else high
        low = pattern if pattern < low else low
    return sum_dev, sum_dev2, sum_down2, high, low


@_jit_scan
def _scan_block(values, slots, size, block_end, times, stats, counts, returns, tail, month_last, month_values,
                year_last, year_values):
    """Advance a scan over the next block of the curve: ``size`` (1 or more) runs of bars at one equity each.

    Run ``j`` is worth ``values[1 + j]`` from bar ``slots[j]`` to the bar before the next run (before ``block_end``
    for the last); ``values[0]`` is the equity of the bar before the block (the initial amount before the first
    bar). Without ``slots`` (empty) the runs are the single bars before ``block_end``: a stored curve is scanned
    so, its slices serving as ``values``. The simulation kernel hands a stretch with nothing open over as one run,
    whose bars after the first repeat its equity: their zero returns are counted in ``_N_FLAT`` by the caller and
    added by :func:`_scan_summary`.

    The returns are ``r = equity / previous - 1``. A vectorised loop (:func:`_block_returns`) computes them into
    ``returns`` (work space of ``size + _LANES`` values), adds their deviations from the first return (shifted
    data: accurate, and identical returns give a standard deviation of exactly 0), their squares and their squared
    shortfalls below ``rf_bar`` to the sums, and finds the largest and smallest equity bit patterns (the divisions
    alone and the rest of the loop alone take about as long, ~1.6 cycles a bar each here, and overlap: removing
    either saves little). The returns below ``_LIMIT`` are appended to ``tail`` (room for ``_N_TAIL + size +
    _LANES`` values) by vector compress stores. Read as int64, the patterns of floats without sign bit order as
    the values (NaN above inf) and those with one are negative; so when the smallest pattern is not negative the
    two are the block's largest and smallest equity (integer min/max reductions vectorise, float ones do not).
    Only blocks with a value at or above the peak (or a negative or NaN equity) are walked run by run; one that
    only deepens the drawdown needs just its minimum (what the walk would find, value / peak being monotonic for
    the positive peak). The equity at month and year ends is recorded to ``month_values`` and ``year_values``.
    """
    if counts[_N_SEEN] == 0:
        stats[_FIRST] = values[1] / values[0] - 1.0
    n = np.uint64(size)
    sum_dev, sum_dev2, sum_down2, high, low = _block_returns(values, _ONE, n + _ONE, returns, stats[_FIRST],
                                                             stats[_RF_BAR])
    stats[_SUM_DEV] += sum_dev
    stats[_SUM_DEV2] += sum_dev2
    stats[_SUM_DOWN2] += sum_down2
    counts[_N_TAIL] = np.int64(_append_below(returns, n, stats[_LIMIT], tail, np.uint64(counts[_N_TAIL])))
    highest = _float_from_bits(high)
    lowest = _float_from_bits(low)
    peak = stats[_PEAK]
    if low < 0 or not highest < peak:
        if low >= 0 and lowest == peak and highest == peak:  # flat at the peak: only the peak bar moves
            first_bar = _run_start(slots, size, block_end, 0)
            if counts[_PEAK_BAR] != first_bar - 1:
                counts[_LONGEST] = max(counts[_LONGEST], times[first_bar] - counts[_PEAK_TIME])
            counts[_PEAK_BAR] = block_end - 1
            counts[_PEAK_TIME] = times[block_end - 1]
        else:
            _walk_drawdown(values, slots, size, block_end, times, stats, counts)
    elif lowest < stats[_FLOOR]:
        stats[_WORST] = min(stats[_WORST], lowest / peak - 1.0)
        stats[_FLOOR] = lowest
    counts[_MONTH] = _record_periods(month_last, month_values, counts[_MONTH], values, slots, size, block_end)
    counts[_YEAR] = _record_periods(year_last, year_values, counts[_YEAR], values, slots, size, block_end)
    counts[_N_SEEN] = block_end


@_jit
def _scan_summary(stats, counts, times):
    """``(mean(r), std(r, ddof=1), sqrt(mean(min(r - rf_bar, 0) ** 2)), max drawdown, longest drawdown in ns)`` of
    a finished scan, its ``_N_FLAT`` zero returns included; the deviations are NaN below 2 returns, everything is
    NaN without bars."""
    n = counts[_N_SEEN]
    if n == 0:
        return np.nan, np.nan, np.nan, np.nan, np.nan
    longest = counts[_LONGEST]
    if counts[_PEAK_BAR] != n - 1:
        longest = max(longest, times[n - 1] - counts[_PEAK_TIME])
    first = stats[_FIRST]
    n_flat = counts[_N_FLAT]
    down = min(-stats[_RF_BAR], 0.0)
    sum_dev = stats[_SUM_DEV] - n_flat * first
    sum_dev2 = stats[_SUM_DEV2] + n_flat * (first * first)
    sum_down2 = stats[_SUM_DOWN2] + n_flat * (down * down)
    mean = first + sum_dev / n
    if n < 2:
        return mean, np.nan, np.nan, stats[_WORST], float(longest)
    var = max((sum_dev2 - sum_dev * sum_dev / n) / (n - 1), 0.0)
    return mean, math.sqrt(var), math.sqrt(sum_down2 / n), stats[_WORST], float(longest)


@_jit
def _minimum(values, size):
    """Smallest of ``values[:size]`` (uint64 ``size``); inf if empty."""
    lowest = np.inf
    for i in range(size):
        lowest = min(lowest, values[i])
    return lowest


@_jit_scan
def _scan_curve(equity, initial, times, t0, rf_bar, limit, work, stats, counts, tail, month_last, month_values,
                year_last, year_values):
    """Scan a whole equity curve in blocks of single-bar runs (see :func:`_scan_block`): the first block from a copy
    after ``initial`` in ``work`` (work space of :data:`_CURVE_WORK_SIZE` values), the others from slices of the curve
    itself. Returns :func:`_scan_summary`'s statistics."""
    values = work[:_CURVE_VALUES_SIZE]
    returns = work[_CURVE_VALUES_SIZE:]
    single_bars = counts[:0]
    _scan_start(initial, t0, rf_bar, limit, values, stats, counts)
    n = equity.size
    size = min(_CURVE_BLOCK_BARS, n)
    for j in range(size):
        values[1 + j] = equity[j]
    if size > 0:
        _scan_block(values, single_bars, size, size, times, stats, counts, returns, tail, month_last, month_values,
                    year_last, year_values)
    for start in range(size, n, _CURVE_BLOCK_BARS):
        size = min(_CURVE_BLOCK_BARS, n - start)
        _scan_block(equity[start - 1 : start + size], single_bars, size, start + size, times, stats, counts,
                    returns, tail, month_last, month_values, year_last, year_values)
    return _scan_summary(stats, counts, times)


@_jit
def _fill_returns(equity, initial, out):
    """``out[i]`` = ``equity[i] / equity[i-1] - 1``, the first against ``initial``."""
    previous = initial
    for i in range(equity.size):
        value = equity[i]
        out[i] = value / previous - 1.0
        previous = value


@_jit
def _sort_small(values):
    """Sort ``values`` in place: insertion sort, for a handful of values."""
    for i in range(1, values.size):
        value = values[i]
        j = i - 1
        while j >= 0 and values[j] > value:
            values[j + 1] = values[j]
            j -= 1
        values[j + 1] = value


@_jit
def _aligned_empty(size):
    """``np.empty(size)`` starting on a 64-byte boundary: vector loads from it do not straddle cache lines."""
    raw = np.empty(size + _LANES)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip : skip + size]


@_jit
def _split(source, size, pivot, below, above):
    """Copy the values of ``source[:size]`` below ``pivot`` to ``below`` and those above it to ``above`` (in
    order, uint64 ``size``; capacities ``size + _LANES``); return both counts. Equal values are dropped."""
    n_below = n_above = np.uint64(0)
    whole = size // _LANES_U * _LANES_U
    for start in range(np.uint64(0), whole, _LANES_U):
        more_below, more_above = _compress_split(source, start, pivot, below, n_below, above, n_above)
        n_below += more_below
        n_above += more_above
    for i in range(whole, size):
        value = source[i]
        if value < pivot:
            below[n_below] = value
            n_below += _ONE
        elif value > pivot:
            above[n_above] = value
            n_above += _ONE
    return n_below, n_above


@_jit
def _select_pair(values, k, k_next):
    """``(k-th, k_next-th)`` smallest of ``values`` (0-based, ``k <= k_next <= k + 1``, no NaN); ``values`` is left
    unchanged. Quickselect whose partitions are vector compress stores (no mispredicted branch per value): each
    round keeps the values below or above a median-of-three pivot, the part holding the k-th smallest.
    ``ceiling`` is the smallest value left above the current part: the k_next-th when that is past the part.
    """
    size = np.uint64(values.size)
    k = np.uint64(k)
    k_next = np.uint64(k_next)
    lower = _aligned_empty(values.size + _LANES)  # _split may write _LANES slots past its last value
    upper = _aligned_empty(values.size + _LANES)
    part = values
    in_values = True  # part is still the caller's array
    ceiling = np.inf
    while size > _SMALL_SELECT:
        a, b, c = part[0], part[size >> _ONE], part[size - _ONE]
        pivot = max(min(a, b), min(max(a, b), c))
        n_below, n_above = _split(part, size, pivot, lower, upper)
        n_at_most = size - n_above
        if k < n_below:
            part, size, ceiling = lower, n_below, pivot
        elif k < n_at_most:
            if k_next < n_at_most:
                return pivot, pivot
            return pivot, min(_minimum(upper, n_above), ceiling)
        else:
            part, size, k, k_next = upper, n_above, k - n_at_most, k_next - n_at_most
        in_values = False
    if in_values:  # a loop: a slice assignment would add seconds of compilation
        for i in range(size):
            lower[i] = values[i]
        part = lower
    small = part[:size]
    _sort_small(small)
    return small[k], small[k_next] if k_next < size else ceiling


@_jit
def _lerp(a, b, t):
    """Linear interpolation exactly as numpy's percentile computes it."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1.0 - t)
    return a + diff * t


@_jit
def _limit_of_sample(sample, q):
    """A value about q + _SAMPLE_SIGMAS standard errors of the returns lie below, from a ``sample`` of them (which
    it reorders): the q quantile of all returns is almost surely below it."""
    m = sample.size
    rank = min(m - 1, int((q + _SAMPLE_SIGMAS * math.sqrt(q * (1.0 - q) / m)) * m) + 1)
    return _select_pair(sample, rank, rank)[0]


@_jit
def _sample_limit(returns, q):
    """:func:`_limit_of_sample` of a strided sample of about _SAMPLE_SIZE ``returns``."""
    stride = returns.size // _SAMPLE_SIZE
    sample = _aligned_empty(returns.size // stride)
    for j in range(sample.size):
        sample[j] = returns[j * stride]
    return _limit_of_sample(sample, q)


@_jit
def _curve_sample_limit(equity, initial, q):
    """:func:`_sample_limit` of the returns of ``equity`` (the first against ``initial``), computed at the sampled
    bars only: the same sample and limit, without the returns."""
    stride = equity.size // _SAMPLE_SIZE
    sample = _aligned_empty(equity.size // stride)
    sample[0] = equity[0] / initial - 1.0
    for j in range(1, sample.size):
        sample[j] = equity[j * stride] / equity[j * stride - 1] - 1.0
    return _limit_of_sample(sample, q)


@_jit_scan
def _append_below(source, size, limit, out, count):
    """Append the values of ``source[:size]`` below ``limit`` to ``out`` from ``count`` on, in order (uint64 size
    and count; ``out`` has room for ``_LANES`` slots past the last value); return the new count."""
    whole = size // _LANES_U * _LANES_U
    for start in range(np.uint64(0), whole, _LANES_U):
        count += _compress_below(source, start, out, count, limit)
    for i in range(whole, size):
        if source[i] < limit:
            out[count] = source[i]
            count += _ONE
    return count


@_jit
def _collect_below(returns, limit, out):
    """Copy the returns below ``limit`` to ``out`` (in order; capacity ``returns.size + _LANES``); return how
    many."""
    return np.int64(_append_below(returns, np.uint64(returns.size), limit, out, np.uint64(0)))


@_jit_vector
def _sum_at_most(values, limit):
    """``(sum, count)`` of the values <= ``limit``: a vectorised pass."""
    total = 0.0
    count = 0
    for i in range(values.size):
        value = values[i]
        at_most = value <= limit
        total += value if at_most else 0.0
        count += np.int64(at_most)
    return total, count


@_jit_vector
def _count_below(values, value):
    """Number of ``values`` below ``value``: a vectorised count."""
    count = 0
    for i in range(values.size):
        count += np.int64(values[i] < value)
    return count


@_jit_vector
def _count_equal(values, value):
    """Number of ``values`` equal to ``value``: a vectorised count."""
    count = 0
    for i in range(values.size):
        count += np.int64(values[i] == value)
    return count


@_jit
def _order_statistics(n, q):
    """``(k, k_next, gamma)``: np.percentile's q quantile of n values interpolates their order statistics k and
    k_next (0-based) with weight gamma."""
    position = (n - 1) * q
    k = int(math.floor(position))
    return k, min(k + 1, n - 1), position - k


@_jit
def _tail_of_below(collected, k, k_next, gamma):
    """``(found, quantile, tail mean)`` from ``collected``, the returns below some limit (any order; reordered
    here): found (and the values meaningful) only if order statistics k and k_next of all returns are among them."""
    if k_next >= collected.size:
        return False, np.nan, np.nan
    at_k, at_next = _select_pair(collected, k, k_next)
    quantile = _lerp(at_k, at_next, gamma)
    total, count = _sum_at_most(collected, quantile)
    return True, quantile, total / count


@_jit
def _tail_with_ties(collected, tie, n_ties, k, k_next, gamma):
    """:func:`_tail_of_below` of ``collected`` plus ``n_ties`` values equal to ``tie`` that were counted, not stored
    (the zero returns of flat runs, or the returns equal to a collection limit)."""
    if n_ties == 0:
        return _tail_of_below(collected, k, k_next, gamma)
    if k_next >= collected.size + n_ties:
        return False, np.nan, np.nan
    below = _count_below(collected, tie)
    past_ties = below + _count_equal(collected, tie) + n_ties  # ranks below it are below or at the tie
    if k_next < below:
        at_k, at_next = _select_pair(collected, k, k_next)
    elif k >= past_ties:
        at_k, at_next = _select_pair(collected, k - n_ties, k_next - n_ties)
    else:
        at_k = _select_pair(collected, k, k)[0] if k < below else tie
        at_next = tie if k_next < past_ties else _select_pair(collected, k_next - n_ties, k_next - n_ties)[0]
    quantile = _lerp(at_k, at_next, gamma)
    total, count = _sum_at_most(collected, quantile)
    if quantile >= tie:
        total += n_ties * tie
        count += n_ties
    return True, quantile, total / count


@_jit
def _scan_tail(stats, counts, tail, q):
    """``(found, q quantile as np.percentile, mean of the returns <= it)`` of a finished scan's returns, from its
    tail (and its uncounted zeros if below the limit); found only if the quantile's order statistics are there,
    which an exact scan (infinite limit) always finds: the only returns it does not store are +inf (after an equity
    of 0), the largest, counted here as :func:`_tail_below` counts the values equal to its limit."""
    n = counts[_N_SEEN]
    k, k_next, gamma = _order_statistics(n, q)
    n_zeros = counts[_N_FLAT] if 0.0 < stats[_LIMIT] else 0
    collected = tail[: counts[_N_TAIL]]
    found, quantile, tail_mean = _tail_with_ties(collected, 0.0, n_zeros, k, k_next, gamma)
    if found or stats[_LIMIT] != np.inf:
        return found, quantile, tail_mean
    known = collected.size + n_zeros
    at_k = _tail_with_ties(collected, 0.0, n_zeros, k, k, 0.0)[1] if k < known else np.inf
    quantile = _lerp(at_k, np.inf, gamma)
    total, count = _sum_at_most(collected, quantile)
    if quantile >= 0.0:
        count += n_zeros
    if quantile == np.inf:
        total += np.inf
        count += n - known
    return True, quantile, total / count


@_jit
def _tail_below(returns, k, k_next, gamma, limit, out):
    """``(found, quantile, tail mean)`` from the returns below ``limit``, collected to ``out`` and ordered; those
    equal to ``limit`` are only counted (when needed).

    The quantile interpolates order statistics k and k_next of all returns with weight ``gamma``. ``found`` is False
    (and the values meaningless) unless both are below or at the limit; with an infinite limit (and no NaN) they
    always are.
    """
    size = _collect_below(returns, limit, out)
    collected = out[:size]
    if k_next < size:
        return _tail_of_below(collected, k, k_next, gamma)
    return _tail_with_ties(collected, limit, _count_equal(returns, limit), k, k_next, gamma)


@_jit
def _lower_tail(returns, q, out):
    """``(q-quantile as np.percentile(returns, 100 q), mean of the returns <= it)``; NaN, NaN without returns.

    The returns must not contain NaN; ``out`` is scratch of ``returns.size + _LANES`` values. Long series first
    order only the returns below a sampled limit, and all returns only if the quantile is not below it.
    """
    n = returns.size
    if n == 0:
        return np.nan, np.nan
    k, k_next, gamma = _order_statistics(n, q)
    if n >= _SAMPLED_SELECT_MIN:
        found, quantile, tail_mean = _tail_below(returns, k, k_next, gamma, _sample_limit(returns, q), out)
        if found:
            return quantile, tail_mean
    _, quantile, tail_mean = _tail_below(returns, k, k_next, gamma, np.inf, out)
    return quantile, tail_mean


@_jit
def _tail_risk(returns, mean, q, out):
    """``_lower_tail`` of returns whose mean is ``mean``; NaN, NaN when the mean is NaN (a return is NaN)."""
    if math.isnan(mean):
        return np.nan, np.nan
    return _lower_tail(returns, q, out)


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
    stats = np.empty(_N_FLOATS)
    counts = np.empty(_N_COUNTS, dtype=np.int64)
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
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# compute_metrics: the per-backtest entry point
# ---------------------------------------------------------------------------------------------------------------------


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
    Inputs may be read-only; they are not modified. The cost (about 45-55 µs for 44k bars and 200 trades on a
    2.8 GHz Ice Lake Xeon) is mostly one pass over the curve in blocks (see ``_scan_curve`` and ``_scan_block``):
    the returns, their moments, the drawdown, and the few percent of returns below a limit sampled beforehand, among
    which the 5 % quantile is then selected (see ``_tail_of_below``; all returns only when the sample misled). Work
    space is a per-thread scratch array (see ``_scratch``). Backtests and sweeps do not call this: the simulation
    kernel runs the same block scan as it values the equity (:class:`CurveScan`).
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
_LIMITS_KEPT = 64


@_jit
def _scan_row(stats, counts, tail, values, times, month_values, year_values, trades, bars_in_market, initial,
              periods_per_year, buy_and_hold_return):
    """``(found, values of METRIC_NAMES)`` of a finished kernel scan; found is False (and the row meaningless)
    when the tail quantile's order statistics were not below the scan's limit."""
    summary = _scan_summary(stats, counts, times)
    n = counts[_N_SEEN]
    found, var, cvar = True, np.nan, np.nan
    if not math.isnan(summary[0]):
        found, var, cvar = _scan_tail(stats, counts, tail, _VAR_QUANTILE)
    final = values[0] if n > 0 else np.nan
    equity_part = _curve_values(summary, var, cvar, final, initial, n, bars_in_market, month_values, year_values,
                                periods_per_year, stats[_RF_BAR])
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
        self._stats = np.zeros(_N_FLOATS)
        self._counts = np.zeros(_N_COUNTS, dtype=np.int64)
        self._tail = np.empty(0)
        self._months = np.empty(0)
        self._years = np.empty(0)
        self._unit_limits: dict[RangeCalendar, float] = {}  # range -> tail limit per unit of position size
        self._calendar: RangeCalendar | None = None
        self._initial = math.nan
        self._size = 1.0
        self._kernel_arrays: tuple = ()

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
        self._kernel_arrays = (times, calendar.month_last_bar, self._months, calendar.year_last_bar, self._years,
                               self._stats, self._counts, self._work[_VALUES_SIZE:], self._tail)

    def take(self, n_bars: int) -> tuple:
        """What the simulation kernel takes for a run of ``n_bars`` bars: ``(times, month ends, equity at them, year
        ends, equity at them, stats, counts, returns work space, tail)``. Once per :meth:`begin` (the tail has room
        for one run's returns only)."""
        arrays = self._kernel_arrays
        if not arrays:
            raise ValueError("the scan must be begun (CurveScan.begin) before each simulation")
        if arrays[0].size != n_bars:
            raise ValueError(f"the scan was begun for {arrays[0].size} bars, the simulation has {n_bars}")
        self._kernel_arrays = ()
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
        var = row[9]
        if len(self._unit_limits) >= _LIMITS_KEPT and calendar not in self._unit_limits:
            self._unit_limits.clear()
        self._unit_limits[calendar] = var * _LIMIT_FACTOR / self._size if var < 0.0 else math.inf
        return row + (float(unfunded_entries),)


# ---------------------------------------------------------------------------------------------------------------------
# Public per-metric functions for any equity curve
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# Input normalisation
# ---------------------------------------------------------------------------------------------------------------------


def _scratch_size(n_bars: int) -> int:
    """Values of scratch :func:`_equity_stats` needs for ``n_bars``: a block and twice room for the returns."""
    return _CURVE_WORK_SIZE + 2 * ((n_bars + 2 * _LANES - 1) // _LANES * _LANES)


def _scratch(size: int) -> np.ndarray:
    """Float64 work space of at least ``size`` values starting on a cache line (64 bytes), kept per thread up to
    _SCRATCH_KEPT values: writing a fresh array of that size would cost page faults on every call (about 9 µs for
    44k bars); larger ones are not kept (their page faults are small next to the rest of the work)."""
    buffer = getattr(_thread_local, "scratch", None)
    if buffer is None or buffer.size < size:
        buffer = _cache_aligned(size)
        if size <= _SCRATCH_KEPT:
            _thread_local.scratch = buffer
    return buffer


def _cache_aligned(size: int) -> np.ndarray:
    """``np.empty(size)`` starting on a cache line (64 bytes): vector loads from it do not straddle two."""
    raw = np.empty(size + _LANES)
    skip = (-raw.ctypes.data % 64) // raw.itemsize
    return raw[skip : skip + size]


def _readonly(array: np.ndarray) -> np.ndarray:
    """A read-only view of ``array`` (itself if already read-only), so compiled code sees one array type."""
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    return array


def _as_float_array(values: Any) -> np.ndarray:
    """C-contiguous float64 1-D equity, the input itself when it already is one (writable or not: numba compiles
    a version for each; a read-only view would cost about 1 µs per call)."""
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"equity must be one-dimensional, got shape {array.shape}")
    return array


def _as_trades(trades: Any) -> np.ndarray:
    """C-contiguous float64 trade records, the input itself when it already is (see :func:`_as_float_array`)."""
    array = np.ascontiguousarray(trades, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, rec.N_TRADE_FIELDS)
    if array.ndim != 2 or array.shape[1] != rec.N_TRADE_FIELDS:
        raise ValueError(f"trades must have shape (n_trades, {rec.N_TRADE_FIELDS}), got {array.shape}")
    return array


def _as_times_ns(times: TimesLike) -> np.ndarray:
    """int64 UTC nanoseconds from int64 nanoseconds or anything DatetimeIndex accepts (naive times are UTC)."""
    if not (isinstance(times, np.ndarray) and times.dtype == np.int64):
        times = pd.DatetimeIndex(times).as_unit("ns").asi8  # epoch ns: UTC for tz-aware times
    return np.ascontiguousarray(times)


def _check_initial(initial_amount: float | None) -> None:
    if initial_amount is not None and not initial_amount > 0:
        raise ValueError(f"initial_amount must be positive, got {initial_amount}")


def _check_risk_free(risk_free_rate: float) -> None:
    if not risk_free_rate > -1:
        raise ValueError(f"risk_free_rate must be greater than -1, got {risk_free_rate}")


def _check_periods(periods_per_year: float) -> None:
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be positive, got {periods_per_year}")


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
    summary = _scan_curve(curve, initial, stamps, t0, rf_bar, -np.inf, np.empty(_CURVE_WORK_SIZE), np.empty(_N_FLOATS),
                          np.empty(_N_COUNTS, dtype=np.int64), np.empty(_LANES), no_periods, np.empty(0), no_periods,
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
