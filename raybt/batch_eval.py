"""Evaluate many jobs at once: the signals of every job of a group, then ONE compiled call that simulates and scores
them all (many signal columns in, one metrics matrix out).

A *group* is the jobs of a batch that share a strategy class, a date range, a symbol (or all symbols) and a warm-up:
they see the same market view and the same range calendar, so their only differences are their signals and their
trading rules (``size``, ``direction``, stops), which travel as per-job arrays. The per-job Python left is the user's
``signals()`` call and its conversion (:func:`raybt.strategy.signal_arrays`), or nothing at all when the class has a
vectorised :meth:`~raybt.strategy.Strategy.signals_many` hook.

Rules:

* **Bit-identical.** :func:`_evaluate_jobs_source` runs, job by job, the very kernels the one-by-one path runs
  (:func:`raybt.engine.simulate`'s bar loop with a :class:`~raybt.metrics.CurveScan`, then the scan's row), on
  arrays of the same types, with the same var/cvar retry (a job whose tail quantile lies above the limit the
  previous job suggested runs again with every return kept). Its rows equal :func:`raybt.backtest.evaluate`'s bit
  for bit (``tests/test_batch_eval.py``).
* **Errors stay per job.** A job whose ``signals()`` raises or returns something unusable gets its own error text;
  its neighbours run. A failing ``signals_many`` hook makes the group fall back to per-instance ``signals()`` (so a
  parameter set that breaks the hook fails alone); a hook whose output has the wrong shape, or disagrees with
  ``signals()`` on the group's first job, is a :class:`~raybt.strategy.SignalError` for every job of the group:
  a hook that computes other signals than the strategy's own would be silently wrong.
* **Durations.** A job's ``duration`` is its own ``signals()`` time plus an equal share of the group's compiled
  call (with a hook: an equal share of the whole group).
"""

from __future__ import annotations

import operator
import time
import traceback
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from raybt.backtest import RangeContext, range_context
from raybt.data import DateRange, MarketData
from raybt.engine import DIRECTION_CODES, Workspace, kernel_input
from raybt import _accel
from raybt._kernel.state import POS
from raybt.engine import _simulate_any, _simulate_one_symbol  # the bar loop, not its wrapper
from raybt.metrics import _LIMIT_FACTOR, METRIC_NAMES, _rf_per_bar, _scan_row, _scan_start
from raybt.metrics.compute import _VAR_95
from raybt.plan import RESULTS_VERSION, RunSettings
from raybt.strategy import SignalError, Strategy, signal_arrays

_TRACEBACK_CHARS = 2_000
_RULES = ("size", "stop_loss", "take_profit", "trailing_stop", "direction")
_RULES_OF = operator.attrgetter(*_RULES)
_RULE_SET = frozenset(_RULES)
_SIGNAL_BYTES = 32 * 2**20
"""Signals of at most this many bytes (entries and exits together) are stacked for one compiled call; a larger group
(many symbols × long ranges) is cut into chunks."""


def describe_error(exc: BaseException) -> str:
    """A job's error text: the exception type, message and the tail of its traceback."""
    tail = "".join(traceback.format_exception(exc)[-4:])
    return f"{type(exc).__name__}: {exc}\n{tail[-_TRACEBACK_CHARS:]}"


@dataclass
class GroupResult:
    """``metrics[i]`` are the :data:`~raybt.metrics.METRIC_NAMES` values of the group's job ``i`` (NaN when it
    failed, with ``errors[i]`` set); ``durations[i]`` in seconds (see the module docstring)."""

    metrics: np.ndarray
    errors: list[str | None]
    durations: np.ndarray


def evaluate_group(strategies: Sequence[Strategy], market: MarketData, date_range: DateRange | None,
                   settings: RunSettings, workspace: Workspace) -> GroupResult:
    """Evaluate strategies of one class and one warm-up on one range of ``market`` (the data of one symbol, or of
    every symbol as one portfolio). Rows are those :func:`raybt.backtest.evaluate` gives, bit for bit."""
    n = len(strategies)
    result = GroupResult(np.full((n, len(METRIC_NAMES)), np.nan), [None] * n, np.zeros(n))
    started = time.perf_counter()
    try:
        ctx = range_context(market, date_range, int(strategies[0].warmup), settings.periods_per_year)
    except Exception as exc:  # noqa: BLE001 - e.g. a per-symbol job whose symbol has no bar in the range
        result.errors[:] = [describe_error(exc)] * n
        result.durations[:] = (time.perf_counter() - started) / n
        return result
    per_chunk = max(1, _SIGNAL_BYTES // (2 * len(market.symbols) * len(ctx.view)))
    for first in range(0, n, per_chunk):
        part = slice(first, min(n, first + per_chunk))
        _evaluate_chunk(strategies[part], market, ctx, settings, workspace, result, part)
    return result


def _evaluate_chunk(strategies: Sequence[Strategy], market: MarketData, ctx: RangeContext, settings: RunSettings,
                    workspace: Workspace, result: GroupResult, part: slice) -> None:
    """Signals of every job (the hook's or each ``signals()``), stacked ``(jobs, symbols, bars)``, then the compiled
    call; the rows go to ``result`` at ``part``."""
    started = time.perf_counter()
    n, n_signal_bars = len(strategies), len(ctx.view)
    ok = np.zeros(n, dtype=np.bool_)
    errors: list[str | None] = [None] * n
    own_time = np.zeros(n)
    signals = _signals_from_hook(strategies, ctx, len(market.symbols), ok, errors)
    hooked = signals is not None
    if signals is not None:
        entries, exits = signals
    else:
        entries = np.empty((n, len(market.symbols), n_signal_bars), dtype=np.bool_)
        exits = np.empty_like(entries)
        for j, strategy in enumerate(strategies):
            signal_started = time.perf_counter()
            try:
                entries[j], exits[j] = signal_arrays(strategy, ctx.view)
                ok[j] = True
            except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error row
                errors[j] = describe_error(exc)
            own_time[j] = time.perf_counter() - signal_started
    compiled_started = time.perf_counter()
    metrics = np.full((n, len(METRIC_NAMES)), np.nan)
    _run_compiled(strategies, market, ctx, settings, workspace, entries, exits, ok, metrics)
    shared = (time.perf_counter() - (started if hooked else compiled_started)) / n
    result.metrics[part] = metrics
    result.errors[part] = errors
    result.durations[part] = own_time + shared


def _signals_from_hook(strategies: Sequence[Strategy], ctx: RangeContext, n_symbols: int, ok: np.ndarray,
                       errors: list[str | None]) -> tuple[np.ndarray, np.ndarray] | None:
    """The stacked ``(entries, exits)``, ``(sets, 1, bars)``, from the class's ``signals_many`` hook (one-symbol data
    only), called on at most ``signals_many_cells`` bars × sets at a time (see :class:`~raybt.strategy.Strategy`);
    None when the per-instance path must run instead (no hook, several symbols, or the hook raised). A hook that
    covers the chunk in one call and returns each set's column contiguous (:func:`raybt.indicators.pair_crossings`
    does) hands its arrays over without a copy."""
    cls = type(strategies[0])
    if not has_own_hook(cls) or n_symbols != 1:
        return None
    n, n_bars = len(strategies), len(ctx.view)
    try:
        per_call = max(1, _hook_cells(cls) // max(1, n_bars))
        if per_call >= n:
            many = _call_hook(cls, ctx, strategies)
            if many is None:
                return None
            signals = _stacked(many[0]), _stacked(many[1])
        else:
            signals = np.empty((n, 1, n_bars), dtype=np.bool_), np.empty((n, 1, n_bars), dtype=np.bool_)
            for first in range(0, n, per_call):
                part = slice(first, min(n, first + per_call))
                many = _call_hook(cls, ctx, strategies[part])
                if many is None:
                    return None
                _copy_sets(many[0], signals[0][part, 0, :])
                _copy_sets(many[1], signals[1][part, 0, :])
        _check_hook_agrees(strategies[0], ctx, signals[0][0], signals[1][0])
    except SignalError as exc:
        errors[:] = [describe_error(exc)] * n
        return np.empty((n, 1, n_bars), dtype=np.bool_), np.empty((n, 1, n_bars), dtype=np.bool_)  # never read
    ok[:] = True
    return signals


def _call_hook(cls: type[Strategy], ctx: RangeContext,
               strategies: Sequence[Strategy]) -> tuple[np.ndarray, np.ndarray] | None:
    """The hook's checked ``(entries, exits)`` for ``strategies``, each ``(bars, sets)``; None if it raised (a
    parameter set that breaks the hook must fail alone: the caller falls back to ``signals()`` per set)."""
    try:
        many = cls.signals_many(ctx.view, _params_frame(cls, strategies))
    except Exception:  # noqa: BLE001 - see the docstring
        return None
    return _hook_arrays(cls, many, len(ctx.view), len(strategies))


def _hook_cells(cls: type[Strategy]) -> int:
    """The class's ``signals_many_cells``, checked: a positive int, else a :class:`SignalError` naming it."""
    cells = cls.signals_many_cells
    if isinstance(cells, bool) or not isinstance(cells, int) or cells < 1:
        raise SignalError(f"{cls.__qualname__}.signals_many_cells must be a positive int (bars × parameter sets per "
                          f"signals_many call), got {cells!r}")
    return cells


def _params_frame(cls: type[Strategy], strategies: Sequence[Strategy]) -> pd.DataFrame:
    """The hook's ``params``: one row per strategy (index 0, 1, ...), one column per parameter of ``cls``, with the
    dtypes pandas infers from the values (int64, float64, bool, str, object)."""
    names = list(cls._param_types)
    columns = [_param_column([s._params[name] for s in strategies]) for name in names]
    index = pd.RangeIndex(len(strategies))
    if columns and all(isinstance(c, np.ndarray) and c.dtype == columns[0].dtype for c in columns):
        # one numpy block: pandas builds it several times faster than a frame of separate columns
        return pd.DataFrame(np.stack(columns, axis=1), index=index, columns=names)
    return pd.DataFrame(dict(zip(names, columns)), index=index, columns=names)


def _param_column(values: list) -> np.ndarray | list:
    """``values`` as the numpy array pandas would infer when they are all ints (fitting int64) or all floats (built
    by numpy, at a fraction of pandas' per-value inference), else the list itself for pandas to infer."""
    kinds = set(map(type, values))
    if kinds == {float}:
        return np.array(values, dtype=np.float64)
    if kinds == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:  # pandas' choice (uint64 or object) then
            return values
    return values


_TRANSPOSE_BARS = 512
"""Bars per block of :func:`_copy_sets`' transposing copy: a block of (bars, sets) rows is read while it is in the
CPU caches."""
_CACHED_CELLS = 2**18
"""Signals of at most this many bars × sets (256 KiB) stay in the CPU caches: :func:`_copy_sets` copies them in one
go whatever their layout."""


def _stacked(signals: np.ndarray) -> np.ndarray:
    """A hook's ``(bars, sets)`` ``signals`` as stacked ``(sets, 1, bars)`` signals: a view when each set's column is
    contiguous, else a copy."""
    rows = signals.T
    if rows.flags.c_contiguous:
        return rows.reshape(rows.shape[0], 1, rows.shape[1])
    stacked = np.empty((rows.shape[0], 1, rows.shape[1]), dtype=np.bool_)
    _copy_sets(signals, stacked[:, 0, :])
    return stacked


def _copy_sets(signals: np.ndarray, into: np.ndarray) -> None:
    """Copy a hook's ``(bars, sets)`` ``signals`` into ``into``, ``(sets, bars)`` with contiguous rows. One
    contiguous copy when each set's column is contiguous (Fortran order); otherwise, for signals larger than the CPU
    caches, a block of bars at a time, so a C-ordered result is not read across all of its memory once per set."""
    rows = signals.T
    if rows.flags.c_contiguous or rows.size <= _CACHED_CELLS:
        into[...] = rows
        return
    for first in range(0, rows.shape[1], _TRANSPOSE_BARS):
        into[:, first:first + _TRANSPOSE_BARS] = rows[:, first:first + _TRANSPOSE_BARS]


def has_own_hook(cls: type[Strategy]) -> bool:
    """Whether ``cls`` has a ``signals_many`` hook that speaks for its ``signals()``: one defined by the class that
    defines ``signals()`` or by a subclass of it. A subclass that overrides ``signals()`` and inherits the hook
    does not use it (the inherited hook computes its parent's signals)."""
    if getattr(cls, "signals_many", None) is None:
        return False
    hook_owner = next(k for k in cls.__mro__ if "signals_many" in vars(k))
    signals_owner = next(k for k in cls.__mro__ if "signals" in vars(k))
    return issubclass(hook_owner, signals_owner)


def _hook_arrays(cls: type, many: object, n_bars: int, n_sets: int) -> tuple[np.ndarray, np.ndarray]:
    """The hook's ``(entries, exits)`` as boolean ``(bars, sets)`` arrays, or a :class:`SignalError` naming the
    class."""
    if not isinstance(many, tuple) or len(many) != 2:
        raise SignalError(f"{cls.__qualname__}.signals_many must return a tuple (entries, exits), got "
                          f"{type(many).__name__}")
    arrays = []
    for what, signal in zip(("entries", "exits"), many):
        values = np.asarray(signal)
        if values.dtype != np.bool_ or values.shape != (n_bars, n_sets):
            raise SignalError(f"{cls.__qualname__}.signals_many {what} must be boolean of shape (bars, parameter "
                              f"sets) = ({n_bars}, {n_sets}), got {values.dtype} {values.shape}")
        arrays.append(values)
    return arrays[0], arrays[1]


def _check_hook_agrees(strategy: Strategy, ctx: RangeContext, entries: np.ndarray, exits: np.ndarray) -> None:
    """The hook's signals of the group's first parameter set must be those of ``signals()`` (one call per group, a
    cheap guard against a hook that drifted from the strategy it speeds up)."""
    own_entries, own_exits = signal_arrays(strategy, ctx.view)
    for what, hook, own in (("entries", entries, own_entries), ("exits", exits, own_exits)):
        if not np.array_equal(hook, own):
            bar = int(np.argmax(np.any(hook != own, axis=0)))
            raise SignalError(f"{type(strategy).__qualname__}.signals_many {what} differ from {strategy!r}.signals() "
                              f"at bar {ctx.view.index[bar]}: the hook must compute the same signals")


def _run_compiled(strategies: Sequence[Strategy], market: MarketData, ctx: RangeContext, settings: RunSettings,
                  workspace: Workspace, entries: np.ndarray, exits: np.ndarray, ok: np.ndarray,
                  metrics: np.ndarray) -> None:
    """Simulate and score every job with ``ok`` set in one compiled call (:func:`_evaluate_jobs_source`), into
    ``metrics``."""
    if not ok.any():
        return
    costs, n_bars, n_symbols = settings.costs, ctx.end - ctx.start, len(market.symbols)
    scan = workspace.scan
    scan.begin(ctx.calendar, costs.initial_amount, settings.risk_free_rate, exact=True)  # checks and sizes its arrays
    scan_arrays = scan.take(n_bars)
    curve, trades = workspace.buffers(n_bars, n_symbols, keep_curve=False)
    rf_bar = 0.0 if settings.risk_free_rate == 0 else _rf_per_bar(float(settings.risk_free_rate),
                                                                   ctx.calendar.periods_per_year)
    rules, directions = _trading_rules(strategies)
    evaluate_jobs = _evaluate_jobs_one_symbol if n_symbols == 1 else _evaluate_jobs_any
    evaluate_jobs(market.open, market.high, market.low, market.close, kernel_input(entries, np.bool_),
                   kernel_input(exits, np.bool_), ok, ctx.start, n_bars,
                   ctx.start - ctx.signal_start, costs.initial_amount, np.ascontiguousarray(rules[:, 0]), directions,
                   costs.fees, costs.fixed_fee, costs.slippage, costs.fill == "next_open",
                   np.ascontiguousarray(rules[:, 1]), np.ascontiguousarray(rules[:, 2]),
                   np.ascontiguousarray(rules[:, 3]), curve, trades, np.zeros((len(POS), n_symbols)),
                   np.zeros((2, n_symbols), dtype=np.bool_), scan.values, scan.slots, scan_arrays, rf_bar,
                   ctx.calendar.periods_per_year, ctx.calendar.buy_and_hold_return, metrics)


def _evaluate_jobs_source(open_, high, low, close, entries, exits, ok, bar0, n_bars, sig0, initial, sizes, directions,
                          fees, fixed_fee, slippage, next_open, stop_losses, take_profits, trailing_stops, curve,
                          trades, state, pending, values, slots, scan, rf_bar, periods_per_year, buy_and_hold, out):
    """For each job ``j`` with ``ok[j]``: the bar loop (``_simulate``, bound per variant by
    :func:`_compile_evaluate_jobs`) over ``entries[j]``/``exits[j]`` with the job's rules, the curve scan, and its
    row into ``out[j]`` (the :data:`~raybt.metrics.METRIC_NAMES` values). The var/cvar limit
    follows :class:`~raybt.metrics.CurveScan`: the first job keeps every return, each next one starts from the
    previous one's var per unit of size, and runs again with every return kept if its quantile is not below it."""
    times, month_last, months, year_last, years, stats, counts, returns, tail = scan
    t0 = times[0] if times.size else 0
    unit_limit = np.inf
    n_values = out.shape[1] - 1
    for j in range(entries.shape[0]):
        if not ok[j]:
            continue
        size = sizes[j]
        limit = unit_limit * size
        while True:
            _scan_start(initial, t0, rf_bar, limit, values, stats, counts)
            state[:] = 0.0
            pending[:] = False
            n_trades, in_market, unfunded = _simulate(
                open_, high, low, close, entries[j], exits[j], bar0, n_bars, sig0, initial, size, directions[j], fees,
                fixed_fee, slippage, next_open, stop_losses[j], take_profits[j], trailing_stops[j], curve, trades,
                state, pending, values, slots, scan)
            found, row = _scan_row(stats, counts, tail, values, times, months, years, trades[:n_trades], in_market,
                                   initial, periods_per_year, buy_and_hold)
            if found:
                break
            limit = np.inf
        for k in range(n_values):
            out[j, k] = row[k]
        out[j, n_values] = float(unfunded)
        var = row[_VAR_95]
        unit_limit = var * _LIMIT_FACTOR / size if var < 0.0 else np.inf


def _compile_evaluate_jobs(variant: str, simulate: Any):
    """:func:`_evaluate_jobs_source` compiled with ``simulate`` as its bar loop (``_simulate`` in its globals), one
    function per variant of :mod:`raybt.engine`'s kernel, so that data of one symbol never compiles the bar loop of
    several (each takes seconds to compile). numba's disk cache of a function is invalidated by its own file only,
    not by the kernels it links in (the bar loop, the scan): the compiled function's name carries raybt's results
    version, so any change of raybt's computing code compiles it anew, and the acceleration mode (raybt._accel), so
    the fast and portable kernels it links in never share a cache entry."""
    name = f"_evaluate_jobs_{variant}_{RESULTS_VERSION}_{_accel.MODE}"
    func = types.FunctionType(_evaluate_jobs_source.__code__, {**globals(), "_simulate": simulate}, name)
    func.__qualname__ = func.__name__
    return njit(cache=True)(func)


_evaluate_jobs_one_symbol = _compile_evaluate_jobs("1", _simulate_one_symbol)
_evaluate_jobs_any = _compile_evaluate_jobs("any", _simulate_any)


def _trading_rules(strategies: Sequence[Strategy]) -> tuple[np.ndarray, np.ndarray]:
    """Each job's ``(size, stop_loss, take_profit, trailing_stop)`` as float64, the way :func:`raybt.engine.simulate`
    takes them (None, i.e. off, is NaN; any other number ``float(value)``), and its direction code. One read for the
    whole group when every instance has its class's rules (:func:`_rules_of_class`), else one per job."""
    n = len(strategies)
    shared = _rules_of_class(type(strategies[0]))
    if shared is not None:
        return (np.tile(np.array(shared[:4], dtype=np.float64), (n, 1)),
                np.full(n, DIRECTION_CODES[shared[4]], dtype=np.int64))
    values = list(map(_RULES_OF, strategies))
    rules = np.array([row[:4] for row in values], dtype=np.float64).reshape(n, 4)
    directions = np.fromiter((DIRECTION_CODES[row[4]] for row in values), dtype=np.int64, count=n)
    return rules, directions


def _rules_of_class(cls: type[Strategy]) -> tuple | None:
    """The trading rules every instance of ``cls`` has, or None when instances may differ: a rule that is a
    parameter, a rule computed per instance (a property or any other descriptor), or a class with its own
    ``__init__`` (which may set attributes of its own)."""
    if cls.__init__ is not Strategy.__init__ or not _RULE_SET.isdisjoint(cls._param_types):
        return None
    values = []
    for name in _RULES:
        owner = next(k for k in cls.__mro__ if name in vars(k))
        value = vars(owner)[name]
        if hasattr(type(value), "__get__"):
            return None
        values.append(value)
    return tuple(values)

