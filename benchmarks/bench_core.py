"""Per-backtest cost of the core (signals + simulation + metrics) for an SMA-crossover sweep, in one process.

    python benchmarks/bench_core.py [--grid 190|2000|both] [--repeat 7] [--end 2025-01-01]

Data: ``raybt.synthetic_ohlcv(["BTC"], "2020-01-01", "2025-01-01", "1h", seed=0)`` (43,848 hourly bars), the whole
range, ``initial_amount=10_000, fees=0.001``, close fills, long only. Strategies: the canonical SMA crossover of
``examples/sma_crossover.py`` (``raybt.demo.SmaCross``: ``sma`` twice, ``crossed_above``/``crossed_below`` on the
DataFrame ``data.close``), and the same on numpy arrays (``raybt.demo.SmaCrossArrays``, on ``data.arrays.close``).
Grids:

* 190 sets: fast 5..50 step 5 × slow 20..200 step 10 (the grid of ``bench_kernel.py`` and DESIGN.md);
* 2,000 sets: fast 2..101 (100 values) × slow 110..300 step 10 (20 values) - every fast < slow, 120 distinct
  averages, so most ``sma`` calls hit the indicator cache, as in a real sweep.

Every backtest is one call of ``raybt.backtest.evaluate`` (no Ray) with one reused ``raybt.engine.Workspace``, as
``raybt.batch`` runs a batch of a sweep. Each repeat is one full pass over the grid that
starts with an empty indicator cache (``clear_cache()``) and with freed heap memory returned to the OS
(``malloc_trim``), i.e. what one fresh worker pays for a sweep of that range: each average is computed once (into
new memory) and then hit, each crossing is computed once (a crossing is used by one parameter set only). Every
backtest is timed on its own in every pass, and the figures are the sum over the grid of each backtest's best time
over the ``--repeat`` passes, divided by the grid size: other processes share the two cores here, and this "best of
several repeats" per backtest is robust to them taking the CPU for part of a pass.

Columns: ``frames`` (SmaCross, cache on = the default limit), ``frames, no cache`` (``set_cache_limit(0)``, restored
afterwards), ``arrays`` (SmaCrossArrays, cache on). Rows:

* ``signals``    - ``raybt.strategy.signal_arrays(strategy, ctx.view)`` on the cached view of
  ``raybt.backtest.range_context`` (indicators, crossings, conversion to bool arrays);
* ``simulation`` - ``CurveScan.begin`` and ``raybt.engine.simulate`` with the same arguments ``evaluate`` passes:
  the kernel values the equity and hands it to the curve scan as it goes (moments, drawdown, the returns' tail,
  month and year ends), storing no curve;
* ``metrics``    - ``CurveScan.row``: the tail quantile, the trade metrics, the row (an exact rerun, when the
  learnt tail limit missed, is added to both);
* ``sum``        - the three stages above (one pass, a ``perf_counter`` pair around each stage);
* ``simulation, curve stored`` / ``metrics from the curve`` - the same pass the way evaluate worked before the scan
  moved into the kernel (the baseline of that change): ``simulate`` storing the equity curve in the workspace,
  then ``raybt.metrics.metric_values`` on it;
* ``evaluate``   - a separate pass calling ``evaluate`` itself: the number that counts (target <= 150 µs);
* ``evaluate, best whole pass`` / ``evaluate, CPU time`` - the same passes timed whole, wall clock and this
  thread's CPU time (``time.thread_time``), best pass;
* ``evaluate, averages cached`` - a second pass right after it, every average already cached: the steady state of
  a long sweep, where the cost of computing each average once is spread over many more parameter sets;
* ``evaluate, run twice (2nd)`` - each backtest evaluated twice in a row, the second call timed: its averages,
  crossings, prices and buffers still in the CPU caches. The compute floor; the difference to the row above is the
  cost of moving ~1 MB per backtest (two averages, the closes, the signals) between memory and the caches;
* ``page faults per backtest`` - minor page faults during the ``evaluate`` pass (first touches of fresh memory,
  ~1.6-1.9 µs per 4 KB page on this VM): the averages computed into new memory take ~86 pages each, or, carved
  from huge-page slabs (``raybt/_accel/slabs.py``, where transparent huge pages are on), ~2 faults per slab of 4 MiB;
* ``sma miss, fresh memory`` - µs per average computed into fresh memory from an empty cache (the grid's distinct
  windows on ``data.arrays.close``), carved from slabs and allocated by numpy in 4 KB pages (slabs switched off).

The numpy reference, run in the same process on the same grid, per backtest: cumsum-based SMAs (the cumsum of the
closes recomputed every backtest), crossing signals with the same NaN rule, the position as the last signal carried
forward (long from an entry bar's close to the next exit bar's close, long only, all in), per-bar returns with a
``1 - fees`` factor on each entry and exit bar, the equity curve by cumprod, and final value, max drawdown and
Sharpe. No trade list, stops or the other ~25 metrics: it is a floor for "plain vectorised numpy", not an equivalent.

Note on the indicator cache: it only stores results for read-only inputs whose root memory is read-only. If the
market arrays are read-only views of writable memory (``synthetic_ohlcv`` with one symbol builds them that way
as of this writing), nothing is cached; the script then says so and re-wraps the same values in a ``MarketData``
built from copies (read-only, owned), as ``load_ohlcv`` and Ray's object store deliver them.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import resource
import time
from pathlib import Path

import numpy as np

import raybt
from raybt.demo import SmaCross, SmaCrossArrays  # examples/sma_crossover.py's strategy, and on numpy arrays
from raybt import indicators
from raybt.backtest import evaluate, range_context
from raybt.data import FIELDS
from raybt.engine import CostModel, Workspace, simulate
from raybt.metrics import METRIC_NAMES, metric_values
from raybt.strategy import signal_arrays

TARGET_US = 150.0
INITIAL, FEES = 10_000.0, 0.001
GRIDS = {
    "190": [(f, s) for f in range(5, 55, 5) for s in range(20, 210, 10)],
    "2000": [(f, s) for f in range(2, 102) for s in range(110, 310, 10)],
}


# ------------------------------------------------------------------------------------------------ numpy reference

def _np_sma(cs: np.ndarray, n: int) -> np.ndarray:
    """SMA from ``cs`` = cumsum of the closes with a leading 0; NaN for the first ``n - 1`` bars."""
    out = np.empty(cs.size - 1)
    out[: n - 1] = np.nan
    np.subtract(cs[n:], cs[:-n], out=out[n - 1:])
    out[n - 1:] /= n
    return out


def numpy_reference(close: np.ndarray, fast: int, slow: int) -> tuple[float, float, float, int]:
    """One SMA-crossover backtest in plain vectorised numpy: (final value, max drawdown, sharpe, entries taken)."""
    cs = np.concatenate(([0.0], np.cumsum(close)))
    f, s = _np_sma(cs, fast), _np_sma(cs, slow)
    above, at_or_below = f > s, f <= s  # NaN compares False both ways
    entries = np.zeros(close.size, bool)
    exits = np.zeros(close.size, bool)
    np.logical_and(above[1:], at_or_below[:-1], out=entries[1:])
    np.logical_and(f[1:] < s[1:], f[:-1] >= s[:-1], out=exits[1:])
    events = entries | exits
    last_event = np.maximum.accumulate(np.where(events, np.arange(close.size), 0))
    long = entries[last_event]  # in the market after this bar's close
    returns = np.zeros(close.size)
    np.divide(close[1:], close[:-1], out=returns[1:])
    returns[1:] -= 1.0
    returns[1:] *= long[:-1]  # the bar's return counts if we held from the previous close
    change = np.zeros(close.size, bool)
    np.not_equal(long[1:], long[:-1], out=change[1:])
    change[0] = long[0]
    growth = 1.0 + returns
    growth[change] *= 1.0 - FEES  # entry or exit on this bar's close
    equity = INITIAL * np.cumprod(growth)
    drawdown = float((equity / np.maximum.accumulate(equity)).min() - 1.0)
    bar_returns = growth - 1.0
    with np.errstate(invalid="ignore", divide="ignore"):  # fast == slow never trades: 0 / 0
        sharpe = float(bar_returns.mean() / bar_returns.std(ddof=1) * np.sqrt(8760.0))
    return float(equity[-1]), drawdown, sharpe, int(np.count_nonzero(change & long))


# ------------------------------------------------------------------------------------------------ timing

def _root_read_only(a: np.ndarray) -> bool:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return not a.flags.writeable


def load_market(end: str) -> tuple[raybt.MarketData, bool]:
    """The synthetic market, re-wrapped in owned read-only arrays if its arrays are views of writable memory."""
    market = raybt.synthetic_ohlcv(["BTC"], "2020-01-01", end, "1h", seed=0)
    eligible = all(_root_read_only(getattr(market, f)) for f in FIELDS)
    if not eligible:
        market = raybt.MarketData(index=market.index, symbols=market.symbols,
                                  **{f: np.array(getattr(market, f), copy=True) for f in FIELDS})
    return market, eligible


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so that the next pass pays first touches like a new worker."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: passes after the first reuse memory, as a long sweep does
        pass


def fresh_start() -> None:
    """Empty indicator cache and no recycled heap memory: one pass = one worker's sweep of the range."""
    indicators.clear_cache()
    gc.collect()
    _malloc_trim()


STAGES = ("signals", "simulation", "metrics", "sum", "simulation, curve stored", "metrics from the curve", "evaluate",
          "evaluate, best whole pass", "evaluate, CPU time", "evaluate, averages cached", "evaluate, run twice (2nd)")


def time_stages(strategies, market, costs, repeat: int) -> tuple[dict[str, float], float]:
    """Seconds per pass for each row of :data:`STAGES`, and minor page faults per backtest (best pass).

    Every backtest is timed on its own, in every pass; a row is the sum over the grid of each backtest's best time
    over the passes (robust when other processes take the CPU for part of a pass), except the rows timed as whole
    passes ("best whole pass", "CPU time"), which report the best pass.
    """
    n = len(strategies)
    per = {name: np.full((repeat, n), np.inf) for name in STAGES
           if name not in ("sum", "evaluate, best whole pass", "evaluate, CPU time")}
    best_pass = {"evaluate, best whole pass": float("inf"), "evaluate, CPU time": float("inf")}
    faults = float("inf")
    clock, cpu = time.perf_counter, time.thread_time
    ctx = range_context(market, None, 0, None)
    workspace = Workspace()
    view, calendar = ctx.view, ctx.calendar
    first_bar, n_bars, offset = ctx.start, ctx.end - ctx.start, ctx.start - ctx.signal_start
    o, h, lo, c = market.open, market.high, market.low, market.close
    for r in range(repeat):
        # stage split: one pass, each stage timed on its own, mirroring evaluate()
        fresh_start()
        sig, sim_t, met = per["signals"][r], per["simulation"][r], per["metrics"][r]
        scan = workspace.scan
        for i, st in enumerate(strategies):
            t0 = clock()
            entries, exits = signal_arrays(st, view)
            t1 = clock()
            sim_s = met_s = 0.0
            for exact in (False, True):  # as evaluate: again, keeping all returns, if the tail limit missed
                t2 = clock()
                scan.begin(calendar, costs.initial_amount, 0.0, size=float(st.size), exact=exact)
                sim = simulate(o, h, lo, c, entries, exits, costs, first_bar=first_bar, n_bars=n_bars,
                               signal_offset=offset, size=float(st.size), direction=st.direction,
                               stop_loss=st.stop_loss, take_profit=st.take_profit, trailing_stop=st.trailing_stop,
                               workspace=workspace, scan=scan, keep_curve=False)
                t3 = clock()
                row = scan.row(sim.trades, sim.bars_in_market)
                t4 = clock()
                sim_s += t3 - t2
                met_s += t4 - t3
                if row is not None:
                    break
            sig[i], sim_t[i], met[i] = t1 - t0, sim_s, met_s
        # the same, storing the curve and computing the metrics from it (the baseline of the in-kernel scan)
        fresh_start()
        sim_c, met_c = per["simulation, curve stored"][r], per["metrics from the curve"][r]
        for i, st in enumerate(strategies):
            entries, exits = signal_arrays(st, view)
            t0 = clock()
            sim = simulate(o, h, lo, c, entries, exits, costs, first_bar=first_bar, n_bars=n_bars,
                           signal_offset=offset, size=float(st.size), direction=st.direction,
                           stop_loss=st.stop_loss, take_profit=st.take_profit, trailing_stop=st.trailing_stop,
                           workspace=workspace)
            t1 = clock()
            metric_values(sim.equity, sim.trades, sim.bars_in_market, initial_amount=costs.initial_amount,
                          calendar=calendar, risk_free_rate=0.0)
            sim_c[i], met_c[i] = t1 - t0, clock() - t1
        # the real thing: evaluate() per strategy, from an empty cache; wall and this thread's CPU time
        fresh_start()
        ev = per["evaluate"][r]
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        p0, c0 = clock(), cpu()
        for i, st in enumerate(strategies):
            t0 = clock()
            evaluate(st, market, None, costs, workspace=workspace)
            ev[i] = clock() - t0
        p1, c1 = clock(), cpu()
        faults = min(faults, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / n)
        best_pass["evaluate, best whole pass"] = min(best_pass["evaluate, best whole pass"], p1 - p0)
        best_pass["evaluate, CPU time"] = min(best_pass["evaluate, CPU time"], c1 - c0)
        # again, with the averages of that pass still cached: the steady state of a long sweep
        warm = per["evaluate, averages cached"][r]
        for i, st in enumerate(strategies):
            t0 = clock()
            evaluate(st, market, None, costs, workspace=workspace)
            warm[i] = clock() - t0
        # each backtest run again at once: what it costs with its data in the CPU caches (the compute floor)
        again = per["evaluate, run twice (2nd)"][r]
        for i, st in enumerate(strategies):
            evaluate(st, market, None, costs, workspace=workspace)
            t0 = clock()
            evaluate(st, market, None, costs, workspace=workspace)
            again[i] = clock() - t0
    out = {name: float(times.min(axis=0).sum()) for name, times in per.items()}
    out["sum"] = out["signals"] + out["simulation"] + out["metrics"]
    out.update(best_pass)
    return {name: out[name] for name in STAGES}, faults


def time_misses(grid, market: raybt.MarketData, repeat: int) -> dict[str, float]:
    """µs per ``sma`` miss into fresh memory (each distinct window of the grid on ``data.arrays.close``, from an
    empty cache), the outputs carved from huge-page slabs (``raybt/_accel/slabs.py``) and allocated by numpy (4 KB
    pages; only the latter where huge pages are not enabled): the best of ``repeat`` passes each."""
    close = range_context(market, None, 0, None).view.arrays.close
    windows = sorted({n for pair in grid for n in pair})
    carving = indicators._SLABS.enabled
    best = {mode: float("inf") for mode in (("slabs", "4 KB pages") if carving else ("4 KB pages",))}
    try:
        for _ in range(repeat):
            for mode in best:
                indicators._SLABS.enabled = mode == "slabs"
                fresh_start()
                t0 = time.perf_counter()
                for n in windows:
                    indicators.sma(close, n)
                best[mode] = min(best[mode], (time.perf_counter() - t0) / len(windows) * 1e6)
    finally:
        indicators._SLABS.enabled = carving
        fresh_start()
    return best


def time_reference(grid, close: np.ndarray, repeat: int) -> tuple[float, float]:
    """Seconds per pass of the numpy reference (sum of each backtest's best time), and mean entries per backtest."""
    times = np.full((repeat, len(grid)), np.inf)
    entries = 0
    for r in range(repeat):
        entries = 0
        for i, (f, s) in enumerate(grid):
            t0 = time.perf_counter()
            entries += numpy_reference(close, f, s)[3]
            times[r, i] = time.perf_counter() - t0
    return float(times.min(axis=0).sum()), entries / len(grid)


def _machine() -> str:
    """CPU model and per-core L2 size: the figures depend on them (a backtest's working set is ~1.5 MB)."""
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            if (index / "level").read_text().strip() == "2":
                model += f", L2 {(index / 'size').read_text().strip()} per core"
    except (OSError, StopIteration):
        pass
    return model


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=("190", "2000", "both"), default="both")
    parser.add_argument("--repeat", type=int, default=7, help="passes per figure; the best is reported")
    parser.add_argument("--end", default="2025-01-01", help="end of the synthetic data (start 2020-01-01)")
    args = parser.parse_args()

    market, eligible = load_market(args.end)
    costs = CostModel(INITIAL, fees=FEES)
    close = np.ascontiguousarray(market.close[0])
    print(f"core benchmark: SMA crossover, {market.n_bars:,} hourly bars, 1 symbol, one process; {args.repeat} "
          f"passes, each from an empty indicator cache and fresh memory; µs per backtest, each backtest's best "
          f"over the passes (raybt from {Path(raybt.__file__).parent}; {_machine()}; load average "
          f"{_load_average()})")
    if not eligible:
        print("  note: synthetic_ohlcv's arrays are read-only views of writable memory, which the indicator cache "
              "never stores;\n        using a MarketData of read-only copies (as load_ohlcv / Ray's object store "
              "give)")
    limit_mb = indicators.cache_info().limit / 2**20
    grids = ("190", "2000") if args.grid == "both" else (args.grid,)
    for grid_name in grids:
        grid = GRIDS[grid_name]
        modes = {"frames": (SmaCross, limit_mb), "frames, no cache": (SmaCross, 0.0),
                 "arrays": (SmaCrossArrays, limit_mb)}
        strategies = [SmaCross(fast=f, slow=s) for f, s in grid]
        for cls, _ in modes.values():  # compile / load the numba kernels before timing
            for st in [cls(fast=f, slow=s) for f, s in grid[:3]]:
                evaluate(st, market, None, costs)
        ref_s, ref_entries = time_reference(grid, close, args.repeat)
        ref_us = ref_s / len(grid) * 1e6
        results, faults = {}, {}
        try:
            for mode, (cls, limit) in modes.items():
                indicators.set_cache_limit(limit)
                results[mode], faults[mode] = time_stages([cls(fast=f, slow=s) for f, s in grid], market, costs,
                                                          args.repeat)
        finally:
            indicators.set_cache_limit(limit_mb)
            indicators.clear_cache()
        trades_column = METRIC_NAMES.index("n_trades")
        n_trades = np.mean([evaluate(st, market, None, costs)[0][trades_column] for st in strategies[::10]])
        print(f"\ngrid {grid_name}: {len(grid):,} parameter sets "
              f"(~{n_trades:.0f} trades per backtest; numpy reference {ref_entries:.0f} entries)")
        print(f"  {'µs per backtest':<28}" + "".join(f"{mode:>18}" for mode in results))
        for stage in STAGES:
            cells = "".join(f"{r[stage] / len(grid) * 1e6:18.1f}" for r in results.values())
            print(f"  {stage:<28}{cells}")
        print(f"  {'numpy reference':<28}{ref_us:18.1f}")
        ratios = "".join(f"{r['evaluate'] / ref_s:18.2f}" for r in results.values())
        print(f"  {'evaluate / numpy reference':<28}{ratios}")
        in_kernel = "".join(
            f"{(r['simulation'] + r['metrics']) / (r['simulation, curve stored'] + r['metrics from the curve']):18.2f}"
            for r in results.values())
        print(f"  {'sim+metrics: scan / curve':<28}{in_kernel}")
        print(f"  {'page faults per backtest':<28}" + "".join(f"{f:18.1f}" for f in faults.values()))
        misses = time_misses(grid, market, args.repeat)
        huge = "" if indicators._SLABS.enabled else " (huge pages not enabled here: nothing is carved)"
        print(f"  {'sma miss, fresh memory':<28}" + ", ".join(f"{mode} {us:.1f}" for mode, us in misses.items())
              + f" µs per average{huge}")
        for mode in ("frames", "arrays"):
            us = results[mode]["evaluate"] / len(grid) * 1e6
            verdict = "meets" if us <= TARGET_US else "misses"
            print(f"  target <= {TARGET_US:.0f} µs per backtest (evaluate, {mode}): {us:.1f} µs, {verdict} it")


if __name__ == "__main__":
    main()
