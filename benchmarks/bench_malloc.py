"""What keeping freed memory (``raybt._accel.malloc``) buys a sweep end to end: the same sweep with the setting on
and off, in alternating fresh processes.

    python benchmarks/bench_malloc.py                 # in-process and on 2 Ray workers, 3 pairs each
    python benchmarks/bench_malloc.py --only inprocess --pairs 5

*In-process*: 20,000 one-year hourly backtests (10,000 ``raybt.demo.SmaCross``, fast 2..201 × slow 210..259, × the
years 2022 and 2023 of synthetic hourly data), ``n_workers=None``, batch_size 5,000, checkpoints on; CPU time per
backtest (``time.process_time()``), two sweeps per process on fresh data after a warm-up sweep. *Ray*: 100,000 (fast
2..201 × slow 210..459 × the two years) on 2 Ray workers started by the script in both variants (``ray.init(num_cpus=2)``;
for "off", a ``worker_process_setup_hook`` keeps the workers from applying the setting, and the driver does not
either); wall time × 2 cores per backtest, after a warm-up sweep. Costs: ``initial_amount=10_000, fees=0.001``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r'''
import json, sys, tempfile, time
import raybt
from raybt.demo import SmaCross

def keep_malloc_defaults():
    import raybt._accel.malloc as malloc
    malloc._applied = False  # as if applied already: keep_freed_memory() then changes nothing

where, variant = sys.argv[1], sys.argv[2]
if variant == "off":
    keep_malloc_defaults()
n_workers, n_slow = (None, 50) if where == "inprocess" else (2, 250)
if where == "ray":
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"worker_process_setup_hook": keep_malloc_defaults} if variant == "off" else None)
strategies = [SmaCross(fast=f, slow=s) for f in range(2, 202) for s in range(210, 210 + n_slow)]
ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
          raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
options = dict(date_ranges=ranges, initial_amount=10_000, fees=0.001, n_workers=n_workers, batch_size=5_000,
               show_progress=False)
raybt.run_backtests(strategies[:4_000], raybt.synthetic_ohlcv(["X"], "2022-01-01", "2024-01-01", "1h", seed=1),
                    **options)
figures = []
for seed in (2, 3):
    data = raybt.synthetic_ohlcv(["X"], "2022-01-01", "2024-01-01", "1h", seed=seed)
    wall, cpu = time.perf_counter(), time.process_time()
    raybt.run_backtests(strategies, data, checkpoint_dir=tempfile.mkdtemp(), checkpoint_batch_size=10_000, **options)
    n = 2 * len(strategies)
    figures.append((time.process_time() - cpu) / n * 1e6 if where == "inprocess"
                   else (time.perf_counter() - wall) * 2 / n * 1e6)
print(json.dumps(figures))
'''

MEASURES = {"inprocess": "in-process, 20,000 backtests: CPU µs per backtest",
            "ray": "2 Ray workers, 100,000 backtests: wall µs per backtest per core"}


def measure(where: str, variant: str) -> list[float]:
    done = subprocess.run([sys.executable, "-c", CHILD, where, variant], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{where} {variant} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(MEASURES), help="one of the two measurements")
    parser.add_argument("--pairs", type=int, default=3, help="on/off process pairs per measurement")
    args = parser.parse_args()
    for where in [args.only] if args.only else list(MEASURES):
        runs: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.pairs):
            for variant in runs:
                runs[variant] += measure(where, variant)
        on, off = statistics.median(runs["on"]), statistics.median(runs["off"])
        print(f"{MEASURES[where]}: kept freed memory {on:.1f} (runs {sorted(round(x, 1) for x in runs['on'])}), "
              f"glibc defaults {off:.1f} (runs {sorted(round(x, 1) for x in runs['off'])}); off / on {off / on:.2f}")


if __name__ == "__main__":
    main()
