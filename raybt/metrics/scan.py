"""The block-wise scan of an equity curve: returns, their moments and tail, drawdowns, period ends."""

from __future__ import annotations

import math

import numpy as np

from raybt._accel.llvm import compress_below, float_from_bits
from raybt.metrics._base import (
    COUNT,
    STAT,
    _CURVE_BLOCK_BARS,
    _CURVE_VALUES_SIZE,
    _INT64_MAX,
    _INT64_MIN,
    _LANES_U,
    _ONE,
    _jit,
    _jit_scan,
)


@_jit_scan
def _scan_start(initial, t0, rf_bar, limit, values, stats, counts):
    """Reset a scan for a curve starting from ``initial`` (dated ``t0``, the first drawdown peak): the state arrays,
    and ``values[0]``, the equity before the first bar."""
    stats[:] = 0.0
    counts[:] = 0
    stats[STAT.first] = np.nan
    stats[STAT.rf_bar] = rf_bar
    stats[STAT.limit] = limit
    stats[STAT.peak] = initial
    stats[STAT.floor] = initial
    counts[COUNT.peak_bar] = -1
    counts[COUNT.peak_time] = t0
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
    peak ends at the peak, so its last bar becomes the peak bar. ``STAT.floor`` is the equity level that would deepen
    the max drawdown under the current peak (no division above it).
    """
    peak = stats[STAT.peak]
    worst = stats[STAT.worst]
    floor = stats[STAT.floor]
    peak_bar = counts[COUNT.peak_bar]
    peak_time = counts[COUNT.peak_time]
    longest = counts[COUNT.longest]
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
    stats[STAT.peak] = peak
    stats[STAT.worst] = worst
    stats[STAT.floor] = floor
    counts[COUNT.peak_bar] = peak_bar
    counts[COUNT.peak_time] = peak_time
    counts[COUNT.longest] = longest


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
    whose bars after the first repeat its equity: their zero returns are counted in ``COUNT.flat`` by the caller and
    added by :func:`_scan_summary`.

    The returns are ``r = equity / previous - 1``. A vectorised loop (:func:`_block_returns`) computes them into
    ``returns`` (work space of ``size + _LANES`` values), adds their deviations from the first return (shifted data:
    accurate, and identical returns give a standard deviation of exactly 0), their squares and their squared shortfalls
    below ``rf_bar`` to the sums, and finds the largest and smallest equity bit patterns (the divisions and the rest of
    the loop overlap). The returns below ``stats[STAT.limit]`` are appended to ``tail`` (room for ``counts[COUNT.tail] +
    size + _LANES`` values) by vector compress stores. Read as int64, the patterns of floats without sign bit order as
    the values (NaN above inf) and those with one are negative; so when the smallest pattern is not negative the two are
    the block's largest and smallest equity (integer min/max reductions vectorise, float ones do not). Only blocks with
    a value at or above the peak (or a negative or NaN equity) are walked run by run; one that only deepens the drawdown
    needs just its minimum (what the walk would find, value / peak being monotonic for the positive peak). The equity at
    month and year ends is recorded to ``month_values`` and ``year_values``.
    """
    if counts[COUNT.seen] == 0:
        stats[STAT.first] = values[1] / values[0] - 1.0
    n = np.uint64(size)
    sum_dev, sum_dev2, sum_down2, high, low = _block_returns(values, _ONE, n + _ONE, returns, stats[STAT.first],
                                                             stats[STAT.rf_bar])
    stats[STAT.sum_dev] += sum_dev
    stats[STAT.sum_dev2] += sum_dev2
    stats[STAT.sum_down2] += sum_down2
    counts[COUNT.tail] = np.int64(_append_below(returns, n, stats[STAT.limit], tail, np.uint64(counts[COUNT.tail])))
    highest = float_from_bits(high)
    lowest = float_from_bits(low)
    peak = stats[STAT.peak]
    if low < 0 or not highest < peak:
        if low >= 0 and lowest == peak and highest == peak:  # flat at the peak: only the peak bar moves
            first_bar = _run_start(slots, size, block_end, 0)
            if counts[COUNT.peak_bar] != first_bar - 1:
                counts[COUNT.longest] = max(counts[COUNT.longest], times[first_bar] - counts[COUNT.peak_time])
            counts[COUNT.peak_bar] = block_end - 1
            counts[COUNT.peak_time] = times[block_end - 1]
        else:
            _walk_drawdown(values, slots, size, block_end, times, stats, counts)
    elif lowest < stats[STAT.floor]:
        stats[STAT.worst] = min(stats[STAT.worst], lowest / peak - 1.0)
        stats[STAT.floor] = lowest
    counts[COUNT.month] = _record_periods(month_last, month_values, counts[COUNT.month], values, slots, size, block_end)
    counts[COUNT.year] = _record_periods(year_last, year_values, counts[COUNT.year], values, slots, size, block_end)
    counts[COUNT.seen] = block_end


@_jit
def _scan_summary(stats, counts, times):
    """``(mean(r), std(r, ddof=1), sqrt(mean(min(r - rf_bar, 0) ** 2)), max drawdown, longest drawdown in ns)`` of
    a finished scan, its ``COUNT.flat`` zero returns included; the deviations are NaN below 2 returns, everything is
    NaN without bars."""
    n = counts[COUNT.seen]
    if n == 0:
        return np.nan, np.nan, np.nan, np.nan, np.nan
    longest = counts[COUNT.longest]
    if counts[COUNT.peak_bar] != n - 1:
        longest = max(longest, times[n - 1] - counts[COUNT.peak_time])
    first = stats[STAT.first]
    n_flat = counts[COUNT.flat]
    down = min(-stats[STAT.rf_bar], 0.0)
    sum_dev = stats[STAT.sum_dev] - n_flat * first
    sum_dev2 = stats[STAT.sum_dev2] + n_flat * (first * first)
    sum_down2 = stats[STAT.sum_down2] + n_flat * (down * down)
    mean = first + sum_dev / n
    if n < 2:
        return mean, np.nan, np.nan, stats[STAT.worst], float(longest)
    var = max((sum_dev2 - sum_dev * sum_dev / n) / (n - 1), 0.0)
    return mean, math.sqrt(var), math.sqrt(sum_down2 / n), stats[STAT.worst], float(longest)


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


@_jit_scan
def _append_below(source, size, limit, out, count):
    """Append the values of ``source[:size]`` below ``limit`` to ``out`` from ``count`` on, in order (uint64 size
    and count; ``out`` has room for ``_LANES`` slots past the last value); return the new count."""
    whole = size // _LANES_U * _LANES_U
    for start in range(np.uint64(0), whole, _LANES_U):
        count += compress_below(source, start, out, count, limit)
    for i in range(whole, size):
        if source[i] < limit:
            out[count] = source[i]
            count += _ONE
    return count
