"""Issue 19's sweep-throughput targets in one run, with vectorbt in the same run as the baseline.

    python benchmarks/bench_throughput.py                     # every figure but the million (several minutes)
    python benchmarks/bench_throughput.py --million           # ... and 1,000,000 one-year hourly backtests
    python benchmarks/bench_throughput.py --quick             # every workload 10x smaller: a smoke test
    python benchmarks/bench_throughput.py --only steady,ceiling --repeat 3
    python benchmarks/bench_throughput.py --batch-size auto   # let raybt choose task sizes (batch_size=None)

Run it where vectorbt is installed (``pip install -e '.[bench]'``); without it the vectorbt figures are "n/a".
Each scenario runs in a fresh subprocess (this script re-invoked with ``--scenario NAME``, through
``bench_sweep.Runner``: private Ray temporary directory, no RAY_ADDRESS, a wait for a quiet machine first), so
every measurement starts with no Ray running. Costs everywhere: ``initial_amount=10_000, fees=0.001``, close fills,
long only; strategies: ``raybt.demo.SmaCross`` (the demo's SMA crossover), parameters ``fast`` and ``slow``.

Scenario groups:

``e2e``      The demo-shaped sweep from a cold process: ``bench_sweep.py``'s e2e scenario (5,000 SmaCross × the years
             2022 and 2023 of 2 years of synthetic hourly data = 10,000 backtests, batch_size=250,
             checkpoint_batch_size=2,000, checkpoints on), ``n_workers=-1`` and ``None`` in alternation. Time = from
             just before ``run_backtests`` to after ``results.df`` (Ray start included for -1). Targets: -1 in
             ≤ 4 s, and never slower than None.
``steady``   One subprocess, Ray started and both workers warm (a warm-up sweep on other data) before anything is
             timed; each repeat uses fresh data (seed 100 + repeat), so no indicator is cached from an earlier run.
             *Hourly*: 50,000 SmaCross (fast 2..201 × slow 210..459) × 2 one-year ranges (2022, 2023) of 2 years
             of synthetic hourly data (8,760 bars each) = 100,000 backtests, checkpoints on (a fresh directory per
             run), checkpoint_batch_size=10,000, batch_size 5,000 (20 tasks); run in-process (``n_workers=None``)
             and on Ray (``n_workers=2``), in alternating order. *Daily*: 20,000 SmaCross (fast 2..101 × slow
             102..301) on all of 2,148 synthetic daily bars, batch_size 2,000, the same two ways. Figures:
             µs per backtest per core = wall of the ``run_backtests`` call × cores / backtests (target hourly
             ≤ 40 µs, daily ≤ 15 µs), also as CPU time (driver + Ray processes) per backtest; Ray's speed-up over
             in-process at 100,000 (≥ 1.8×); driver CPU (``time.process_time()`` of the driver, all its threads)
             per backtest on Ray (≤ 5 µs). *Machine ceiling*: in the same repeat, two independent in-process
             sweeps started together in two fresh processes, each on one half of the grid (no Ray, no
             shared driver, kernels warmed before the start); their wall (first start to last end) against the
             in-process run's is what any two-process split can gain on this machine, and Ray's speed-up is also
             printed as a share of it. *vectorbt*: on an evenly spaced sample of the same grid (every 50th
             hourly set × both ranges = 2,000 backtests; every 10th daily set = 2,000), on the same data, the way
             a vectorbt user sweeps: ``vbt.MA.run`` once per range for the distinct windows, then per chunk of 250
             sets ``crossed_above``/``crossed_below``, ``Portfolio.from_signals(close, entries, exits,
             fees=0.001, init_cash=10_000, freq=...)`` and the metrics final value, total return, Sharpe, Sortino,
             annualised volatility, max drawdown, Calmar, trade count, win rate, profit factor, total fees and
             mean/best/worst trade return (raybt computes these and ~20 more). vectorbt runs on one core, so its
             µs per backtest is per core; ratio = vectorbt µs / raybt-on-Ray µs per core (target ≥ 50×), by wall
             time and by CPU time. *Agreement*: before timing, a few backtests of each grid are run by both with
             the same entries and exits (raybt's own ``indicators.sma``/``crossed_above``/``crossed_below``) and
             their metrics compared; the largest relative difference per metric is printed, and vectorbt's own
             MA crossings are compared with raybt's over the whole vectorbt sample.
``ceiling``  The driver's ceiling: rows per second one driver absorbs when workers return instantly. The hourly
             grid's 100,000 jobs are first computed for real in-process on short data (480 bars; the rows' shape
             does not depend on the bar count) with the in-process executor's results recorded; then the same sweep
             runs again with that executor replaying the recorded results instantly, through the real planning,
             skip check, collect and checkpoint path (checkpoints on; and once in memory). The replayed rows are
             checked equal to the recorded ones. Figures: rows/s, driver CPU µs per row, and the model of how many
             cores one driver feeds (below).
``million``  (only with ``--million``) 1,000,000 one-year hourly backtests from a cold process: 100,000 SmaCross
             (fast 2..201 × slow 210..709) × the 10 calendar years 2014..2023 of synthetic hourly data,
             ``n_workers=-1``, batch_size 5,000, checkpoint_batch_size=50,000. Time of the ``run_backtests`` call
             (Ray start included; target ≤ 2 min) and the driver's RSS growth during it (sampled every 50 ms,
             target ≤ 500 MB); building the 100,000 strategy objects and reading the rows back are reported apart.

How many cores one driver feeds: a driver that spends ``d`` µs of CPU per backtest saturates at ``1e6 / d``
backtests per second; workers at ``c`` µs per backtest per core produce ``1e6 / c`` per core, so one driver keeps
about ``c / d`` cores busy. The script prints it twice, with ``c`` = the CPU per backtest of the Ray processes in
the steady hourly runs (workers and Ray's daemons; CPU time, so the figure holds on a busy machine too) and ``d`` =
the driver CPU per backtest measured there (Ray traffic included), or the ceiling scenario's driver CPU per row
(collect and checkpoints alone).

``--quick`` divides every job count by 10 (figures then not comparable with the targets). ``--batch-size auto``
passes ``batch_size=None`` (raybt's adaptive task size, where the installed raybt has it) instead of the explicit
sizes above. The machine is shared: the figures by wall time are only comparable on a quiet machine; the CPU-time
figures and the ratios measured in one subprocess are the robust ones on a busy one.
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import psutil  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_sweep  # noqa: E402  (its helpers: Runner, Monitor, check_rows, the e2e scenario, ...)

MB = 2**20
INITIAL_AMOUNT, FEES = 10_000, 0.001

TARGET_CORE_US_HOURLY = 40.0
TARGET_VS_VECTORBT = 50.0
TARGET_CORE_US_DAILY = 15.0
TARGET_SPEEDUP = 1.8
TARGET_DRIVER_US = 5.0
TARGET_E2E_S = 4.0
TARGET_MILLION_S = 120.0
TARGET_MILLION_GROWTH_MB = 500.0

VBT_CHUNK = 250
"""Parameter sets per vectorbt ``Portfolio``: each of its (bars × sets) arrays stays near 17 MB at 8,760 bars."""


# ====================================================================================================== workloads

@dataclass
class Workload:
    """A sweep: the data, its ranges, the strategies, explicit task and part sizes, and how vectorbt sees it."""

    data: object                 # raybt.MarketData
    ranges: list                 # raybt.DateRange
    strategies: list             # raybt.demo.SmaCross
    batch_size: int
    part_size: int
    freq: str                    # pandas frequency of the bars, for vectorbt's annualisation
    vbt_every: int               # vectorbt runs every vbt_every-th strategy

    @property
    def n_jobs(self) -> int:
        return len(self.strategies) * len(self.ranges)


def _sma_grid(fasts: range, slows: range) -> list:
    from raybt.demo import SmaCross
    return [SmaCross(fast=fast, slow=slow) for fast in fasts for slow in slows]


def hourly_workload(quick: bool, seed: int) -> Workload:
    """50,000 sets × the years 2022 and 2023 of 2 years of hourly data (quick: 5,000 sets)."""
    import raybt
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2022-01-01", "2024-01-01", "1h", seed=seed)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    strategies = _sma_grid(range(2, 22 if quick else 202), range(210, 460))
    return Workload(data, ranges, strategies, 500 if quick else 5_000, 1_000 if quick else 10_000, "1h",
                    vbt_every=50)


def daily_workload(quick: bool, seed: int) -> Workload:
    """20,000 sets on all of 2,148 daily bars (quick: 2,000 sets)."""
    import raybt
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2020-01-01", "2025-11-18", "1D", seed=seed)
    ranges = [raybt.DateRange("2020-01-01", "2025-11-18", name="all")]
    strategies = _sma_grid(range(2, 12 if quick else 102), range(102, 302))
    return Workload(data, ranges, strategies, 200 if quick else 2_000, 500 if quick else 5_000, "1D", vbt_every=10)


def ceiling_workload(quick: bool) -> Workload:
    """The hourly grid's jobs on 480 hourly bars (two ranges of 240): rows of the same shape, computed quickly."""
    import raybt
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2022-01-01", "2022-01-21", "1h", seed=0)
    ranges = [raybt.DateRange("2022-01-01", "2022-01-11", name="a"),
              raybt.DateRange("2022-01-11", "2022-01-21", name="b")]
    strategies = _sma_grid(range(2, 22 if quick else 202), range(10, 260))
    return Workload(data, ranges, strategies, 500 if quick else 5_000, 1_000 if quick else 10_000, "1h",
                    vbt_every=0)


def million_workload(quick: bool) -> Workload:
    """100,000 sets × the 10 years 2014..2023 of hourly data = 1,000,000 backtests (quick: 10,000 sets)."""
    import raybt
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2014-01-01", "2024-01-01", "1h", seed=0)
    ranges = [raybt.DateRange(f"{year}-01-01", f"{year + 1}-01-01", name=str(year)) for year in range(2014, 2024)]
    strategies = _sma_grid(range(2, 22 if quick else 202), range(210, 710))
    return Workload(data, ranges, strategies, 500 if quick else 5_000, 5_000 if quick else 50_000, "1h",
                    vbt_every=0)


def task_size(args, workload: Workload) -> int | None:
    """The explicit batch size of the workload, or None (raybt's adaptive size) with ``--batch-size auto``."""
    if args.batch_size == "auto":
        return None
    return int(args.batch_size) if args.batch_size else workload.batch_size


# ====================================================================================================== measuring

def tree_cpu_seconds() -> dict[int, float]:
    """CPU seconds (user + system) so far of every descendant process (Ray's daemons and workers), by pid."""
    out = {}
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[proc.pid] = sum(proc.cpu_times()[:2])
    return out


def timed_sweep(raybt, workload: Workload, *, n_workers: int | None, batch_size: int | None,
                checkpoint_dir: str | None, address: str | None = None) -> dict:
    """One ``run_backtests`` call, timed by wall clock, driver CPU (``time.process_time``) and the CPU of the
    processes this one started (Ray); its rows are checked complete and error-free, then its checkpoint removed.
    ``rows_in_driver``: rows whose ``worker`` says they were computed in this process."""
    gc.collect()
    tree_before = tree_cpu_seconds()
    cpu0, t0 = time.process_time(), time.perf_counter()
    results = raybt.run_backtests(workload.strategies, workload.data, date_ranges=workload.ranges,
                                  initial_amount=INITIAL_AMOUNT, fees=FEES, n_workers=n_workers,
                                  batch_size=batch_size, checkpoint_dir=checkpoint_dir, address=address,
                                  checkpoint_batch_size=workload.part_size, show_progress=False,
                                  continue_on_error=True)
    wall, driver_cpu = time.perf_counter() - t0, time.process_time() - cpu0
    tree_after = tree_cpu_seconds()
    t1 = time.perf_counter()
    df = results.df
    df_s = time.perf_counter() - t1
    bench_sweep.check_rows(df, workload.n_jobs)
    workers = df["worker"].astype(str) if "worker" in df else None
    rows_in_driver = int(workers.str.startswith("local:").sum()) if workers is not None else -1
    if checkpoint_dir:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {"n_jobs": workload.n_jobs, "wall_s": wall, "driver_cpu_s": driver_cpu,
            "tree_cpu_s": sum(cpu - tree_before.get(pid, 0.0) for pid, cpu in tree_after.items()),
            "df_s": df_s, "rows_in_driver": rows_in_driver,
            "n_workers_seen": int(workers.nunique()) if workers is not None else -1}


def _half_sweep(kind: str, quick: bool, seed: int, half: int, n_halves: int, batch_size: int | None,
                checkpoint_dir: str, barrier, queue) -> None:
    """In a child process: warm this process's kernels, wait for the sibling halves at ``barrier``, then sweep
    in-process the ``half``-th of ``n_halves`` shares of the workload's strategies, dealt in Ray's task-sized chunks
    (chunk ``half``, ``half + n_halves``, ...): as Ray workers taking the next task, each share needs about as many
    distinct moving averages as a Ray worker does and gets as much of the costly and the cheap parts of the grid (a
    grid cut in consecutive halves gives one process the short fast windows, with more trades: on the daily grid one
    half ran ~30 % longer than the other). Puts the sweep's start and end (``time.perf_counter``, one clock for every
    process of the machine) and CPU seconds on ``queue``."""
    import raybt
    make = hourly_workload if kind == "hourly" else daily_workload
    warm = make(True, seed=1)
    warm.strategies = warm.strategies[:200]
    timed_sweep(raybt, warm, n_workers=None, batch_size=warm.batch_size, checkpoint_dir=None)
    workload = make(quick, seed=seed)
    chunk = max(1, (batch_size or workload.batch_size) // len(workload.ranges))  # strategies per Ray task
    workload.strategies = [strategy for first in range(half * chunk, len(workload.strategies), n_halves * chunk)
                           for strategy in workload.strategies[first:first + chunk]]
    barrier.wait()
    started, cpu = time.perf_counter(), time.process_time()
    raybt.run_backtests(workload.strategies, workload.data, date_ranges=workload.ranges,
                        initial_amount=INITIAL_AMOUNT, fees=FEES, n_workers=None, batch_size=batch_size,
                        checkpoint_dir=checkpoint_dir, checkpoint_batch_size=workload.part_size,
                        show_progress=False, continue_on_error=True)
    queue.put((started, time.perf_counter(), time.process_time() - cpu))


def plain_processes(kind: str, quick: bool, seed: int, n: int, batch_size: int | None, checkpoint_dir: str) -> dict:
    """The machine's own ceiling for ``n`` workers: ``n`` independent in-process sweeps started together, each on
    ``n``-th of the workload's strategies (no Ray, no shared driver). Wall = first start to last end."""
    import multiprocessing
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(n), context.Queue()
    children = [context.Process(target=_half_sweep, args=(kind, quick, seed, half, n, batch_size,
                                                          os.path.join(checkpoint_dir, str(half)), barrier, queue))
                for half in range(n)]
    for child in children:
        child.start()
    timings = [queue.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return {"wall_s": max(end for _, end, _ in timings) - min(start for start, _, _ in timings),
            "cpu_s": sum(cpu for _, _, cpu in timings), "walls_s": [end - start for start, end, _ in timings]}


def ray_cpus() -> int:
    ray = sys.modules.get("ray")
    return int(ray.cluster_resources().get("CPU", 0)) if ray is not None and ray.is_initialized() else 0


def warm_ray(raybt, n_workers: int) -> dict:
    """Start Ray and get ``n_workers`` workers to run tasks (kernels loaded) with small sweeps on other data (seed 1),
    repeated until the rows name that many Ray workers; then warm this process's kernels too (in-process sweep).
    The first sweep passes ``address="local"``: a local Ray starts at once (a raybt that computes small sweeps
    in-process while Ray starts would otherwise never start it for these); later sweeps use the initialised Ray."""
    warm = hourly_workload(True, seed=1)
    warm.strategies, warm.batch_size = warm.strategies[:100], 10
    daily = daily_workload(True, seed=1)
    daily.strategies, daily.batch_size = daily.strategies[:100], 10
    started = time.perf_counter()
    for attempt in range(1, 7):
        seen = {timed_sweep(raybt, w, n_workers=n_workers, batch_size=w.batch_size, checkpoint_dir=None,
                            address=None if ray_cpus() else "local")["n_workers_seen"] for w in (warm, daily)}
        if ray_cpus() and min(seen) >= n_workers:
            break
        time.sleep(2)
    else:
        raise RuntimeError(f"Ray did not come up with {n_workers} busy workers after {attempt} warm-up sweeps")
    for w in (warm, daily):
        timed_sweep(raybt, w, n_workers=None, batch_size=w.batch_size, checkpoint_dir=None)
    return {"warmup_s": time.perf_counter() - started, "warmup_attempts": attempt}


# ====================================================================================================== vectorbt

def _vectorbt():
    """vectorbt, or None when it is not installed (``pip install -e '.[bench]'``)."""
    try:
        import vectorbt
    except ImportError:
        return None
    return vectorbt


def range_closes(workload: Workload) -> list:
    """The close of the (one) symbol over each range, as a pandas Series (what vectorbt receives)."""
    import pandas as pd
    close = pd.Series(workload.data.close[0], index=workload.data.index)
    out = []
    for date_range in workload.ranges:
        mask = (close.index >= pd.Timestamp(date_range.start)) & (close.index < pd.Timestamp(date_range.end))
        out.append(close[mask])
    return out


def vectorbt_metrics(pf) -> dict:
    """The metrics the vectorbt baseline computes, under raybt's names (vectorbt accessors, every column at once)."""
    trades = pf.trades
    return {"final_value": pf.final_value(), "total_return": pf.total_return(), "sharpe": pf.sharpe_ratio(),
            "sortino": pf.sortino_ratio(), "volatility": pf.annualized_volatility(),
            "max_drawdown": pf.max_drawdown(), "calmar": pf.calmar_ratio(), "n_trades": trades.count(),
            "win_rate": trades.win_rate(), "profit_factor": trades.profit_factor(),
            "total_fees": pf.orders.fees.sum(), "avg_trade_return": trades.returns.mean(),
            "best_trade": trades.returns.max(), "worst_trade": trades.returns.min()}


def vectorbt_sweep(vbt, workload: Workload, strategies: Sequence) -> dict:
    """vectorbt on ``strategies`` × every range of the workload, as a vectorbt user sweeps (see the module doc):
    wall and CPU seconds, and the entries/exits per (range, set) for the signal comparison."""
    import pandas as pd
    fast = np.array([s.fast for s in strategies])
    slow = np.array([s.slow for s in strategies])
    windows = np.unique(np.r_[fast, slow])
    fast_col, slow_col = np.searchsorted(windows, fast), np.searchsorted(windows, slow)
    signals = []
    gc.collect()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for close in range_closes(workload):
        averages = vbt.MA.run(close, window=list(windows)).ma.to_numpy()
        for start in range(0, len(strategies), VBT_CHUNK):
            part = slice(start, start + VBT_CHUNK)
            fast_ma = pd.DataFrame(averages[:, fast_col[part]], index=close.index)
            slow_ma = pd.DataFrame(averages[:, slow_col[part]], index=close.index)
            entries, exits = fast_ma.vbt.crossed_above(slow_ma), fast_ma.vbt.crossed_below(slow_ma)
            pf = vbt.Portfolio.from_signals(close, entries, exits, fees=FEES, init_cash=INITIAL_AMOUNT,
                                            freq=workload.freq)
            vectorbt_metrics(pf)
            signals.append((entries.to_numpy(), exits.to_numpy()))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"n_backtests": len(strategies) * len(workload.ranges), "wall_s": wall, "cpu_s": cpu,
            "signals": signals}


def raybt_signals(close: np.ndarray, fast: int, slow: int) -> tuple[np.ndarray, np.ndarray]:
    """SmaCross's entries and exits on one range's closes (warm-up 0: the averages start in the range)."""
    from raybt import indicators
    fast_ma, slow_ma = indicators.sma(close, fast), indicators.sma(close, slow)
    return np.asarray(indicators.crossed_above(fast_ma, slow_ma)), np.asarray(indicators.crossed_below(fast_ma,
                                                                                                       slow_ma))


def signal_mismatches(workload: Workload, strategies: Sequence, vbt_signals: list) -> tuple[int, int]:
    """(bars where vectorbt's MA crossings differ from raybt's, bars compared) over the sampled sets and ranges."""
    differing = compared = 0
    chunks = iter(vbt_signals)
    for close in range_closes(workload):
        values = close.to_numpy()
        for start in range(0, len(strategies), VBT_CHUNK):
            entries, exits = next(chunks)
            for j, strategy in enumerate(strategies[start:start + VBT_CHUNK]):
                ours = raybt_signals(values, strategy.fast, strategy.slow)
                differing += int(np.count_nonzero(ours[0] != entries[:, j]) + np.count_nonzero(ours[1] != exits[:, j]))
                compared += 2 * len(values)
    return differing, compared


def agreement(vbt, raybt, workload: Workload, n: int = 4) -> dict[str, float]:
    """Largest relative difference per metric between ``raybt.run_backtest`` and vectorbt's ``from_signals`` on the
    same entries and exits, over ``n`` sets spread over the grid × every range. Trade returns are compared as
    vectorbt defines them (PnL / entry value without fees) after converting raybt's (PnL / cash committed, entry fee
    included), and listed apart as a convention difference."""
    import pandas as pd
    picks = workload.strategies[:: max(1, len(workload.strategies) // n)][:n]
    worst: dict[str, float] = {}
    for date_range, close in zip(workload.ranges, range_closes(workload)):
        for strategy in picks:
            entries, exits = raybt_signals(close.to_numpy(), strategy.fast, strategy.slow)
            pf = vbt.Portfolio.from_signals(close, pd.Series(entries, index=close.index),
                                            pd.Series(exits, index=close.index), fees=FEES,
                                            init_cash=INITIAL_AMOUNT, freq=workload.freq)
            ours = raybt.run_backtest(strategy, workload.data, date_range, initial_amount=INITIAL_AMOUNT,
                                      fees=FEES).metrics
            for name, value in vectorbt_metrics(pf).items():
                mine = ours[name]
                if name in ("avg_trade_return", "best_trade", "worst_trade"):
                    mine *= 1 + FEES   # long only, all in: raybt's denominator is the entry value × (1 + fees)
                    name += " (x(1+fees))"
                value = float(value)
                diff = 0.0 if (np.isnan(mine) and np.isnan(value)) or mine == value else \
                    abs(mine - value) / max(abs(mine), abs(value), 1e-300)
                worst[name] = max(worst.get(name, 0.0), diff)
    return worst


# ====================================================================================================== scenarios

def scenario_steady(args) -> dict:
    import raybt
    vbt = _vectorbt()
    n_workers = 2
    out: dict = {"vectorbt": getattr(vbt, "__version__", None), "n_workers": n_workers}
    out.update(warm_ray(raybt, n_workers))
    out["n_cpus"] = ray_cpus()
    if vbt is not None:
        out["agreement"] = {kind: agreement(vbt, raybt, make(args.quick, seed=0))
                            for kind, make in (("hourly", hourly_workload), ("daily", daily_workload))}
    runs: list[dict] = []
    for rep in range(args.repeat):
        seed = 100 + rep
        for kind, make in (("hourly", hourly_workload), ("daily", daily_workload)):
            workload = make(args.quick, seed=seed)
            order = (None, n_workers) if rep % 2 == 0 else (n_workers, None)
            for workers in order:
                figures = timed_sweep(raybt, workload, n_workers=workers, batch_size=task_size(args, workload),
                                      checkpoint_dir=os.path.join(args.checkpoint_dir, f"{kind}_{workers}_{rep}"))
                runs.append({"kind": kind, "rep": rep, "engine": "ray" if workers else "in-process", **figures})
            figures = plain_processes(kind, args.quick, seed, n_workers, task_size(args, workload),
                                      os.path.join(args.checkpoint_dir, f"{kind}_plain_{rep}"))
            runs.append({"kind": kind, "rep": rep, "engine": "plain", "n_jobs": workload.n_jobs, **figures})
            if vbt is not None:
                sample = workload.strategies[::workload.vbt_every]
                if rep == 0:   # compile vectorbt's kernels for these shapes before the first timing
                    vectorbt_sweep(vbt, workload, sample[:20])
                figures = vectorbt_sweep(vbt, workload, sample)
                signals = figures.pop("signals")
                if rep == 0:
                    out.setdefault("signal_mismatch", {})[kind] = signal_mismatches(workload, sample, signals)
                runs.append({"kind": kind, "rep": rep, "engine": "vectorbt", **figures})
    out["runs"] = runs
    out["shutdown_s"] = bench_sweep.shutdown_ray()
    return out


@contextlib.contextmanager
def recorded_executor(sink: list) -> Iterator[None]:
    """While active, the in-process executor's results are also appended to ``sink``."""
    from raybt.executors.local import LocalExecutor
    original = LocalExecutor.run

    def run(self, batches):
        for result in original(self, batches):
            sink.append(result)
            yield result

    LocalExecutor.run = run
    try:
        yield
    finally:
        LocalExecutor.run = original


@contextlib.contextmanager
def instant_executor(recorded: list, replayed: list) -> Iterator[None]:
    """While active, the in-process executor takes each batch the driver makes and returns the next recorded
    result at once (appending it to ``replayed``): workers that cost nothing, in front of the real collect path."""
    from raybt.executors.local import LocalExecutor
    original = LocalExecutor.run

    def run(self, batches):
        for _batch in batches:
            if len(replayed) == len(recorded):
                raise RuntimeError(f"INVALID RUN: the driver asked for more than the {len(recorded)} batches the "
                                   f"recorded sweep ran")
            result = recorded[len(replayed)]
            replayed.append(result)
            yield result

    LocalExecutor.run = run
    try:
        yield
    finally:
        LocalExecutor.run = original


def driver_ceiling(raybt, workload: Workload, batch_size: int | None, checkpoint_dir: str | None) -> dict:
    """Record the workload's results from a real in-process sweep (in memory), replay them through the real driver
    path (:func:`instant_executor`), time the replay, and check it stored the recorded rows."""
    import pandas as pd
    recorded: list = []
    with recorded_executor(recorded):
        reference = raybt.run_backtests(workload.strategies, workload.data, date_ranges=workload.ranges,
                                        initial_amount=INITIAL_AMOUNT, fees=FEES, batch_size=batch_size,
                                        checkpoint_batch_size=workload.part_size, show_progress=False,
                                        continue_on_error=True).df
    if not recorded:
        raise RuntimeError("INVALID RUN: the in-process executor was not used (raybt's in-process path changed?)")
    replayed: list = []
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    with instant_executor(recorded, replayed):
        cpu0, t0 = time.process_time(), time.perf_counter()
        results = raybt.run_backtests(workload.strategies, workload.data, date_ranges=workload.ranges,
                                      initial_amount=INITIAL_AMOUNT, fees=FEES, batch_size=batch_size,
                                      checkpoint_dir=checkpoint_dir, checkpoint_batch_size=workload.part_size,
                                      show_progress=False, continue_on_error=True)
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    rss_growth = (psutil.Process().memory_info().rss - rss0) / MB
    if len(replayed) != len(recorded):
        raise RuntimeError(f"INVALID RUN: {len(replayed)} of {len(recorded)} recorded batch results replayed")
    df = results.df
    bench_sweep.check_rows(df, workload.n_jobs)
    metrics = ["final_value", "sharpe", "max_drawdown", "n_trades"]
    mine = df.set_index("key")[metrics].sort_index()
    theirs = reference.set_index("key")[metrics].sort_index()
    pd.testing.assert_frame_equal(mine, theirs, check_exact=True)
    return {"n_rows": workload.n_jobs, "wall_s": wall, "driver_cpu_s": cpu, "rss_end_growth_mb": rss_growth,
            "n_batches": len(recorded)}


def scenario_ceiling(args) -> dict:
    import raybt
    workload = ceiling_workload(args.quick)
    batch_size = task_size(args, workload)
    stored = driver_ceiling(raybt, workload, batch_size, os.path.join(args.checkpoint_dir, "ceiling"))
    in_memory = driver_ceiling(raybt, workload, batch_size, None)
    return {"stored": stored, "in_memory": in_memory}


def scenario_million(args) -> dict:
    import raybt
    workload_started = time.perf_counter()
    rss0 = psutil.Process().memory_info().rss
    workload = million_workload(args.quick)
    gc.collect()
    build = {"strategies_s": time.perf_counter() - workload_started,
             "strategies_rss_mb": (psutil.Process().memory_info().rss - rss0) / MB}
    monitor = bench_sweep.Monitor(workers="ray", watch_ray=True, uss_every=None, parts_dir=args.checkpoint_dir)
    monitor.start()
    t0 = time.perf_counter()
    results = raybt.run_backtests(workload.strategies, workload.data, date_ranges=workload.ranges,
                                  initial_amount=INITIAL_AMOUNT, fees=FEES, n_workers=-1,
                                  batch_size=task_size(args, workload), checkpoint_dir=args.checkpoint_dir,
                                  checkpoint_batch_size=workload.part_size, show_progress=False,
                                  continue_on_error=True)
    run_s = time.perf_counter() - t0
    monitor.sample()
    run_end = monitor.now()
    run_growth = monitor.peak_growth_mb(until=run_end)
    n_cpus = ray_cpus()
    t1 = time.perf_counter()
    df = results.df
    df_s = time.perf_counter() - t1
    bench_sweep.check_rows(df, workload.n_jobs)
    del df, results
    monitor.stop()
    return {"n_jobs": workload.n_jobs, "run_s": run_s, "df_s": df_s,
            "run_peak_growth_mb": run_growth, "n_cpus": n_cpus, **build, **monitor.report(),
            "shutdown_s": bench_sweep.shutdown_ray()}


def scenario_warmcache(args) -> dict:
    """Not a measurement: run each workload's code path in-process once so numba's on-disk cache is current."""
    import raybt
    for workload in (hourly_workload(True, 0), daily_workload(True, 0), million_workload(True)):
        raybt.run_backtests(workload.strategies[:20], workload.data, date_ranges=workload.ranges[:2], fees=FEES,
                            show_progress=False)
    vbt = _vectorbt()
    if vbt is not None:
        workload = daily_workload(True, 0)
        vectorbt_sweep(vbt, workload, workload.strategies[:5])
    bench_sweep.scenario_warmcache(args)
    return {}


SCENARIOS = {"e2e": bench_sweep.scenario_e2e, "steady": scenario_steady, "ceiling": scenario_ceiling,
             "million": scenario_million, "warmcache": scenario_warmcache}
GROUPS = ("e2e", "steady", "ceiling", "million")


def run_child(args) -> None:
    try:
        out = {"ok": True, **SCENARIOS[args.scenario](args)}
    except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
        import traceback
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        bench_sweep.shutdown_ray()
    out["scenario"] = args.scenario
    out["loadavg_end"] = os.getloadavg()
    print(bench_sweep.MARKER + json.dumps(out, default=float), flush=True)


# ====================================================================================================== parent

class Runner(bench_sweep.Runner):
    script = Path(__file__).resolve()


def _us(seconds: float, n: int) -> float:
    return 1e6 * seconds / n


class Table:
    """The summary: one row per figure (name, value, target, MET/MISSED)."""

    def __init__(self, quick: bool):
        self.rows: list[tuple[str, str, str, str]] = []
        self.quick = quick

    def add(self, name: str, value: str, target: str = "", ok: bool | None = None) -> None:
        judged = None if self.quick else ok
        self.rows.append((name, value, target, bench_sweep._status(judged) if target else ""))

    def print(self) -> None:
        width = [max([len(r[i]) for r in self.rows] + [6]) for i in range(4)]
        print("\nSummary (" + ("QUICK: workloads / 10, targets not judged" if self.quick else
                               f"{os.cpu_count()} CPUs, shared machine: wall-time figures are noisy") + ")")
        print(f"{'figure':<{width[0]}}  {'value':<{width[1]}}  {'target':<{width[2]}}  status")
        for name, value, target, status in self.rows:
            print(f"{name:<{width[0]}}  {value:<{width[1]}}  {target:<{width[2]}}  {status}")


def summarise_e2e(table: Table, e2e: dict[str, list[dict]]) -> None:
    good = {w: [r for r in records if r.get("ok")] for w, records in e2e.items()}
    if not all(good.values()):
        table.add("e2e (cold process)", "FAILED")
        return
    med = {w: bench_sweep.median([r["sweep_s"] for r in records]) for w, records in good.items()}
    n = good["-1"][0]["n_jobs"]
    each = {w: ", ".join(f"{r['sweep_s']:.2f}" for r in records) for w, records in good.items()}
    table.add(f"e2e {n:,} backtests, cold process, n_workers=-1", f"{med['-1']:.2f} s (runs: {each['-1']})",
              f"<= {TARGET_E2E_S:.0f} s", med["-1"] <= TARGET_E2E_S)
    table.add("  n_workers=None", f"{med['None']:.2f} s (runs: {each['None']})")
    table.add("  -1 / None (median)", f"{med['-1'] / med['None']:.2f}", "<= 1.00", med["-1"] <= med["None"])
    first = good["-1"][0]
    table.add("  -1: Ray up / first task seen (s after call)", f"{bench_sweep._f(first.get('ray_up_s'))} / "
              f"{bench_sweep._f(first.get('first_task_s'))}")


def summarise_steady(table: Table, steady: dict) -> dict:
    """Rows for the steady scenario; returns the hourly figures the driver model needs."""
    if not steady.get("ok"):
        table.add("steady state (Ray warm)", "FAILED")
        return {}
    cpus = steady["n_cpus"] or 2
    runs = steady["runs"]
    model = {}
    for kind in ("hourly", "daily"):
        of = {engine: [r for r in runs if r["kind"] == kind and r["engine"] == engine]
              for engine in ("ray", "in-process", "vectorbt")}
        ray, local, vbt = of["ray"], of["in-process"], of["vectorbt"]
        n = ray[0]["n_jobs"]
        core_us = bench_sweep.median([_us(r["wall_s"] * cpus, r["n_jobs"]) for r in ray])
        cpu_us = bench_sweep.median([_us(r["driver_cpu_s"] + r["tree_cpu_s"], r["n_jobs"]) for r in ray])
        local_us = bench_sweep.median([_us(r["wall_s"], r["n_jobs"]) for r in local])
        local_cpu_us = bench_sweep.median([_us(r["driver_cpu_s"], r["n_jobs"]) for r in local])
        worker_cpu_us = bench_sweep.median([_us(r["tree_cpu_s"], r["n_jobs"]) for r in ray])
        driver_us = bench_sweep.median([_us(r["driver_cpu_s"], r["n_jobs"]) for r in ray])
        target = TARGET_CORE_US_HOURLY if kind == "hourly" else TARGET_CORE_US_DAILY
        walls = ", ".join(f"{r['wall_s']:.1f}" for r in ray)
        table.add(f"{kind} {n:,} backtests, Ray {steady['n_workers']} workers warm: µs/backtest/core (wall×{cpus}/n)",
                  f"{core_us:.1f} µs (runs {walls} s)", f"<= {target:.0f} µs", core_us <= target)
        table.add("  same, CPU time per backtest: driver + Ray processes (of which Ray processes)",
                  f"{cpu_us:.1f} µs ({worker_cpu_us:.1f} µs)")
        in_driver = sum(r["rows_in_driver"] for r in ray)
        if in_driver:
            table.add("  rows of the Ray runs computed in the driver", f"{in_driver:,}")
        table.add("  in-process: µs/backtest (wall; CPU)", f"{local_us:.1f} µs; {local_cpu_us:.1f} µs")
        speedups = [lo["wall_s"] / ra["wall_s"] for lo, ra in zip(local, ray)]
        speedup = bench_sweep.median(speedups)
        table.add(f"  Ray {steady['n_workers']} workers vs in-process (wall)",
                  f"{speedup:.2f}x ({', '.join(f'{s:.2f}' for s in speedups)})",
                  f">= {TARGET_SPEEDUP}x" if kind == "hourly" else "",
                  speedup >= TARGET_SPEEDUP if kind == "hourly" else None)
        table.add("  speed-up bound from CPU cost (cores x in-process CPU / Ray CPU)",
                  f"{cpus * local_cpu_us / cpu_us:.2f}x (what the wall ratio would be with the cores to ourselves)")
        plain = [r for r in runs if r["kind"] == kind and r["engine"] == "plain"]
        if plain:
            ceilings = [lo["wall_s"] / pl["wall_s"] for lo, pl in zip(local, plain)]
            plain_cpu_us = bench_sweep.median([_us(r["cpu_s"], r["n_jobs"]) for r in plain])
            table.add(f"  machine ceiling: {steady['n_workers']} plain in-process sweeps at once, 1/"
                      f"{steady['n_workers']} of the grid each in task-sized chunks (no Ray), vs in-process (wall)",
                      f"{bench_sweep.median(ceilings):.2f}x ({', '.join(f'{c:.2f}' for c in ceilings)}); "
                      f"CPU {plain_cpu_us:.1f} µs/backtest")
            table.add("  Ray's speed-up as a share of the machine ceiling",
                      f"{speedup / bench_sweep.median(ceilings):.0%}")
        table.add("  driver CPU (process_time) per backtest on Ray", f"{driver_us:.2f} µs",
                  f"<= {TARGET_DRIVER_US:.0f} µs" if kind == "hourly" else "",
                  driver_us <= TARGET_DRIVER_US if kind == "hourly" else None)
        table.add("  reading the rows back (results.df), Ray run",
                  f"{bench_sweep.median([r['df_s'] for r in ray]):.2f} s")
        if vbt:
            vbt_us = bench_sweep.median([_us(r["wall_s"], r["n_backtests"]) for r in vbt])
            vbt_cpu_us = bench_sweep.median([_us(r["cpu_s"], r["n_backtests"]) for r in vbt])
            table.add(f"  vectorbt {steady['vectorbt']}, {vbt[0]['n_backtests']:,}-backtest sample: µs/backtest "
                      "(wall; CPU)", f"{vbt_us:.0f} µs; {vbt_cpu_us:.0f} µs")
            ratio = vbt_us / core_us
            table.add("  vectorbt / raybt per core, wall", f"{ratio:.1f}x",
                      f">= {TARGET_VS_VECTORBT:.0f}x" if kind == "hourly" else "",
                      ratio >= TARGET_VS_VECTORBT if kind == "hourly" else None)
            table.add("  vectorbt / raybt per core, CPU time", f"{vbt_cpu_us / cpu_us:.1f}x")
            mismatch = steady.get("signal_mismatch", {}).get(kind)
            if mismatch:
                table.add("  vectorbt's MA crossings vs raybt's (bars differing)", f"{mismatch[0]:,} of "
                          f"{mismatch[1]:,}")
        else:
            table.add("  vectorbt", "n/a (not installed: pip install -e '.[bench]')")
        if kind == "hourly":
            model = {"worker_cpu_us": worker_cpu_us, "driver_us": driver_us}
    for kind, worst in steady.get("agreement", {}).items():
        same = [name for name, diff in worst.items() if diff <= 1e-9]
        differ = {name: diff for name, diff in worst.items() if diff > 1e-9}
        table.add(f"raybt vs vectorbt, same signals, {kind}: metrics equal to 1e-9",
                  f"{len(same)} of {len(worst)}" + (f"; differing: {differ}" if differ else "") +
                  f" (largest {max(worst.values()):.1e})")
    return model


def summarise_ceiling(table: Table, ceiling: dict, model: dict) -> None:
    if not ceiling.get("ok"):
        table.add("driver ceiling", "FAILED")
        return
    for label, key in (("checkpoints on", "stored"), ("in memory", "in_memory")):
        r = ceiling[key]
        table.add(f"driver ceiling, instant workers, {label}: rows/s",
                  f"{r['n_rows'] / r['wall_s']:,.0f}/s ({r['n_rows']:,} rows in {r['wall_s']:.2f} s; driver CPU "
                  f"{_us(r['driver_cpu_s'], r['n_rows']):.2f} µs/row)")
    if model:
        stored = ceiling["stored"]
        driver_only_us = _us(stored["driver_cpu_s"], stored["n_rows"])
        worker_us = model["worker_cpu_us"]
        table.add("cores one driver feeds = worker CPU / driver CPU per backtest",
                  f"{worker_us / model['driver_us']:.0f} (on Ray: {worker_us:.1f} / {model['driver_us']:.2f} µs); "
                  f"{worker_us / driver_only_us:.0f} (collect + checkpoints alone: / {driver_only_us:.2f} µs)")


def summarise_million(table: Table, million: dict) -> None:
    if not million.get("ok"):
        table.add("million", "FAILED")
        return
    m = million
    table.add(f"million: {m['n_jobs']:,} one-year hourly backtests, n_workers=-1, cold",
              f"{m['run_s']:.1f} s ({m['n_jobs'] / m['run_s']:,.0f}/s; "
              f"{_us(m['run_s'] * (m['n_cpus'] or 2), m['n_jobs']):.1f} µs/backtest/core)",
              f"<= {TARGET_MILLION_S:.0f} s", m["run_s"] <= TARGET_MILLION_S)
    table.add("  driver RSS growth during the run (peak)", f"{m['run_peak_growth_mb']:.0f} MB",
              f"<= {TARGET_MILLION_GROWTH_MB:.0f} MB", m["run_peak_growth_mb"] <= TARGET_MILLION_GROWTH_MB)
    table.add("  Ray up / first task seen (s after call)", f"{bench_sweep._f(m.get('ray_up_s'))} / "
              f"{bench_sweep._f(m.get('first_task_s'))}")
    table.add("  building the strategies (before the call)", f"{m['strategies_s']:.1f} s, "
              f"{m['strategies_rss_mb']:.0f} MB")
    table.add("  reading all rows back (results.df)", f"{m['df_s']:.1f} s")
    cpu = m["cpu"]
    table.add("  CPU-s driver / workers+Ray / others", f"{cpu['driver_s']:.1f} / {cpu['descendants_s']:.1f} / "
              f"{cpu['other_s']:.1f} over {cpu['elapsed_s']:.1f} s")


def main_parent(args) -> None:
    groups = {g.strip() for g in args.only.split(",") if g.strip()} if args.only else \
        set(GROUPS) - ({"million"} if not args.million else set())
    if groups - set(GROUPS):
        raise SystemExit(f"unknown groups {sorted(groups - set(GROUPS))}; choose from {list(GROUPS)}")
    runner = Runner(args)
    vbt = _vectorbt()
    print(f"bench_throughput: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
          f"{sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}; groups {sorted(groups)}; vectorbt "
          f"{getattr(vbt, '__version__', 'not installed')}; batch sizes {args.batch_size or 'explicit'}"
          f"{' (QUICK: workloads / 10)' if args.quick else ''}", flush=True)
    code = bench_sweep.code_state()
    print(f"raybt code: {code['describe']}", flush=True)
    runner.run("warmcache", "warm the numba on-disk caches (not a measurement)", 900)
    table = Table(args.quick)
    try:
        if "e2e" in groups:
            e2e: dict[str, list[dict]] = {"-1": [], "None": []}
            for rep in range(args.repeat):
                for workers in (("-1", "None") if rep % 2 == 0 else ("None", "-1")):
                    e2e[workers].append(runner.run("e2e", f"e2e n_workers={workers} (rep {rep + 1})", 900,
                                                   workers=workers,
                                                   checkpoint_dir=runner.checkpoint_dir(f"e2e_{workers}_{rep}")))
            summarise_e2e(table, e2e)
        model: dict = {}
        if "steady" in groups:
            steady = runner.run("steady", "steady state: Ray warm, hourly and daily grids, vectorbt", 7200,
                                checkpoint_dir=runner.checkpoint_dir("steady"), repeat=args.repeat,
                                batch_size=args.batch_size or "")
            model = summarise_steady(table, steady)
        if "ceiling" in groups:
            ceiling = runner.run("ceiling", "driver ceiling: instant workers", 1800,
                                 checkpoint_dir=runner.checkpoint_dir("ceiling"), batch_size=args.batch_size or "")
            summarise_ceiling(table, ceiling, model)
        if "million" in groups:
            million = runner.run("million", "million one-year hourly backtests, n_workers=-1", 7200,
                                 checkpoint_dir=runner.checkpoint_dir("million"), batch_size=args.batch_size or "")
            summarise_million(table, million)
        table.print()
        if bench_sweep.code_state()["mtimes"] != code["mtimes"]:
            print("WARNING: raybt source changed while the benchmark ran: the scenarios did not all measure the same "
                  "code.")
    finally:
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(runner.records, handle, indent=1, default=float)
            print(f"raw results: {args.json}")
        shutil.rmtree(runner.tmp, ignore_errors=True)
        shutil.rmtree(runner.ray_tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help="shrink every workload 10x (smoke test)")
    parser.add_argument("--million", action="store_true", help="also run the 1,000,000-backtest scenario")
    parser.add_argument("--only", help=f"comma-separated groups of {','.join(GROUPS)}")
    parser.add_argument("--repeat", type=int, default=1, help="repeats of the e2e pair and of the steady runs")
    parser.add_argument("--batch-size", default="", metavar="N|auto",
                        help="task size for every sweep (default: each workload's explicit size; auto: None)")
    parser.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                        help="before each scenario wait up to this long for the machine to be quiet (default 120)")
    parser.add_argument("--quiet-cores", type=float, default=0.3, metavar="CORES",
                        help="'quiet' = fewer than this many cores busy with other work (default 0.3)")
    parser.add_argument("--json", help="write every scenario's raw figures to this file")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="-1", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_size not in ("", "auto") and not args.batch_size.isdigit():
        parser.error(f"--batch-size must be a positive integer or 'auto', got {args.batch_size!r}")
    if args.scenario:
        run_child(args)
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
