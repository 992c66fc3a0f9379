"""``run_backtests``: plan → skip what is stored → dispatch batches → collect rows into checkpoints → Results."""

from __future__ import annotations

import logging
import pstats
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

import raybt
from raybt._keys import contains
from raybt._progress import tqdm
from raybt.batch import Batch, BatchResult
from raybt.checkpoint import CheckpointError, CheckpointStore, CheckpointWarning, MemoryStore
from raybt.code_digest import refresh as refresh_code_digests
from raybt.data import DataLike, DateRange, MarketData, load_ohlcv
from raybt.engine import CostModel
from raybt.executors import LocalExecutor, hybrid
from raybt.permute import Permutation, permutations_record
from raybt.plan import Plan, RunSettings, plan_jobs
from raybt.resources import BatchSizer
from raybt.result_rows import concat_rows
from raybt.results import Results
from raybt.row_inputs import settings_record
from raybt.strategy import Strategy


class BacktestError(RuntimeError):
    """A job failed with ``continue_on_error=False``; the message names the strategy id, parameters and range."""


class FailedBacktestsWarning(UserWarning):
    """Some jobs of a sweep run with ``continue_on_error=True`` failed (their rows have ``error`` set)."""


def run_backtests(strategies: Iterable[Strategy], data: DataLike,
                  date_ranges: Iterable[DateRange | None] | DateRange | None = None, *,
                  initial_amount: float = 10_000, fees: float = 0.0, fixed_fee: float = 0.0, slippage: float = 0.0,
                  fill: str = "close", n_workers: int | None = None, batch_size: int | None = None,
                  checkpoint_dir: str | None = None, checkpoint_batch_size: int = 1000, show_progress: bool = True,
                  continue_on_error: bool = False, rerun_errors: bool = False, force: bool = False,
                  address: str | None = None,
                  profile: bool = False, periods_per_year: float | None = None,
                  risk_free_rate: float = 0.0, per_symbol: bool = False,
                  keep: int | Callable[[Results], object] | None = None,
                  _permutations: Sequence[Permutation | None] | None = None) -> Results:
    """Run every strategy on every date range and return :class:`~raybt.results.Results`.

    Execution: ``n_workers=None`` or ``1`` runs in this process without Ray; ``-1`` runs Ray tasks on every CPU of
    the Ray cluster; ``N`` runs at most N Ray tasks at once. ``address`` joins an existing Ray cluster (otherwise an
    initialised Ray, ``RAY_ADDRESS``, or a new local Ray is used). Where a local Ray would have to start, this
    process computes the first batches itself, starts Ray in the background only if the work left would take it
    more than ~10 s, and hands the remaining batches to Ray once Ray is up; a sweep done before that never waits for
    it (:mod:`raybt.executors.hybrid`; the rows are the same either way); ``address="local"`` starts the local Ray
    at once and runs every batch on it. Each task runs ``batch_size`` jobs;
    ``None`` (the default) sizes tasks from measured ones, to about 0.2-0.5 s of work each, sharing out the last
    jobs among the workers (:class:`raybt.resources.BatchSizer`).

    Checkpoints: with ``checkpoint_dir`` (a path or a pyarrow filesystem URI) every ``checkpoint_batch_size`` rows
    are written as one atomic Parquet part, and jobs already stored there (same strategy, range, data and settings)
    are skipped — rerun with ``rerun_errors=True`` to retry failed ones, or ``force=True`` to recompute every job
    (the new rows replace the stored ones: the newest row of a key wins). Without it, results stay in memory.

    Keys follow the code (see :mod:`raybt.plan`): editing the strategy, a helper or constant of your modules, or
    upgrading raybt to code that computes differently makes stored rows stale; bump a strategy's ``version`` class
    attribute for changes raybt cannot see (a data file it reads, an installed package).

    Errors: with ``continue_on_error=True`` a failing job yields a row with ``error`` set; with ``False`` the sweep
    stops at the first failure, keeps every finished row checkpointed and raises :class:`BacktestError`. On Ray, a
    job that kills its worker process (a crash in a C extension, ``os._exit``, Ray's OOM killer) is found by
    splitting its batch and fails with ``"worker process died: ..."``; in-process (``n_workers=None``/``1``) such a
    job kills this process itself, and only the parts already flushed survive.

    Interruption: on ``KeyboardInterrupt`` (Ctrl-C) every finished row is flushed to the checkpoint, and
    ``KeyboardInterrupt("interrupted: N of M backtests saved in DIR; run again to resume")`` is raised without the
    frames it interrupted (nothing is printed; the ``raybt`` command prints that line and exits with 130).

    Symbols: by default every strategy runs once per range on all the data's symbols together (one portfolio, one
    shared cash account). ``per_symbol=True`` runs it on each symbol's data alone instead (jobs = strategies ×
    symbols × ranges, a ``symbol`` column in the rows; the data is still validated and shipped once): "this rule on
    each of these 500 stocks".

    Costs and settings are those of :func:`raybt.run_backtest`; ``profile=True`` runs each batch under cProfile and
    puts the merged statistics in ``results.profile``.

    Staged sweep: with ``keep`` (top-k by Sharpe, or a callable given each stage's Results) the date ranges run one
    after another and only the strategies ``keep`` retains go on; see :mod:`raybt.stages` (returns its
    :class:`~raybt.stages.StagedResults`).

    ``_permutations`` is :func:`raybt.stats.permutation_test`'s: every job once per permuted market (see
    :func:`raybt.plan.plan_jobs`), recorded as such in the manifest.
    """
    if keep is not None:
        options = {k: v for k, v in locals().items() if k not in ("strategies", "data", "date_ranges", "keep")}
        from raybt.stages import run_staged  # after locals(): that holds only the arguments

        return run_staged(strategies, data, date_ranges, keep, **options)
    _check_sizes(n_workers, batch_size, checkpoint_batch_size)
    sizer = BatchSizer(batch_size)
    market = load_ohlcv(data)
    settings = RunSettings(CostModel(initial_amount, fees, fixed_fee, slippage, fill), periods_per_year,
                           risk_free_rate)
    if not isinstance(per_symbol, bool):
        raise TypeError(f"per_symbol must be True or False, got {per_symbol!r}")
    strategies = list(strategies)
    refresh_code_digests(type(s) for s in strategies)  # user code may have been edited and reloaded since
    plan = plan_jobs(strategies, date_ranges, market, settings, per_symbol, _permutations)
    store = CheckpointStore(checkpoint_dir, writer=True) if checkpoint_dir is not None else MemoryStore()
    todo = np.arange(len(plan)) if force else np.flatnonzero(~contains(store.done_keys(rerun_errors), plan.keys))
    n_skipped = len(plan) - len(todo)
    progress = tqdm(total=len(plan), initial=n_skipped, disable=not show_progress, unit="backtest",
                    desc="raybt", dynamic_ncols=True, smoothing=0.1)
    progress.set_postfix(skipped=n_skipped, errors=0)
    profiles: list[dict] = []
    try:
        if len(todo):
            executor = _executor(plan, market, settings, n_workers, address, profile)
            store.record_run({"raybt_version": raybt.__version__, "raybt_results_version": settings.results_version,
                              "data_fingerprint": market.fingerprint,
                              "settings": repr(settings), "run_settings": settings_record(settings),
                              "jobs": len(plan), "to_run": int(len(todo)),
                              "executor": type(executor).__name__, "n_workers": executor.n_workers,
                              **permutations_record(_permutations)})
            try:
                n_failed = _collect(_run(executor, plan, todo, sizer), plan, market, store,
                                    checkpoint_batch_size, continue_on_error, progress, n_skipped, profiles)
                rerun, n_failed_again = _rerun_lost_jobs(plan, store, lambda jobs: _collect(
                    _run(executor, plan, jobs, sizer), plan, market, store, checkpoint_batch_size,
                    continue_on_error, progress, n_skipped, profiles))
                n_failed += n_failed_again
                n_skipped -= int(np.count_nonzero(~np.isin(rerun, todo)))
            except KeyboardInterrupt:
                # Re-raised from here, without the frames (Ray's internals, the strategy) it interrupted.
                raise KeyboardInterrupt(_interrupted(plan, store)) from None
            finally:
                executor.close()
            if n_failed:
                warnings.warn(f"{n_failed} of {len(todo)} backtests failed (results.errors has their rows and "
                              f"tracebacks; rerun_errors=True retries them)", FailedBacktestsWarning, stacklevel=2)
    finally:
        progress.close()
    return Results(store, plan.keys, n_computed=len(plan) - n_skipped, n_skipped=n_skipped,
                   profile=merge_profiles(profiles) if profile else None, strategies=plan.strategies,
                   settings=settings, data_fingerprint=market.fingerprint)


def _check_sizes(n_workers: int | None, batch_size: int | None, checkpoint_batch_size: int) -> None:
    if n_workers is not None and (not isinstance(n_workers, int) or n_workers == 0 or n_workers < -1):
        raise ValueError(f"n_workers must be None, -1 (all CPUs) or a positive int, got {n_workers!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None (adaptive), got {batch_size!r}")
    if not isinstance(checkpoint_batch_size, int) or checkpoint_batch_size < 1:
        raise ValueError(f"checkpoint_batch_size must be a positive int, got {checkpoint_batch_size!r}")


def _executor(plan: Plan, market: MarketData, settings: RunSettings, n_workers: int | None, address: str | None,
              profile: bool):
    if n_workers in (None, 1) and address is None:
        return LocalExecutor(market, settings, profile)
    if hybrid.wanted(address):
        return hybrid.HybridExecutor(market, settings, profile, n_workers,
                                     lambda: _ray_executor(plan, market, settings, n_workers, None, profile))
    return _ray_executor(plan, market, settings, n_workers, address, profile)


def _ray_executor(plan: Plan, market: MarketData, settings: RunSettings, n_workers: int, address: str | None,
                  profile: bool):
    # `import ray` imports tqdm.auto, which warns "IProgress not found" in a kernel without ipywidgets, and logs at
    # INFO that those widgets are missing: neither is news to someone running a sweep
    logging.getLogger("ray.widgets").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from raybt.executors.ray_tasks import RayExecutor, check_picklable, ship_user_modules

    ship_user_modules(plan.strategies)
    check_picklable(plan.strategies)
    return RayExecutor(market, settings, n_workers=n_workers or -1, address=address, profile=profile)


def _run(executor, plan: Plan, todo: np.ndarray, sizer: BatchSizer) -> Iterator[BatchResult]:
    """Run the jobs ``todo`` on ``executor``; each finished batch's timing sizes the batches still to come."""
    for result in executor.run(_Batches(plan, todo, sizer, lambda: executor.n_workers)):
        sizer.observe(result.durations)
        yield result


class _Batches:
    """The batches of consecutive jobs of ``todo``, each sized when the executor asks for it; ``jobs_left`` counts
    the jobs not handed out yet (the hand-over executor estimates from it whether starting Ray pays)."""

    def __init__(self, plan: Plan, todo: np.ndarray, sizer: BatchSizer, n_workers: Callable[[], int]):
        self._plan, self._todo, self._sizer, self._n_workers = plan, todo, sizer, n_workers
        self._start = 0

    @property
    def jobs_left(self) -> int:
        return len(self._todo) - self._start

    def __iter__(self) -> _Batches:
        return self

    def __next__(self) -> Batch:
        if not self.jobs_left:
            raise StopIteration
        jobs = self._todo[self._start:self._start + self._sizer.next_size(self.jobs_left, self._n_workers())]
        self._start += len(jobs)
        plan = self._plan
        strategy_index = plan.strategy_index[jobs].tolist()
        return Batch(jobs, _picked(plan.strategies, strategy_index), _picked(plan.date_ranges, plan.range_index[jobs]),
                     _picked(plan.symbols, plan.symbol_index[jobs]), keys=plan.keys[jobs],
                     strategy_ids=_picked(plan.strategy_ids, strategy_index),
                     permutations=None if plan.permutation_index is None
                     else _picked(plan.permutations, plan.permutation_index[jobs]))


def _picked(values: Sequence, positions: np.ndarray | list[int]) -> list:
    """``[values[i] for i in positions]``, without a Python int made from a numpy one per position."""
    return list(map(values.__getitem__, positions.tolist() if isinstance(positions, np.ndarray) else positions))


_LOST_JOB_ROUNDS = 3
"""How many times lost jobs are run again within one call before the sweep gives up."""


def _rerun_lost_jobs(plan: Plan, store: CheckpointStore | MemoryStore,
                     run_jobs: Callable[[np.ndarray], int]) -> tuple[np.ndarray, int]:
    """Run again, in this call, the jobs of this plan that have no usable row in the store any more (a part was
    damaged or removed after its keys were read; reading quarantines it now), up to :data:`_LOST_JOB_ROUNDS` times.
    ``run_jobs(jobs)`` computes and stores jobs and returns how many failed. Returns the jobs rerun and their
    failures; raises :class:`CheckpointError` if rows are still missing after the last round."""
    rerun: list[np.ndarray] = []
    n_failed = 0
    for _ in range(_LOST_JOB_ROUNDS):
        lost = np.flatnonzero(~contains(store.done_keys(), plan.keys))
        if not len(lost):
            return np.concatenate(rerun) if rerun else np.array([], dtype=np.int64), n_failed
        warnings.warn(f"{len(lost)} jobs of this sweep lost their stored rows while it ran ({store.location}); "
                      f"running them again", CheckpointWarning, stacklevel=3)
        n_failed += run_jobs(lost)
        rerun.append(lost)
    lost = np.flatnonzero(~contains(store.done_keys(), plan.keys))
    if len(lost):
        raise CheckpointError(f"{len(lost)} jobs of this sweep, e.g. {plan.describe(int(lost[0]))}, still have no "
                              f"usable row in {store.location} after running them {_LOST_JOB_ROUNDS} more times; "
                              f"is something damaging or removing its parts?")
    return np.concatenate(rerun), n_failed


def _collect(results: Iterable[BatchResult], plan: Plan, market: MarketData, store: CheckpointStore | MemoryStore,
             checkpoint_batch_size: int, continue_on_error: bool, progress: tqdm, n_skipped: int,
             profiles: list[dict]) -> int:
    """Buffer finished batches and flush them to the store every ``checkpoint_batch_size`` rows; returns the number
    of failed jobs. Whatever stops the loop (a failed job, Ctrl-C, an error of Ray) flushes the buffered rows
    first: a finished row is never lost."""
    buffered: list[BatchResult] = []
    n_buffered = n_errors = 0

    def flush() -> None:
        nonlocal n_buffered
        if buffered:
            store.write(rows_table(buffered))
            buffered.clear()
            n_buffered = 0

    try:
        for result in results:
            if result.profile is not None:
                profiles.append(result.profile)
            failed = [i for i, error in enumerate(result.errors) if error is not None]
            if failed and not continue_on_error:
                if len(failed) < len(result.jobs):  # a batch of failures alone has no row to write
                    buffered.append(result.without(failed))
                job = int(result.jobs[failed[0]])
                raise BacktestError(f"backtest of {plan.describe(job)} failed: {result.errors[failed[0]]}\n"
                                    f"Finished rows are kept{' in the checkpoint' if store.location else ''}; pass "
                                    f"continue_on_error=True to record failures and go on.")
            n_errors += len(failed)
            buffered.append(result)
            n_buffered += len(result.jobs)
            if n_buffered >= checkpoint_batch_size:
                flush()
            progress.update(len(result.jobs))
            if failed:
                progress.set_postfix(skipped=n_skipped, errors=n_errors)
    finally:
        flush()
    return n_errors


def _interrupted(plan: Plan, store: CheckpointStore | MemoryStore) -> str:
    """The one line that says what an interrupted sweep kept."""
    if store.location is None:
        return "interrupted: nothing saved (no checkpoint_dir)"
    n_saved = int(contains(store.done_keys(), plan.keys).sum())
    return f"interrupted: {n_saved} of {len(plan)} backtests saved in {store.location}; run again to resume"


def rows_table(results: Sequence[BatchResult]) -> pa.Table:
    """The result rows of finished batches as one Arrow table (what a checkpoint part holds): the record batches the
    workers built (:func:`raybt.result_rows.job_rows`), concatenated."""
    return concat_rows([r.rows for r in results])


def merge_profiles(profiles: Sequence[dict]) -> pstats.Stats | None:
    """Merge the cProfile statistics (``Profile.stats`` dicts) of profiled batches."""
    merged = None
    for stats in profiles:
        if merged is None:
            merged = pstats.Stats(_StatsHolder(stats))
        else:
            merged.add(_StatsHolder(stats))
    return merged


@dataclass
class _StatsHolder:
    """Adapter: pstats.Stats accepts any object with ``create_stats()`` and ``stats``."""

    stats: dict

    def create_stats(self) -> None:
        """The stats are already there."""
