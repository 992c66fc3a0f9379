"""A batch of jobs, as executed by a worker (in-process or a Ray task), and its compact result.

A worker receives the market data (zero-copy from Ray's object store), the run settings and a :class:`Batch`, runs
signals → simulation → metrics for its jobs (group by group, see :mod:`raybt.batch_eval`), and returns a
:class:`BatchResult`: a float64 metrics matrix, error texts and timings, and — for a sweep's batches, which carry
their jobs' keys and strategy ids — the result rows themselves as an Arrow record batch
(:func:`raybt.result_rows.job_rows`), so the driver only concatenates and writes them. No equity curves (except
for replays) or pickled strategy instances travel: a batch is pickled as its strategy classes, once each, and
parameter columns (:func:`_pack_strategies`).
"""

from __future__ import annotations

import cProfile
import operator
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa

from raybt._accel.collector import cyclic_gc_paused
from raybt._accel.malloc import keep_freed_memory
from raybt.backtest import evaluate
from raybt.batch_eval import describe_error, evaluate_group
from raybt.data import DateRange, MarketData
from raybt.engine import Workspace
from raybt.metrics import METRIC_NAMES
from raybt.permute import Permutation, permuted_market
from raybt.plan import RunSettings
from raybt.result_rows import _first_seen, _identities, job_rows
from raybt.strategy import Strategy, _rebuilt


@dataclass(frozen=True)
class Batch:
    """Jobs ``jobs`` (positions in the plan) with their strategies, date ranges and symbols (None: every symbol of
    the data as one portfolio; a name: that symbol's data alone). With ``keep_curves`` (replaying stored rows) each
    job's equity curve comes back too. A sweep's batches also carry each job's ``keys`` and ``strategy_ids`` (from
    the plan, computed once per strategy): the worker then returns the result rows (:attr:`BatchResult.rows`).
    ``permutations`` (a permutation test's batch) names, per job, the ``(seed, i)`` of the permuted market it runs
    on (None: the real data); the worker builds that market itself.

    Pickled compactly (what a Ray task carries): each strategy class once and the parameters of each distinct
    strategy object as columns, not one pickled instance per job; the worker rebuilds each instance once (as
    ``cls(**params)`` would, without checking the values again), and jobs that shared an object share the rebuilt
    one."""

    jobs: np.ndarray
    strategies: list[Strategy]
    date_ranges: list[DateRange | None]
    symbols: list[str | None]
    keep_curves: bool = False
    keys: np.ndarray | None = None
    strategy_ids: list[str] | None = None
    permutations: list[Permutation | None] | None = None

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half of the jobs (a batch of at least two), to find a job that crashes its
        worker by bisection."""
        middle = len(self.jobs) // 2
        return self._part(slice(None, middle)), self._part(slice(middle, None))

    def _part(self, part: slice) -> Batch:
        return replace(self, jobs=self.jobs[part], strategies=self.strategies[part],
                       date_ranges=self.date_ranges[part], symbols=self.symbols[part],
                       keys=None if self.keys is None else self.keys[part],
                       strategy_ids=None if self.strategy_ids is None else self.strategy_ids[part],
                       permutations=None if self.permutations is None else self.permutations[part])

    def __reduce__(self) -> tuple:
        return (_unpack_batch, (self.jobs, _pack_strategies(self.strategies), self.date_ranges, self.symbols,
                                self.keep_curves, self.keys, self.strategy_ids, self.permutations))


def _pack_strategies(strategies: list[Strategy]) -> tuple[tuple[type[Strategy], ...], np.ndarray, list[list],
                                                            np.ndarray]:
    """``(classes, class_index, values, strategy_index)``: of the distinct strategy objects (a strategy's jobs on
    several ranges share its object), the distinct classes, each one's position among them and per class the
    columns of its parameter values (in the order of the class's parameters); and each job's position among the
    distinct objects. Objects are told apart by identity, with one sort (not a dict look-up per job: the driver
    packs every task)."""
    strategy_index, first = _first_seen(_identities(strategies))
    distinct = list(map(strategies.__getitem__, first.tolist()))
    classes: dict[type[Strategy], int] = {}
    class_index = np.fromiter((classes.setdefault(type(s), len(classes)) for s in distinct), dtype=np.int32,
                              count=len(distinct))
    values: list[list] = []
    for cls, position in classes.items():
        members = [s._params for s, c in zip(distinct, class_index.tolist()) if c == position]
        values.append([[params[name] for params in members] for name in cls._param_types])
    return tuple(classes), class_index, values, strategy_index.astype(np.int32)


def _unpack_strategies(classes: tuple[type[Strategy], ...], class_index: np.ndarray, values: list[list],
                       strategy_index: np.ndarray) -> list[Strategy]:
    """The instances :func:`_pack_strategies` packed, in job order (each distinct one built once)."""
    per_class = []
    for position, (cls, columns) in enumerate(zip(classes, values)):
        rows = zip(*columns) if columns else [()] * int(np.count_nonzero(class_index == position))
        per_class.append(iter(_rebuilt(cls, rows)))
    distinct = [next(per_class[c]) for c in class_index]
    return [distinct[i] for i in strategy_index.tolist()]


def _unpack_batch(jobs, packed, date_ranges, symbols, keep_curves, keys, strategy_ids, permutations) -> Batch:
    with cyclic_gc_paused():  # one object per strategy, in a burst (see raybt._accel.collector)
        strategies = _unpack_strategies(*packed)
    return Batch(jobs, strategies, date_ranges, symbols, keep_curves, keys, strategy_ids, permutations)


@dataclass
class BatchResult:
    """``metrics[i]`` are the :data:`~raybt.metrics.METRIC_NAMES` values of job ``jobs[i]`` (NaN when it failed, with
    ``errors[i]`` set to the exception type, message and traceback tail); ``durations[i]`` in seconds;
    ``curves[i]`` the equity curve of job ``jobs[i]`` (empty if it failed) when the batch asked for curves;
    ``rows`` the result rows (:func:`raybt.result_rows.job_rows`) when the batch carried keys."""

    jobs: np.ndarray
    metrics: np.ndarray
    errors: list[str | None]
    durations: np.ndarray
    worker: str = ""
    profile: dict | None = field(default=None, repr=False)
    curves: list[np.ndarray] | None = field(default=None, repr=False)
    rows: pa.RecordBatch | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, batch: Batch, error: str, worker: str = "", market: MarketData | None = None) -> BatchResult:
        """Every job of ``batch`` failed with ``error`` (e.g. its worker process died): NaN metrics; with the
        ``market`` its rows too, when the batch carried keys."""
        n = len(batch.jobs)
        result = cls(batch.jobs, np.full((n, len(METRIC_NAMES)), np.nan), [error] * n, np.zeros(n), worker)
        if market is not None and batch.keys is not None:
            result.rows = job_rows(batch, result, market)
        return result

    def without(self, positions: list[int]) -> BatchResult:
        """The same result minus the jobs at ``positions`` (e.g. the failed ones)."""
        keep = np.ones(len(self.jobs), dtype=bool)
        keep[positions] = False
        return BatchResult(self.jobs[keep], self.metrics[keep], [e for e, k in zip(self.errors, keep) if k],
                           self.durations[keep], self.worker,
                           rows=None if self.rows is None else self.rows.filter(pa.array(keep)))


_MARKETS: dict[str, MarketData] = {}
_WARMUP_OF = operator.attrgetter("warmup")


def _shared_market(market: MarketData) -> MarketData:
    """The first market object this process saw with the same fingerprint, so per-range views and cached
    indicators are shared by every task a worker runs, not rebuilt for each task's freshly deserialised copy."""
    known = _MARKETS.get(market.fingerprint)
    if known is None:
        if len(_MARKETS) >= 2:
            _MARKETS.clear()
        _MARKETS[market.fingerprint] = known = market
    return known


def run_batch(market: MarketData, batch: Batch, settings: RunSettings, profile: bool = False,
              worker: str = "") -> BatchResult:
    """Run every job of ``batch``; exceptions of a job become its error text (they never abort the batch).

    Jobs that share a strategy class, a warm-up, a date range and a symbol are evaluated together, one compiled
    call per group (:func:`raybt.batch_eval.evaluate_group`); replays (``keep_curves``) run one by one, keeping each
    equity curve."""
    keep_freed_memory()  # a batch's large temporaries reuse freed memory (raybt._accel.malloc)
    market = _shared_market(market)
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    if batch.keep_curves:
        result = _run_one_by_one(market, batch, settings, worker)
    else:
        result = _run_grouped(market, batch, settings, worker)
    if batch.keys is not None:
        result.rows = job_rows(batch, result, market)
    if profiler is not None:
        profiler.disable()
        profiler.create_stats()
        result.profile = profiler.stats
    return result


def _run_grouped(market: MarketData, batch: Batch, settings: RunSettings, worker: str) -> BatchResult:
    n = len(batch.jobs)
    metrics = np.full((n, len(METRIC_NAMES)), np.nan)
    errors: list[str | None] = [None] * n
    durations = np.zeros(n)
    permutations = batch.permutations or [None] * n
    groups: dict[tuple, list[int]] = {}
    for i, group in enumerate(zip(map(type, batch.strategies), map(_WARMUP_OF, batch.strategies), batch.date_ranges,
                                  batch.symbols, permutations)):
        groups.setdefault(group, []).append(i)
    workspace = Workspace()
    for (_, _, date_range, symbol, permutation), positions in groups.items():
        try:
            data = _job_market(market, date_range, symbol, permutation)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the jobs' error rows
            for i in positions:
                errors[i] = describe_error(exc)
            continue
        group = evaluate_group([batch.strategies[i] for i in positions], data, date_range, settings, workspace)
        metrics[positions] = group.metrics
        durations[positions] = group.durations
        for i, error in zip(positions, group.errors):
            errors[i] = error
    return BatchResult(batch.jobs, metrics, errors, durations, worker)


def _job_market(market: MarketData, date_range: DateRange | None, symbol: str | None,
                permutation: Permutation | None) -> MarketData:
    """The data a job runs on: the market, or its permuted version, restricted to ``symbol`` if it names one."""
    data = market if permutation is None else permuted_market(market, date_range, permutation)
    return data if symbol is None else data.symbol_data(symbol)


def _run_one_by_one(market: MarketData, batch: Batch, settings: RunSettings, worker: str) -> BatchResult:
    """Each job through :func:`raybt.backtest.evaluate`, keeping its equity curve (empty if it failed)."""
    n = len(batch.jobs)
    metrics = np.full((n, len(METRIC_NAMES)), np.nan)
    errors: list[str | None] = [None] * n
    durations = np.zeros(n)
    curves: list[np.ndarray] = []
    permutations = batch.permutations or [None] * n
    for i, (strategy, date_range, symbol) in enumerate(zip(batch.strategies, batch.date_ranges, batch.symbols)):
        started = time.perf_counter()
        try:
            data = _job_market(market, date_range, symbol, permutations[i])
            metrics[i], sim, _ = evaluate(strategy, data, date_range, settings.costs, settings.periods_per_year,
                                          settings.risk_free_rate)
            curves.append(sim.equity)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error row
            errors[i] = describe_error(exc)
            curves.append(np.empty(0))
        durations[i] = time.perf_counter() - started
    return BatchResult(batch.jobs, metrics, errors, durations, worker, curves=curves)
