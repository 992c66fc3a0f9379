"""Per-backtest CPU time of a worker's batch: the one-by-one path against batch evaluation, A/B interleaved.

    python benchmarks/bench_batch_eval.py               # hourly one-year and daily ranges, 10,000 backtests each
    python benchmarks/bench_batch_eval.py --n 2000      # smaller
    python benchmarks/bench_batch_eval.py --batch-size 5000   # bigger batches (groups of 2,500 sets per range)
    python benchmarks/bench_batch_eval.py --driver 20000   # the driver's CPU per backtest, in-process and on Ray

Workloads (the demo's SmaCross grid: fast 2.. × slow 60, 65, ..., fees 0.001, batches of 250 jobs unless
``--batch-size`` says otherwise):

* ``hourly``: one-year ranges (2022, 2023; 8,760 bars each) of two years of synthetic hourly data (seed 0);
* ``daily``: 2,148 bars of synthetic daily data (2018-01-01 .. 2023-11-18, seed 0), one range over all of it.

Paths, each run on every batch in turn (old, batched, hooked, old, ...) so that a shared machine's load falls on all
of them alike; CPU time (``time.process_time``) per backtest:

* ``one-by-one``: :func:`raybt.backtest.evaluate` per job with one workspace per batch (the worker loop before batch
  evaluation), signals by ``SmaCross.signals``;
* ``batched``: :func:`raybt.batch.run_batch` (one compiled call per group) on a subclass without the hook;
* ``hooked``: :func:`raybt.batch.run_batch` with ``SmaCross.signals_many`` (each distinct window's average once
  per group, every set's crossings in one :func:`raybt.indicators.pair_crossings` pass).

Every path's metrics are checked bit for bit against the one-by-one path's. Indicator caches are warm after the
first round (as in a sweep's worker, which sees the same range for many batches); the first round is not timed.

``--driver N``: the driver's cost instead. ``run_backtests`` of N hourly one-year backtests (the demo grid,
batch_size=250, checkpoints on, checkpoint_batch_size=2,000) in-process and on a local Ray already warmed by a
sweep of other data; prints wall time and the driver's ``time.process_time`` per backtest (which includes Ray's
own threads in the driver process, and planning: ids and keys).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

import raybt
from raybt.backtest import evaluate
from raybt.batch import Batch, run_batch
from raybt.data import load_ohlcv
from raybt.demo import SmaCross, demo_strategies
from raybt.engine import CostModel, Workspace
from raybt.plan import RunSettings


class WithoutHook(SmaCross):
    signals_many = None


def _one_by_one(market, batch: Batch, settings: RunSettings) -> np.ndarray:
    workspace = Workspace()
    return np.array([evaluate(s, market, r, settings.costs, settings.periods_per_year, settings.risk_free_rate,
                              workspace)[0] for s, r in zip(batch.strategies, batch.date_ranges)])


def _batches(strategies, ranges, size=250):
    jobs = [(s, r) for s in strategies for r in ranges]
    return [Batch(np.arange(i, min(len(jobs), i + size)), [j[0] for j in jobs[i:i + size]],
                  [j[1] for j in jobs[i:i + size]], [None] * len(jobs[i:i + size])) for i in range(0, len(jobs), size)]


def measure(name: str, market, ranges, n: int, rounds: int = 3, batch_size: int = 250) -> None:
    settings = RunSettings(CostModel(10_000, fees=0.001))
    sets = demo_strategies(n // len(ranges))
    plain = [WithoutHook(**s.params) for s in sets]
    paths = {
        "one-by-one": (_batches(sets, ranges, batch_size), lambda b: _one_by_one(market, b, settings)),
        "batched": (_batches(plain, ranges, batch_size), lambda b: run_batch(market, b, settings).metrics),
        "hooked": (_batches(sets, ranges, batch_size), lambda b: run_batch(market, b, settings).metrics),
    }
    cpu = dict.fromkeys(paths, 0.0)
    n_backtests = sum(len(b.jobs) for b in paths["hooked"][0])
    for round_ in range(rounds + 1):
        for position in range(len(paths["hooked"][0])):
            rows = {}
            for path, (batches, run) in paths.items():
                started = time.process_time()
                rows[path] = run(batches[position])
                if round_ > 0:
                    cpu[path] += time.process_time() - started
            for path in ("batched", "hooked"):
                assert np.array_equal(rows[path].view(np.int64), rows["one-by-one"].view(np.int64)), path
    base = cpu["one-by-one"]
    print(f"{name}: {n_backtests} backtests x {rounds} rounds, batches of {batch_size} jobs, rows bit-identical on "
          f"every path")
    for path, seconds in cpu.items():
        per = seconds / (n_backtests * rounds) * 1e6
        print(f"  {path:<11} {per:7.1f} µs CPU per backtest   ({base / seconds:4.2f}x the one-by-one path)")


def measure_driver(n: int) -> None:
    data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
    other = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=1)
    years = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
             raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    options = dict(fees=0.001, batch_size=250, checkpoint_batch_size=2_000, show_progress=False)
    with tempfile.TemporaryDirectory() as directory:
        raybt.run_backtests(demo_strategies(1_000), other, years, n_workers=-1,
                            checkpoint_dir=os.path.join(directory, "warm-up"), **options)
        strategies = demo_strategies(n // len(years))
        for label, n_workers in (("in-process", None), ("Ray, 2 workers", -1)):
            wall, cpu = time.perf_counter(), time.process_time()
            rows = len(raybt.run_backtests(strategies, data, years, n_workers=n_workers,
                                           checkpoint_dir=os.path.join(directory, label), **options).df)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{label}: {rows} backtests, wall {wall / rows * 1e6:.1f} µs per backtest, driver CPU "
                  f"{cpu / rows * 1e6:.1f} µs per backtest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="backtests per workload")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=250, help="jobs per batch (a worker's task)")
    parser.add_argument("--driver", type=int, metavar="N", help="measure the driver's cost instead (N backtests)")
    args = parser.parse_args()
    if args.driver:
        measure_driver(args.driver)
        return
    hourly = load_ohlcv(raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h",
                                              seed=0))
    years = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
             raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    measure("hourly, one-year ranges (8,760 bars)", hourly, years, args.n, args.rounds, args.batch_size)
    daily = load_ohlcv(raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2018-01-01", end="2023-11-19", freq="1D",
                                             seed=0))
    assert daily.n_bars == 2148, daily.n_bars
    measure("daily (2,148 bars)", daily, [None], args.n, args.rounds, args.batch_size)


if __name__ == "__main__":
    main()
