"""How many workers and how large batches suit this machine and this data: ``recommended_workers`` (advice before a
sweep) and :class:`BatchSizer` (the batch size a sweep with ``batch_size=None`` adapts from measured batches).

Memory per worker is estimated from this process's *unique set size* (USS, memory no other process shares) rather
than its RSS: RSS counts shared pages — Python libraries, and above all the market data, which Ray workers map
zero-copy from the shared object store — once per process, which would overstate the cost of each extra worker.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import psutil

from raybt.data import DataLike, load_ohlcv
from raybt.indicators import cache_info

_WORKER_BASELINE_BYTES = 300 * 2**20  # an idle worker with numpy, pandas, numba and raybt imported (measured USS)
_JOBS_PER_BATCH_BOUNDS = (20, 1_000)
_ROWS_PER_PART_BOUNDS = (1_000, 50_000)


@dataclass(frozen=True)
class Recommendation:
    """Suggested ``run_backtests`` arguments, with the reasoning in ``explanation``."""

    n_workers: int
    batch_size: int
    checkpoint_batch_size: int
    explanation: str

    def __str__(self) -> str:
        return (f"n_workers={self.n_workers}, batch_size={self.batch_size}, "
                f"checkpoint_batch_size={self.checkpoint_batch_size}: {self.explanation}")


def recommended_workers(data: DataLike | None = None, n_jobs: int | None = None) -> Recommendation:
    """Recommend ``n_workers``, ``batch_size`` and ``checkpoint_batch_size`` for ``n_jobs`` backtests on ``data``.

    Workers: one per CPU, fewer if the memory available now cannot hold that many (per worker: this process's USS
    or a 300 MiB baseline, whichever is larger, plus the indicator cache limit and one copy of the data for
    signals). Batches: at least 8 per worker so the load evens out, within 20..1,000 jobs. Parts: about 200 per
    sweep, within 1,000..50,000 rows, so a kill loses little and a huge sweep does not make thousands of files.
    """
    cpus = os.cpu_count() or 1
    available = psutil.virtual_memory().available
    data_bytes = load_ohlcv(data).nbytes if data is not None else 0
    uss = psutil.Process().memory_full_info().uss
    per_worker = max(uss, _WORKER_BASELINE_BYTES) + cache_info().limit + data_bytes
    by_memory = max(1, int(available // per_worker))
    n_workers = max(1, min(cpus, by_memory))
    jobs = n_jobs if n_jobs is not None else 10_000
    batch_size = int(min(max(jobs // (8 * n_workers), _JOBS_PER_BATCH_BOUNDS[0]), _JOBS_PER_BATCH_BOUNDS[1]))
    part_rows = int(min(max(jobs // 200, _ROWS_PER_PART_BOUNDS[0]), _ROWS_PER_PART_BOUNDS[1]))
    limit = "CPUs" if n_workers == cpus else "memory"
    explanation = (f"{cpus} CPUs, {available / 2**30:.1f} GiB available, ~{per_worker / 2**20:.0f} MiB per worker "
                   f"(USS-based) → {n_workers} workers (limited by {limit}); {jobs:,} jobs → batches of "
                   f"{batch_size}, parts of {part_rows} rows")
    return Recommendation(n_workers, batch_size, part_rows, explanation)


PROBE_JOBS = 20
"""Jobs in each batch handed out before any batch has been timed (``batch_size=None``)."""
TASK_SECONDS = (0.2, 0.5)
"""Adaptive batches take between the first and the second figure, in seconds of work (see :func:`adaptive_batch_size`):
long enough that a task's fixed costs vanish, short enough that progress, checkpoints and the hand-over to Ray follow
closely and the last tasks of a sweep end together."""
BATCHES_PER_WORKER = 4
"""Adaptive batches leave at least this many batches per worker of the remaining jobs (above the lower bound of
:data:`TASK_SECONDS`), so the load evens out at the end of a sweep."""
MIN_TASK_SECONDS = 0.05
"""The smallest adaptive batch, in seconds of work, when the jobs left are shared among the workers (see
:func:`adaptive_batch_size`). A Ray task's fixed costs (shipping its jobs, storing and fetching its rows, the round
trip through the scheduler) are 10-20 ms of wall time when every core is busy (``ray.timeline()`` of a sweep on 2
cores), so a smaller task would spend more on them than it saves by running beside another."""


def adaptive_batch_size(seconds_per_job: float, jobs_left: int, n_workers: int) -> int:
    """Jobs in the next batch when ``batch_size=None``: enough for ``TASK_SECONDS[1]`` (0.5 s) of work, fewer if the
    remaining jobs would then make fewer than :data:`BATCHES_PER_WORKER` batches per worker, but never fewer than
    ``TASK_SECONDS[0]`` (0.2 s) of work, and never more than an equal share of the jobs left among the workers: a
    sweep with less than 0.2 s of work left per worker is shared out, so no worker idles while one runs the rest (a
    share is at least :data:`MIN_TASK_SECONDS` of work). At least 1 (a job slower than 0.5 s runs alone), at most
    ``jobs_left``.

    >>> adaptive_batch_size(0.001, jobs_left=1_000_000, n_workers=2)  # 1 ms per job: 0.5 s batches
    500
    >>> adaptive_batch_size(0.00001, jobs_left=20_000, n_workers=2)  # 0.2 s of work in all: half each
    10000
    """
    per_job = max(seconds_per_job, 1e-9)
    low, high = (seconds / per_job for seconds in TASK_SECONDS)
    workers = max(n_workers, 1)
    balanced = jobs_left / (BATCHES_PER_WORKER * workers)
    share = max(math.ceil(jobs_left / workers), MIN_TASK_SECONDS / per_job)
    return int(min(max(min(high, balanced), low, 1), max(share, 1), max(jobs_left, 1)))


class BatchSizer:
    """The size of each batch a sweep hands out: ``batch_size`` jobs when given, else adaptive.

    Adaptive (``batch_size=None``): the first batches (handed out before any has come back) are probes of
    :data:`PROBE_JOBS` jobs; after that every batch follows :func:`adaptive_batch_size` with the seconds per job of
    the latest finished batch — the median of its jobs' times, so a job that paid for a first compile or a cold
    indicator cache does not shrink the batches."""

    def __init__(self, batch_size: int | None):
        self.fixed = batch_size
        self.seconds_per_job: float | None = None

    def next_size(self, jobs_left: int, n_workers: int) -> int:
        if self.fixed is not None:
            return self.fixed
        if self.seconds_per_job is None:
            return PROBE_JOBS
        return adaptive_batch_size(self.seconds_per_job, jobs_left, n_workers)

    def observe(self, durations: np.ndarray) -> None:
        """Record a finished batch's per-job times in seconds (``BatchResult.durations``)."""
        if len(durations):
            self.seconds_per_job = float(np.median(durations))
