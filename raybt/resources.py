"""``recommended_workers``: how many workers and how large batches suit this machine and this data.

Memory per worker is estimated from this process's *unique set size* (USS, memory no other process shares) rather
than its RSS: RSS counts shared pages — Python libraries, and above all the market data, which Ray workers map
zero-copy from the shared object store — once per process, which would overstate the cost of each extra worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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
