"""A batch of jobs, as executed by a worker (in-process or a Ray task), and its compact result.

A worker receives the market data (zero-copy from Ray's object store), the run settings and a :class:`Batch`, runs
signals → simulation → metrics for each job, and returns a :class:`BatchResult`: a float64 metrics matrix plus error
texts and timings. No equity curves or pickled objects travel back; the driver knows each job's strategy and range
from the plan and builds the result rows itself.
"""

from __future__ import annotations

import cProfile
import time
import traceback
from dataclasses import dataclass, field, replace

import numpy as np

from raybt.backtest import evaluate
from raybt.data import DateRange, MarketData
from raybt.engine import Workspace
from raybt.metrics import METRIC_NAMES
from raybt.permute import Permutation, permuted_market
from raybt.plan import RunSettings
from raybt.strategy import Strategy

_TRACEBACK_CHARS = 2_000


@dataclass(frozen=True)
class Batch:
    """Jobs ``jobs`` (positions in the plan) with their strategies, date ranges and symbols (None: every symbol of
    the data as one portfolio; a name: that symbol's data alone). The strategy list is pickled once per batch (a
    strategy shared by several jobs of the batch is pickled once). With ``keep_curves`` (replaying stored rows) each
    job's equity curve comes back too. ``permutations`` (a permutation test's batch) names, per job, the
    ``(seed, i)`` of the permuted market it runs on (None: the real data); the worker builds that market itself."""

    jobs: np.ndarray
    strategies: list[Strategy]
    date_ranges: list[DateRange | None]
    symbols: list[str | None]
    keep_curves: bool = False
    permutations: list[Permutation | None] | None = None

    def halves(self) -> tuple[Batch, Batch]:
        """The first and second half of the jobs (a batch of at least two), to find a job that crashes its
        worker by bisection."""
        middle = len(self.jobs) // 2
        return self._part(slice(None, middle)), self._part(slice(middle, None))

    def _part(self, part: slice) -> Batch:
        return replace(self, jobs=self.jobs[part], strategies=self.strategies[part],
                       date_ranges=self.date_ranges[part], symbols=self.symbols[part],
                       permutations=None if self.permutations is None else self.permutations[part])


@dataclass
class BatchResult:
    """``metrics[i]`` are the :data:`~raybt.metrics.METRIC_NAMES` values of job ``jobs[i]`` (NaN when it failed, with
    ``errors[i]`` set to the exception type, message and traceback tail); ``durations[i]`` in seconds;
    ``curves[i]`` the equity curve of job ``jobs[i]`` (empty if it failed) when the batch asked for curves."""

    jobs: np.ndarray
    metrics: np.ndarray
    errors: list[str | None]
    durations: np.ndarray
    worker: str = ""
    profile: dict | None = field(default=None, repr=False)
    curves: list[np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, batch: Batch, error: str, worker: str = "") -> BatchResult:
        """Every job of ``batch`` failed with ``error`` (e.g. its worker process died): NaN metrics."""
        n = len(batch.jobs)
        return cls(batch.jobs, np.full((n, len(METRIC_NAMES)), np.nan), [error] * n, np.zeros(n), worker)

    def without(self, positions: list[int]) -> BatchResult:
        """The same result minus the jobs at ``positions`` (e.g. the failed ones)."""
        keep = np.ones(len(self.jobs), dtype=bool)
        keep[positions] = False
        return BatchResult(self.jobs[keep], self.metrics[keep], [e for e, k in zip(self.errors, keep) if k],
                           self.durations[keep], self.worker)


_MARKETS: dict[str, MarketData] = {}


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
    """Run every job of ``batch``; exceptions of a job become its error text (they never abort the batch)."""
    market = _shared_market(market)
    profiler = cProfile.Profile() if profile else None
    n = len(batch.jobs)
    metrics = np.full((n, len(METRIC_NAMES)), np.nan)
    errors: list[str | None] = [None] * n
    durations = np.zeros(n)
    workspace = None if batch.keep_curves else Workspace()  # without a workspace the curve is kept
    curves: list[np.ndarray] | None = [] if batch.keep_curves else None
    if profiler is not None:
        profiler.enable()
    permutations = batch.permutations or [None] * n
    for i, (strategy, date_range, symbol) in enumerate(zip(batch.strategies, batch.date_ranges, batch.symbols)):
        started = time.perf_counter()
        try:
            data = market if permutations[i] is None else permuted_market(market, date_range, permutations[i])
            data = data if symbol is None else data.symbol_data(symbol)
            metrics[i], sim, _ = evaluate(strategy, data, date_range, settings.costs, settings.periods_per_year,
                                          settings.risk_free_rate, workspace)
            if curves is not None:
                curves.append(sim.equity)
        except Exception as exc:  # noqa: BLE001 - every failure becomes the job's error row
            errors[i] = _describe(exc)
            if curves is not None:
                curves.append(np.empty(0))
        durations[i] = time.perf_counter() - started
    stats = None
    if profiler is not None:
        profiler.disable()
        profiler.create_stats()
        stats = profiler.stats
    return BatchResult(batch.jobs, metrics, errors, durations, worker, stats, curves)


def _describe(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(exc)[-4:])
    return f"{type(exc).__name__}: {exc}\n{tail[-_TRACEBACK_CHARS:]}"
