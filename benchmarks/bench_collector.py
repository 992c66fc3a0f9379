"""What pausing the cyclic garbage collector while a Ray worker rebuilds a batch (``raybt._accel.collector``) buys a
sweep end to end: the same sweeps with the pause on and off, in alternating fresh processes.

    python benchmarks/bench_collector.py              # daily and hourly, 3 pairs of processes
    python benchmarks/bench_collector.py --pairs 5

Each process starts a local Ray with 2 CPUs (``ray.init(num_cpus=2)``; for "off", a ``worker_process_setup_hook``
makes the workers rebuild batches without the pause), warms both workers up, then runs two sweeps on fresh data,
checkpoints on. *Daily*: 100,000 ``raybt.demo.SmaCross`` (fast 2..201 × slow 210..709) on 2,148 synthetic daily
bars, batch_size 10,000. *Hourly*: 50,000 (fast 2..201 × slow 210..459) × the years 2022 and 2023 of synthetic
hourly data = 100,000 backtests, batch_size 5,000. Costs ``initial_amount=10_000, fees=0.001``. Figures per
backtest: wall × 2 cores, and the CPU time of the Ray processes (workers and daemons, from psutil).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, tempfile, time
import psutil, ray
import raybt
from raybt.demo import SmaCross

def without_pause():
    import contextlib, raybt.batch
    raybt.batch.cyclic_gc_paused = contextlib.nullcontext

def ray_cpu():
    return sum(sum(p.cpu_times()[:2]) for p in psutil.Process().children(recursive=True) if p.is_running())

kind, variant = sys.argv[1], sys.argv[2]
ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
         runtime_env={"worker_process_setup_hook": without_pause} if variant == "off" else None)
if kind == "daily":
    data = lambda seed: raybt.synthetic_ohlcv(["X"], "2015-01-01", "2020-11-18", "1D", seed=seed)
    strategies = [SmaCross(fast=f, slow=s) for f in range(2, 202) for s in range(210, 710)]
    options = dict(batch_size=10_000, checkpoint_batch_size=20_000)
else:
    data = lambda seed: raybt.synthetic_ohlcv(["X"], "2022-01-01", "2024-01-01", "1h", seed=seed)
    strategies = [SmaCross(fast=f, slow=s) for f in range(2, 202) for s in range(210, 460)]
    options = dict(batch_size=5_000, checkpoint_batch_size=10_000,
                   date_ranges=[raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
                                raybt.DateRange("2023-01-01", "2024-01-01", name="2023")])
options.update(initial_amount=10_000, fees=0.001, n_workers=2, show_progress=False)
for _ in range(2):  # both workers up and warm
    raybt.run_backtests(strategies[:4_000], data(1), **{**options, "batch_size": 1_000})
figures = []
for seed in (2, 3):
    cpu, wall = ray_cpu(), time.perf_counter()
    results = raybt.run_backtests(strategies, data(seed), checkpoint_dir=tempfile.mkdtemp(), **options)
    wall, cpu = time.perf_counter() - wall, ray_cpu() - cpu
    figures.append((wall * 2 / results.n_computed * 1e6, cpu / results.n_computed * 1e6))
print(json.dumps(figures))
'''


def measure(kind: str, variant: str) -> list[list[float]]:
    done = subprocess.run([sys.executable, "-c", CHILD, kind, variant], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{kind} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="on/off process pairs per workload")
    args = parser.parse_args()
    for kind in ("daily", "hourly"):
        runs: dict[str, list[list[float]]] = {"on": [], "off": []}
        for pair in range(args.pairs):
            for variant in ("on", "off") if pair % 2 == 0 else ("off", "on"):
                runs[variant] += measure(kind, variant)
        medians = {variant: [statistics.median(run[i] for run in figures) for i in (0, 1)]
                   for variant, figures in runs.items()}
        (on_wall, on_cpu), (off_wall, off_cpu) = medians["on"], medians["off"]
        print(f"{kind}, 100,000 backtests on 2 Ray workers, µs per backtest (median of {len(runs['on'])} sweeps):"
              f" paused {on_wall:.1f} per core, {on_cpu:.1f} Ray CPU; not paused {off_wall:.1f} per core, "
              f"{off_cpu:.1f} Ray CPU; not paused / paused {off_wall / on_wall:.2f} (wall), {off_cpu / on_cpu:.2f} (CPU)")


if __name__ == "__main__":
    main()
