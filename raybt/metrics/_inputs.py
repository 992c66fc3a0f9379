"""Input normalisation and per-thread work space of the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from raybt import _records as rec
from raybt.metrics._base import TimesLike, _CURVE_WORK_SIZE, _LANES, _SCRATCH_KEPT, _thread_local


def _scratch_size(n_bars: int) -> int:
    """Values of scratch :func:`_equity_stats` needs for ``n_bars``: a block and twice room for the returns."""
    return _CURVE_WORK_SIZE + 2 * ((n_bars + 2 * _LANES - 1) // _LANES * _LANES)


def _scratch(size: int) -> np.ndarray:
    """Float64 work space of at least ``size`` values starting on a cache line (64 bytes), kept per thread up to
    _SCRATCH_KEPT values: writing a fresh array of that size would cost page faults on every call; larger ones are not
    kept (their page faults are small next to the rest of the work)."""
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
    """C-contiguous, read-only float64 1-D equity (a view of the input when it already is C-contiguous float64): a
    curve the kernel wrote, one read back from Parquet and a user's list then share one compiled version of each
    metric function instead of compiling one per writability."""
    array = np.ascontiguousarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"equity must be one-dimensional, got shape {array.shape}")
    return _readonly(array)


def _as_trades(trades: Any) -> np.ndarray:
    """C-contiguous, read-only float64 trade records (a view when the input already is C-contiguous float64; see
    :func:`_as_float_array`)."""
    array = np.ascontiguousarray(trades, dtype=np.float64)
    if array.size == 0:
        array = array.reshape(0, rec.N_TRADE_FIELDS)
    if array.ndim != 2 or array.shape[1] != rec.N_TRADE_FIELDS:
        raise ValueError(f"trades must have shape (n_trades, {rec.N_TRADE_FIELDS}), got {array.shape}")
    return _readonly(array)


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
