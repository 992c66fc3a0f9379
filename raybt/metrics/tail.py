"""The lower tail of the returns: quantile (as np.percentile) and mean below it, by selection."""

from __future__ import annotations

import math

import numpy as np

from raybt._accel.llvm import compress_split
from raybt.metrics._base import (
    COUNT,
    STAT,
    _LANES,
    _LANES_U,
    _ONE,
    _SAMPLED_SELECT_MIN,
    _SAMPLE_SIGMAS,
    _SAMPLE_SIZE,
    _SMALL_SELECT,
    _jit,
    _jit_vector,
)
from raybt.metrics.scan import _append_below


@_jit
def _minimum(values, size):
    """Smallest of ``values[:size]`` (uint64 ``size``); inf if empty."""
    lowest = np.inf
    for i in range(size):
        lowest = min(lowest, values[i])
    return lowest


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
        more_below, more_above = compress_split(source, start, pivot, below, n_below, above, n_above)
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


@_jit
def _collect_below(returns, limit, out):
    """Copy the returns below ``limit`` to ``out`` (in order; capacity ``returns.size + _LANES``); return how
    many."""
    return np.int64(_append_below(returns, np.uint64(returns.size), limit, out, np.uint64(0)))


@_jit
def _sum_at_most(values, limit):
    """``(sum, count)`` of the values <= ``limit``, added one after another in their order (no reassociation).

    The values come in time order whatever else was collected with them, so the sum of the same returns is the same
    bit for bit whichever limit collected them — a sweep's limit depends on the backtests before it; a lane-wise
    (vectorised) sum would group them by position and round differently, and a row would not replay exactly."""
    total = 0.0
    count = 0
    for i in range(values.size):
        value = values[i]
        at_most = value <= limit
        total += value if at_most else 0.0  # adding 0.0 leaves the sum unchanged (and avoids a branch)
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
    n = counts[COUNT.seen]
    k, k_next, gamma = _order_statistics(n, q)
    n_zeros = counts[COUNT.flat] if 0.0 < stats[STAT.limit] else 0
    collected = tail[: counts[COUNT.tail]]
    found, quantile, tail_mean = _tail_with_ties(collected, 0.0, n_zeros, k, k_next, gamma)
    if found or stats[STAT.limit] != np.inf:
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
