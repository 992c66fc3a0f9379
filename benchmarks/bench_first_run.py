"""What a fresh install waits for: numba compiles raybt's kernels on first use, then keeps them in its cache.

    python benchmarks/bench_first_run.py [--trees PATH ...] [--repeat 2]

For each raybt tree (default: this one), in fresh processes with an empty numba cache (``NUMBA_CACHE_DIR`` a new
directory) and then with that cache warm, prints the wall time of: ``import raybt``; the first sweep (200 SMA
crossings of the demo strategy on one synthetic symbol, one year of hourly bars, in this process); the replay of its
best row (``results.backtest``); ``raybt.engine.simulate`` on a user's own writable arrays of two symbols. Trees
given with ``--trees`` run interleaved, pass by pass (this VM is noisy), e.g. an old checkout against this one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS = """
import json, time
import numpy as np
t = time.perf_counter()
import raybt
from raybt import engine
from raybt.demo import SmaCross
times = {"import raybt": time.perf_counter() - t}
data = raybt.synthetic_ohlcv(["A"], "2022-01-01", "2023-01-01", "1h", seed=1)
grid = [SmaCross(fast=f, slow=s) for f in range(5, 45, 2) for s in range(50, 150, 10)]
t = time.perf_counter()
results = raybt.run_backtests(grid, data, show_progress=False)
times["first sweep (200 backtests)"] = time.perf_counter() - t
t = time.perf_counter()
results.backtest(results.best("sharpe", 1).iloc[0], data).equity
times["replay of its best row"] = time.perf_counter() - t
prices = np.linspace(10.0, 12.0, 2 * 500).reshape(2, 500)
entries = np.zeros((2, 500), dtype=bool)
entries[:, ::7] = True
t = time.perf_counter()
engine.simulate(prices, prices, prices, prices, entries, ~entries, engine.CostModel())
times["simulate() on writable arrays, 2 symbols"] = time.perf_counter() - t
print(json.dumps(times))
"""


def run_steps(tree: Path, cache: str) -> dict[str, float]:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, "-c", STEPS], env=env, capture_output=True, text=True, cwd=tree,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"{tree}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trees", nargs="+", type=Path, default=[Path(__file__).resolve().parents[1]])
    parser.add_argument("--repeat", type=int, default=2, help="passes per tree (median reported)")
    args = parser.parse_args()
    cold: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    warm: dict[Path, list[dict[str, float]]] = {tree: [] for tree in args.trees}
    for _ in range(args.repeat):
        for tree in args.trees:
            with tempfile.TemporaryDirectory() as cache:
                cold[tree].append(run_steps(tree, cache))
                warm[tree].append(run_steps(tree, cache))
    for tree in args.trees:
        print(f"raybt from {tree} (median of {args.repeat} fresh processes each)")
        for step in cold[tree][0]:
            c = statistics.median(p[step] for p in cold[tree])
            w = statistics.median(p[step] for p in warm[tree])
            print(f"  {step:<44} {c:7.2f} s with an empty numba cache, {w:6.2f} s warm")
        total = statistics.median(sum(p.values()) for p in cold[tree])
        print(f"  {'all of the above':<44} {total:7.2f} s with an empty numba cache")


if __name__ == "__main__":
    main()
