"""CPU per result row of the pieces around the kernel: planning, building rows, pickling batches, writing parts.

    python benchmarks/bench_driver_rows.py [--repeat 3]

The workload of the issue-19 profile: 10,000 SmaCross (fast 2..101 × slow 210..309) × 2 one-year ranges of hourly
synthetic data = 20,000 jobs, batches of 5,000, parts of 10,000 rows. No backtest runs: the metrics are random
numbers of the right shape, so only the per-row Python and Arrow/Parquet work is timed. Figures are CPU time
(``time.process_time()``, this process only) per row, the minimum over ``--repeat`` rounds, so they hold on a busy
machine:

``plan``          :func:`raybt.plan.plan_jobs` with strategies whose ids are not cached yet (ids, keys)
``pack``          pickling a sweep's batch (what the driver sends to a Ray task)
``unpack``        unpickling it (what a worker does first)
``rows``          :func:`raybt.result_rows.job_rows` on the unpickled batch (the worker builds the rows)
``write``         joining two batches' rows and writing them as one checkpoint part (Parquet, fsync)
``skip``          a new sweep's look at the stored keys: every part read whole and checked, then membership
"""

from __future__ import annotations

import argparse
import gc
import pickle
import shutil
import tempfile
import time

import numpy as np

import raybt
from raybt.batch import Batch, BatchResult
from raybt.checkpoint import CheckpointStore
from raybt.data import load_ohlcv
from raybt.demo import SmaCross
from raybt.engine import CostModel
from raybt.metrics import METRIC_NAMES
from raybt.plan import RunSettings, plan_jobs
from raybt.result_rows import concat_rows, job_rows

BATCH, PART = 5_000, 10_000


def cpu(work):
    gc.collect()
    started = time.process_time()
    out = work()
    return time.process_time() - started, out


def one_round(market, ranges, settings) -> dict[str, float]:
    strategies = [SmaCross(fast=f, slow=s) for f in range(2, 102) for s in range(210, 310)]
    seconds, plan = cpu(lambda: plan_jobs(strategies, ranges, market, settings))
    n = len(plan)
    spent = {"plan": seconds, "pack": 0.0, "unpack": 0.0, "rows": 0.0, "write": 0.0}
    rows = []
    for start in range(0, n, BATCH):
        jobs = np.arange(start, min(n, start + BATCH))
        index = plan.strategy_index[jobs]
        batch = Batch(jobs, [plan.strategies[i] for i in index], [plan.date_ranges[i] for i in plan.range_index[jobs]],
                      [plan.symbols[i] for i in plan.symbol_index[jobs]], keys=plan.keys[jobs],
                      strategy_ids=[plan.strategy_ids[i] for i in index])
        seconds, payload = cpu(lambda: pickle.dumps(batch))
        spent["pack"] += seconds
        seconds, batch = cpu(lambda: pickle.loads(payload))
        spent["unpack"] += seconds
        result = BatchResult(jobs, np.random.default_rng(start).normal(size=(len(jobs), len(METRIC_NAMES))),
                             [None] * len(jobs), np.full(len(jobs), 1e-4), "worker")
        seconds, part = cpu(lambda: job_rows(batch, result, market))
        spent["rows"] += seconds
        rows.append(part)
    folder = tempfile.mkdtemp()
    try:
        store = CheckpointStore(folder, writer=True)
        per_part = PART // BATCH
        for first in range(0, len(rows), per_part):
            seconds, _ = cpu(lambda: store.write(concat_rows(rows[first:first + per_part])))
            spent["write"] += seconds
        reader = CheckpointStore(folder, writer=True)  # a new sweep's store: reads every part
        spent["skip"], _ = cpu(lambda: np.flatnonzero(~np.isin(plan.keys, reader.done_keys())))
    finally:
        shutil.rmtree(folder)
    return {name: seconds / n * 1e6 for name, seconds in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    market = load_ohlcv(raybt.synthetic_ohlcv(["BTC/EUR"], "2022-01-01", "2024-01-01", "1h", seed=1))
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    settings = RunSettings(CostModel(10_000, 0.001))
    rounds = [one_round(market, ranges, settings) for _ in range(args.repeat)]
    print(f"CPU µs per row (20,000 rows, min of {args.repeat}; all rounds in brackets)")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        print(f"  {name:7s} {min(values):6.2f}   [{' '.join(f'{v:.2f}' for v in values)}]")


if __name__ == "__main__":
    main()
