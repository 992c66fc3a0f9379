"""Sweep benchmark: end-to-end wall time, resume, parallel efficiency, memory, a ProcessPoolExecutor baseline.

    python benchmarks/bench_sweep.py                  # e2e + resume + baseline + 100k efficiency (a few minutes)
    python benchmarks/bench_sweep.py --million        # ... and the 1,000,000-backtest flat-memory run (+ minutes)
    python benchmarks/bench_sweep.py --quick          # every workload 10x smaller: a smoke test of the script
    python benchmarks/bench_sweep.py --no-efficiency  # skip the 100k efficiency runs
    python benchmarks/bench_sweep.py --only e2e,rerun --repeat 3    # some scenario groups, repeated

Scenario groups (each scenario runs in a fresh subprocess — this script re-invoked with ``--scenario NAME`` — which
prints one ``BENCH_RESULT {json}`` line; so every measurement starts with no Ray running and nothing cached):

``e2e``        The examples/sweep.py workload: 5,000 SmaCross parameter sets (fast 2..101 × slow 60..305 step 5) × 2
               date ranges (2022, 2023) on 2 years of synthetic hourly BTC/EUR (17,520 bars, seed 0) = 10,000
               backtests, fees=0.001, batch_size=250, checkpoint_batch_size=2,000, checkpoints in a fresh temporary
               directory; with ``n_workers`` None, 1 and -1. "sweep" time = from just before ``run_backtests`` to
               after ``results.df`` is materialised, in the subprocess (includes Ray start for -1); "process" time =
               the whole subprocess as the parent sees it (interpreter start, imports, data, sweep, Ray shutdown,
               exit). Target: 10,000 in ≤ 10 s with -1.
``rerun``      A fresh subprocess runs the same sweep with ``n_workers=-1`` on the checkpoint directory the -1 run
               filled: everything is skipped. Reports the time and whether Ray was imported / initialised / any child
               process started. Target: ≤ 3 s, Ray not started.
``baseline``   The same 10,000 backtests the way the user's guide does it without raybt: a
               ``ProcessPoolExecutor(max_workers=2)``, the MarketData pickled into every submitted task of 250 jobs,
               each worker calling ``raybt.run_backtest(strategy, data, date_range, fees=0.001)`` per job and
               returning metrics dicts, the driver collecting with ``as_completed`` and writing one Parquet file per
               1,000 rows with pandas, then reading them back into one DataFrame. Note that ``run_backtest`` also
               builds the equity Series and trades DataFrame of each job, which the sweep path does not.
``efficiency`` 100,000 backtests: 50,000 SmaCross sets (fast 2..201 × slow 210..459) × 2 half-year ranges on ONE
               year of synthetic hourly data (2023, 8,760 bars — shorter than the e2e data to keep the run to a few
               minutes), batch_size=500, checkpoint_batch_size=5,000, checkpoints on. Two subprocesses: n_workers=1
               (in-process) and n_workers=-1 (Ray tasks on all CPUs). Each first runs a small warm-up sweep in the same
               process on *different* data (seed 1, so no indicator cache is shared with the timed run) — for -1 this
               starts Ray and warms both workers — and then times the 100k run. Speed-up = t(1) / t(-1) with Ray
               already up; efficiency = speed-up / n_cpus. Also shown "incl. start" = t(1) / (t(-1) + Ray start +
               warm-up). Target: speed-up ≥ 1.8 on 2 CPUs.
``million``    (only with ``--million``) 1,000,000 backtests: 500,000 SizedSmaCross (benchmarks/_bench_strategies.py;
               fast 2..21 × slow 22..71 × size 0.500..0.999) × 2 ranges of 150 bars on a SMALL data set of 300 hourly
               bars (so the run takes minutes, not hours), n_workers=-1, batch_size=2,000,
               checkpoint_batch_size=50,000. Driver RSS growth is measured from just before ``run_backtests``
               (building the 500,000 strategy objects is reported separately) and read at 10 %, 20 %, …, 100 % of the
               jobs (progress = Parquet parts on disk). ``results.df`` (1M rows) is materialised after the run and its
               memory reported separately. Target: ≤ 500 MB driver growth during the run.

Memory: driver RSS is sampled every 50 ms by a thread ("growth" = peak − RSS just before the sweep); Ray workers
(descendants of the subprocess named ``ray::IDLE`` / ``ray::_run_remote``) and pool workers have their private memory
(USS, ``memory_full_info().uss``) sampled every second while the sweep runs; "Ray total" is the USS of every process
the subprocess started (gcs, raylet, agents, workers) after the sweep. Checkpoint size = bytes on disk.

Isolation: subprocesses run with RAY_ADDRESS unset and a private RAY_TMPDIR, so each starts its own local Ray even
when another Ray cluster (e.g. a ``ray start`` from someone's tests) runs on the machine and would otherwise be found
through its address file. Before the scenarios, a throw-away subprocess runs a few backtests of each workload so
numba's on-disk cache is current (no scenario pays a first compile because raybt's source changed); the summary warns
if raybt's source changes while the benchmark runs. A scenario whose results are incomplete or contain failed
backtests is reported as FAILED (INVALID RUN), never as a time.

Noise: the machine is shared. Before each scenario the parent waits (``--wait-quiet``, default up to 120 s) until
fewer than ``--quiet-cores`` (0.3) cores are busy with other work, and prints the background load it saw. Each
scenario reports the CPU seconds used by its own process tree and by everything else on the machine during the timed
part ("other CPU"), so a slow figure can be told apart from a busy neighbour.
``--quick`` divides every job count by 10 (figures are then not comparable with the targets).
"""

from __future__ import annotations

import time

_T_START = time.perf_counter()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import psutil  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
MARKER = "BENCH_RESULT "
MB = 2**20

TARGET_E2E_S = 10.0
TARGET_RERUN_S = 3.0
TARGET_SPEEDUP = 1.8
TARGET_MILLION_GROWTH_MB = 500.0

E2E_BATCH, E2E_PART = 250, 2_000          # as examples/sweep.py
EFF_BATCH, EFF_PART = 500, 5_000
BASELINE_ROWS_PER_FILE = 1_000


# ====================================================================================================== workloads

def _sma_cross():
    sys.path.insert(0, str(EXAMPLES))
    from sma_crossover import SmaCross
    return SmaCross


def sweep_workload(quick: bool):
    """examples/sweep.py: 5,000 SmaCross sets × 2 yearly ranges on 2 years of hourly data (quick: 500 sets)."""
    import raybt
    SmaCross = _sma_cross()
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2022-01-01", "2024-01-01", "1h", seed=0)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    fasts = range(2, 12) if quick else range(2, 102)
    strategies = [SmaCross(fast=fast, slow=slow) for fast in fasts for slow in range(60, 310, 5)]
    return data, ranges, strategies


def efficiency_workload(quick: bool, seed: int = 0):
    """50,000 SmaCross sets × 2 half-year ranges on 1 year of hourly data (quick: 5,000 sets)."""
    import raybt
    SmaCross = _sma_cross()
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2023-01-01", "2024-01-01", "1h", seed=seed)
    ranges = [raybt.DateRange("2023-01-01", "2023-07-01", name="2023H1"),
              raybt.DateRange("2023-07-01", "2024-01-01", name="2023H2")]
    fasts = range(2, 22) if quick else range(2, 202)
    strategies = [SmaCross(fast=fast, slow=slow) for fast in fasts for slow in range(210, 460)]
    return data, ranges, strategies


def million_data():
    """300 hourly bars, two ranges of 150 bars."""
    import raybt
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2024-01-01", "2024-01-13 12:00", "1h", seed=0)
    ranges = [raybt.DateRange("2024-01-01", "2024-01-07 06:00", name="a"),
              raybt.DateRange("2024-01-07 06:00", "2024-01-13 12:00", name="b")]
    return data, ranges


def million_strategies(quick: bool):
    """500,000 SizedSmaCross: 20 fast × 50 slow × 500 sizes (quick: 50 sizes → 50,000)."""
    sys.path.insert(0, str(HERE))
    from _bench_strategies import SizedSmaCross
    n_sizes = 50 if quick else 500
    sizes = [round(0.5 + i / 1000, 3) for i in range(n_sizes)]
    return [SizedSmaCross(fast=fast, slow=slow, size=size)
            for fast in range(2, 22) for slow in range(22, 72) for size in sizes]


# ====================================================================================================== monitoring

def _cmd(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline() or [proc.name()]
    except psutil.Error:
        return []


def is_ray_worker(cmd: list[str]) -> bool:
    """A Ray worker process: titled ``ray::IDLE`` / ``ray::<task>`` (not the ``ray::…Agent`` helpers), or a python
    running default_worker.py (before it sets its title). The raylet's own command line names default_worker.py
    too, hence the check on the program."""
    if not cmd:
        return False
    if cmd[0].startswith("ray::"):
        return "Agent" not in cmd[0]
    return os.path.basename(cmd[0]).startswith("python") and any(a.endswith("default_worker.py") for a in cmd[1:3])


def dir_bytes(path: str | None) -> int:
    if not path or not os.path.isdir(path):
        return 0
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def count_parts(path: str | None) -> int:
    if not path:
        return 0
    try:
        return sum(1 for e in os.scandir(os.path.join(path, "parts"))
                   if e.name.startswith("part-") and e.name.endswith(".parquet"))
    except FileNotFoundError:
        return 0


def _busy_cpu_seconds() -> float:
    """CPU seconds the machine's processes have used (not idle, I/O wait, hypervisor steal; guest time is already in
    user time on Linux)."""
    t = psutil.cpu_times()
    return (sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "steal", 0.0) - getattr(t, "guest", 0.0)
            - getattr(t, "guest_nice", 0.0))


def background_cores(seconds: float = 2.0) -> float:
    """Cores busy on the machine over ``seconds`` (this process idles meanwhile): the noise from other users."""
    before = _busy_cpu_seconds()
    time.sleep(seconds)
    return (_busy_cpu_seconds() - before) / seconds


def wait_quiet(max_wait: float, threshold: float) -> tuple[float, float]:
    """Wait (at most ``max_wait`` s) until fewer than ``threshold`` cores are busy; (seconds waited, busy cores)."""
    started = time.perf_counter()
    busy = background_cores()
    while busy >= threshold and time.perf_counter() - started < max_wait:
        busy = background_cores()
    return time.perf_counter() - started, busy


class Monitor:
    """Samples, from threads, this process's RSS every ``interval`` s (plus Ray start and checkpoint parts), and its
    descendants every ``slow`` s: CPU seconds, which workers ran tasks, and worker USS every ``uss_every`` s.

    ``workers``: "ray" (Ray worker processes), "children" (direct children, e.g. a process pool) or None."""

    def __init__(self, *, interval: float = 0.05, slow: float = 0.25, uss_every: float | None = 1.0,
                 workers: str | None = None, parts_dir: str | None = None, watch_ray: bool = False):
        self.me = psutil.Process()
        self.interval, self.slow, self.uss_every = interval, slow, uss_every
        self.workers, self.parts_dir, self.watch_ray = workers, parts_dir, watch_ray
        self.samples: list[tuple[float, int, int]] = []       # (seconds since start, rss bytes, parts on disk)
        self.procs: dict[int, dict] = {}                      # pid -> name, cpu, worker, busy, peak_uss
        self.ray_up_s: float | None = None
        self.first_task_s: float | None = None
        self.growth_at_first_task_mb: float | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_uss = -math.inf

    def start(self) -> None:
        gc.collect()
        self.rss_before = self.me.memory_info().rss
        self.parts_before = count_parts(self.parts_dir)
        self.cpu_me_before = sum(self.me.cpu_times()[:2])
        self.busy_before = _busy_cpu_seconds()
        self.t0 = time.perf_counter()
        self.scan(uss=False)  # descendants already running (e.g. a Ray started earlier): their CPU so far
        for info in self.procs.values():
            info["cpu_start"] = info["cpu_s"]
        self._threads = [threading.Thread(target=self._fast, daemon=True),
                         threading.Thread(target=self._slow, daemon=True)]
        for thread in self._threads:
            thread.start()

    def now(self) -> float:
        return time.perf_counter() - self.t0

    def sample(self) -> None:
        """Take a fast sample now (e.g. right after the sweep returns, so its last checkpoint part is counted)."""
        self._sample_fast()

    def _sample_fast(self) -> None:
        self.samples.append((self.now(), self.me.memory_info().rss, count_parts(self.parts_dir)))
        if self.watch_ray and self.ray_up_s is None:
            ray = sys.modules.get("ray")
            if ray is not None and getattr(ray, "is_initialized", lambda: False)():
                self.ray_up_s = self.now()

    def _fast(self) -> None:
        while not self._stop.is_set():
            self._sample_fast()
            self._stop.wait(self.interval)

    def _slow(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(self.slow)

    def scan(self, uss: bool | None = None) -> None:
        """Record every descendant's CPU time (and worker USS when due)."""
        if uss is None:
            uss = self.uss_every is not None and self.now() - self._last_uss >= self.uss_every
        if uss:
            self._last_uss = self.now()
        try:
            children = self.me.children(recursive=True)
        except psutil.Error:
            return
        for proc in children:
            try:
                info = self.procs.setdefault(proc.pid, {"pid": proc.pid, "name": "", "cpu_s": 0.0, "cpu_start": 0.0,
                                                        "worker": False, "busy": False, "peak_uss_mb": 0.0,
                                                        "growth_at_first_task_mb": None})
                cmd = _cmd(proc)
                if cmd:
                    info["name"] = " ".join(cmd)[:60].strip()
                info["cpu_s"] = sum(proc.cpu_times()[:2])
                if self.workers == "ray":
                    info["worker"] = info["worker"] or is_ray_worker(cmd)
                    if cmd and "_run_remote" in cmd[0]:
                        info["busy"] = True
                        if self.first_task_s is None:
                            self.first_task_s = self.now()
                            self.growth_at_first_task_mb = (self.me.memory_info().rss - self.rss_before) / MB
                elif self.workers == "children":
                    info["worker"] = info["busy"] = proc.ppid() == self.me.pid
                if uss and info["worker"]:
                    info["peak_uss_mb"] = max(info["peak_uss_mb"], proc.memory_full_info().uss / MB)
            except psutil.Error:
                continue

    def stop(self) -> None:
        """Stop sampling (one last sample of everything first)."""
        self._sample_fast()
        self.scan(uss=self.uss_every is not None)
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.elapsed = self.now()
        self.cpu_me = sum(self.me.cpu_times()[:2]) - self.cpu_me_before
        self.busy = _busy_cpu_seconds() - self.busy_before

    def peak_growth_mb(self, until: float = math.inf) -> float:
        rss = [r for t, r, _ in self.samples if t <= until]
        return (max(rss) - self.rss_before) / MB if rss else float("nan")

    def report(self) -> dict:
        descendants_cpu = sum(p["cpu_s"] - p["cpu_start"] for p in self.procs.values())
        workers = sorted((p for p in self.procs.values() if p["worker"]), key=lambda p: p["cpu_start"] - p["cpu_s"])
        return {
            "driver_rss_before_mb": self.rss_before / MB,
            "driver_peak_growth_mb": self.peak_growth_mb(),
            "n_rss_samples": len(self.samples),
            "ray_up_s": self.ray_up_s,
            "first_task_s": self.first_task_s,
            "growth_at_first_task_mb": self.growth_at_first_task_mb,
            "workers": [{**{k: p[k] for k in ("pid", "name", "busy", "peak_uss_mb")},
                         "cpu_s": p["cpu_s"] - p["cpu_start"]} for p in workers],
            "cpu": {"elapsed_s": self.elapsed, "driver_s": self.cpu_me, "descendants_s": descendants_cpu,
                    "machine_busy_s": self.busy, "other_s": self.busy - self.cpu_me - descendants_cpu,
                    "n_cpus": os.cpu_count()},
        }


def ray_footprint_mb() -> dict:
    """USS of every descendant of this process (the Ray processes it started), now."""
    total, n = 0, 0
    for proc in psutil.Process().children(recursive=True):
        try:
            total += proc.memory_full_info().uss
            n += 1
        except psutil.Error:
            pass
    return {"ray_total_uss_mb": total / MB, "ray_n_processes": n}


def shutdown_ray() -> float:
    """Shut down a Ray this process started (if any); seconds it took."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return 0.0
    t = time.perf_counter()
    ray.shutdown()
    return time.perf_counter() - t


def parse_workers(text: str) -> int | None:
    return None if text.lower() == "none" else int(text)


def results_summary(results, df) -> dict:
    errors = int(df["error"].notna().sum()) if "error" in df else -1
    return {"n_computed": results.n_computed, "n_skipped": results.n_skipped, "n_rows": len(df),
            "n_errors": errors, "sum_job_s": float(df["duration_s"].sum()) if "duration_s" in df else float("nan")}


def check_rows(df, n_expected: int) -> None:
    """A timing is only valid if every backtest ran: all rows there, none with an error (raybt's code is being
    changed concurrently; a broken state must not pass for a fast one)."""
    if len(df) != n_expected:
        raise RuntimeError(f"INVALID RUN: {len(df):,} result rows, expected {n_expected:,}")
    failed = df["error"].dropna() if "error" in df else []
    if len(failed):
        raise RuntimeError(f"INVALID RUN: {len(failed):,} of {n_expected:,} backtests failed; first error:\n"
                           f"{str(failed.iloc[0])[:1500]}")


# ====================================================================================================== scenarios
# Each runs in its own subprocess and returns a dict that is printed as one JSON line.

def timed_e2e_sweep(raybt, data, ranges, strategies, n_workers, checkpoint_dir) -> tuple[dict, Monitor]:
    """The e2e sweep (``run_backtests`` then ``results.df``), timed under a Monitor of Ray's processes, its rows
    checked: ``(figures, monitor)``."""
    monitor = Monitor(workers="ray", watch_ray=True)
    monitor.start()
    t0 = time.perf_counter()
    results = raybt.run_backtests(strategies, data, date_ranges=ranges, initial_amount=10_000, fees=0.001,
                                  n_workers=n_workers, batch_size=E2E_BATCH, checkpoint_dir=checkpoint_dir,
                                  checkpoint_batch_size=E2E_PART, show_progress=False, continue_on_error=True)
    t1 = time.perf_counter()
    df = results.df
    t2 = time.perf_counter()
    monitor.stop()
    check_rows(df, len(strategies) * len(ranges))
    figures = {"n_jobs": len(strategies) * len(ranges), "run_s": t1 - t0, "df_s": t2 - t1, "sweep_s": t2 - t0,
               **results_summary(results, df), **monitor.report()}
    return figures, monitor


def scenario_e2e(args) -> dict:
    t = time.perf_counter()
    import raybt
    _sma_cross()
    import_s = time.perf_counter() - t
    t = time.perf_counter()
    data, ranges, strategies = sweep_workload(args.quick)
    setup_s = time.perf_counter() - t
    figures, _ = timed_e2e_sweep(raybt, data, ranges, strategies, parse_workers(args.workers), args.checkpoint_dir)
    out = {"n_workers": args.workers, "import_s": import_s, "setup_s": setup_s, **figures, **ray_footprint_mb(),
           "checkpoint_mb": dir_bytes(args.checkpoint_dir) / MB}
    out["shutdown_s"] = shutdown_ray()
    out["child_total_s"] = time.perf_counter() - _T_START
    return out


def scenario_rerun(args) -> dict:
    t = time.perf_counter()
    import raybt
    _sma_cross()
    import_s = time.perf_counter() - t
    data, ranges, strategies = sweep_workload(args.quick)
    figures, monitor = timed_e2e_sweep(raybt, data, ranges, strategies, -1, args.checkpoint_dir)
    ray_imported = "ray" in sys.modules
    ray_initialised = bool(ray_imported and sys.modules["ray"].is_initialized())
    out = {"import_s": import_s, **figures, "ray_imported": ray_imported, "ray_initialised": ray_initialised,
           "ray_tasks_module_imported": "raybt.executors.ray_tasks" in sys.modules,
           "child_processes": len(psutil.Process().children(recursive=True)),
           "ray_started": ray_initialised or len(monitor.procs) > 0}
    out["shutdown_s"] = shutdown_ray()
    out["child_total_s"] = time.perf_counter() - _T_START
    return out


def _baseline_task(market, jobs):
    """One submitted task of the baseline: run each (strategy, date range) with run_backtest, return metrics dicts."""
    import raybt
    rows = []
    for strategy, date_range in jobs:
        started = time.perf_counter()
        backtest = raybt.run_backtest(strategy, market, date_range, fees=0.001)
        rows.append({"strategy_id": strategy.id, "strategy": type(strategy).__qualname__, **strategy.params,
                     "range": date_range.name, **backtest.metrics, "duration_s": time.perf_counter() - started})
    return rows


def scenario_baseline(args) -> dict:
    from concurrent.futures import ProcessPoolExecutor, as_completed
    t = time.perf_counter()
    import pandas as pd
    import raybt  # noqa: F401
    _sma_cross()
    import_s = time.perf_counter() - t
    data, ranges, strategies = sweep_workload(args.quick)
    jobs = [(strategy, date_range) for strategy in strategies for date_range in ranges]
    out_dir = args.checkpoint_dir
    os.makedirs(out_dir, exist_ok=True)
    monitor = Monitor(workers="children")
    monitor.start()
    t0 = time.perf_counter()
    buffer: list[dict] = []
    n_files = 0

    def write(rows: list[dict]) -> None:
        nonlocal n_files
        pd.DataFrame(rows).to_parquet(os.path.join(out_dir, f"part-{n_files:05d}.parquet"))
        n_files += 1

    with ProcessPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(_baseline_task, data, jobs[i:i + E2E_BATCH]) for i in range(0, len(jobs), E2E_BATCH)]
        for future in as_completed(futures):
            buffer.extend(future.result())
            while len(buffer) >= BASELINE_ROWS_PER_FILE:
                write(buffer[:BASELINE_ROWS_PER_FILE])
                del buffer[:BASELINE_ROWS_PER_FILE]
        monitor.scan(uss=True)  # before the pool's processes exit
    if buffer:
        write(buffer)
    df = pd.read_parquet(out_dir)
    t1 = time.perf_counter()
    monitor.stop()
    if len(df) != len(jobs):
        raise RuntimeError(f"INVALID RUN: {len(df):,} rows, expected {len(jobs):,}")
    return {"n_jobs": len(jobs), "import_s": import_s, "sweep_s": t1 - t0, "n_rows": len(df), "n_files": n_files,
            "sum_job_s": float(df["duration_s"].sum()), **monitor.report(), "checkpoint_mb": dir_bytes(out_dir) / MB,
            "child_total_s": time.perf_counter() - _T_START}


def scenario_efficiency(args) -> dict:
    t = time.perf_counter()
    import raybt
    _sma_cross()
    import_s = time.perf_counter() - t
    n_workers = parse_workers(args.workers)
    data, ranges, strategies = efficiency_workload(args.quick)
    warm_data, _, _ = efficiency_workload(True, seed=1)
    # Warm-up on other data: JIT/cache loading, imports, and (for -1) Ray start and both workers up. For -1 it asks
    # for Ray at once (address="local"): a sweep this small would otherwise finish in-process without starting Ray,
    # and so would the timed one (under the hand-over executor's 10 s), which is then no measure of Ray.
    t = time.perf_counter()
    raybt.run_backtests(strategies[:200], warm_data, date_ranges=ranges, fees=0.001, n_workers=n_workers,
                        batch_size=20, show_progress=False, address="local" if n_workers == -1 else None)
    warmup_s = time.perf_counter() - t
    monitor = Monitor(workers="ray", uss_every=None, parts_dir=args.checkpoint_dir)   # no USS: don't perturb
    monitor.start()
    t0 = time.perf_counter()
    results = raybt.run_backtests(strategies, data, date_ranges=ranges, fees=0.001, n_workers=n_workers,
                                  batch_size=EFF_BATCH, checkpoint_dir=args.checkpoint_dir,
                                  checkpoint_batch_size=EFF_PART, show_progress=False, continue_on_error=True)
    t1 = time.perf_counter()
    df = results.df
    t2 = time.perf_counter()
    monitor.stop()
    check_rows(df, len(strategies) * len(ranges))
    ray = sys.modules.get("ray")
    n_cpus = int(ray.cluster_resources().get("CPU", 0)) if ray is not None and ray.is_initialized() else 1
    out = {"n_workers": args.workers, "n_jobs": len(strategies) * len(ranges), "import_s": import_s,
           "warmup_s": warmup_s, "run_s": t1 - t0, "df_s": t2 - t1, "sweep_s": t2 - t0, "n_cpus_used": n_cpus,
           **results_summary(results, df), **monitor.report(), "checkpoint_mb": dir_bytes(args.checkpoint_dir) / MB}
    out["shutdown_s"] = shutdown_ray()
    out["child_total_s"] = time.perf_counter() - _T_START
    return out


def scenario_million(args) -> dict:
    t = time.perf_counter()
    import raybt
    import_s = time.perf_counter() - t
    data, ranges = million_data()
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    t = time.perf_counter()
    strategies = million_strategies(args.quick)
    strategies_s = time.perf_counter() - t
    gc.collect()
    strategies_mb = (psutil.Process().memory_info().rss - rss0) / MB
    n_jobs = len(strategies) * len(ranges)
    batch, part = (200, 5_000) if args.quick else (2_000, 50_000)
    expected_parts = math.ceil(n_jobs / part)
    monitor = Monitor(workers="ray", watch_ray=True, parts_dir=args.checkpoint_dir)
    monitor.start()
    t0 = time.perf_counter()
    results = raybt.run_backtests(strategies, data, date_ranges=ranges, fees=0.001, n_workers=-1,
                                  batch_size=batch, checkpoint_dir=args.checkpoint_dir, checkpoint_batch_size=part,
                                  show_progress=False, continue_on_error=True)
    t1 = time.perf_counter()
    monitor.sample()
    run_end = monitor.now()
    n_computed = results.n_computed
    progress = []
    for tenth in range(1, 11):
        need = math.ceil(expected_parts * tenth / 10)
        hit = next(((t_, r) for t_, r, parts in monitor.samples if parts - monitor.parts_before >= need), None)
        if hit is not None:
            progress.append({"fraction": tenth / 10, "t_s": hit[0], "growth_mb": (hit[1] - monitor.rss_before) / MB,
                             "peak_growth_so_far_mb": monitor.peak_growth_mb(until=hit[0])})
    footprint = ray_footprint_mb()
    checkpoint_mb = dir_bytes(args.checkpoint_dir) / MB
    n_parts = count_parts(args.checkpoint_dir)
    # materialising 1M rows is reported apart from the run itself
    t2 = time.perf_counter()
    df = results.df
    t3 = time.perf_counter()
    n_rows, n_errors = len(df), int(df["error"].notna().sum())
    sum_job_s = float(df["duration_s"].sum())
    check_rows(df, n_jobs)
    del df, results
    monitor.stop()
    return {"n_jobs": n_jobs, "n_strategies": len(strategies), "n_bars": data.n_bars, "batch_size": batch,
            "checkpoint_batch_size": part, "import_s": import_s, "strategies_s": strategies_s,
            "strategies_rss_mb": strategies_mb, "run_s": t1 - t0, "df_s": t3 - t2, "n_computed": n_computed,
            "n_rows": n_rows, "n_errors": n_errors, "sum_job_s": sum_job_s, "progress": progress,
            "run_peak_growth_mb": monitor.peak_growth_mb(until=run_end), "expected_parts": expected_parts,
            "n_parts": n_parts, **monitor.report(), **footprint, "checkpoint_mb": checkpoint_mb,
            "shutdown_s": shutdown_ray(), "child_total_s": time.perf_counter() - _T_START}


def scenario_warmcache(args) -> dict:
    """Not a measurement: run both workloads' code paths in-process once so numba's on-disk cache is current."""
    import raybt
    data, ranges, strategies = sweep_workload(True)
    raybt.run_backtests(strategies[:20], data, date_ranges=ranges, fees=0.001, show_progress=False)
    data, ranges = million_data()
    raybt.run_backtests(million_strategies(True)[:20], data, date_ranges=ranges, fees=0.001, show_progress=False)
    data, ranges, strategies = efficiency_workload(True)
    raybt.run_backtests(strategies[:20], data, date_ranges=ranges, fees=0.001, show_progress=False)
    return {"child_total_s": time.perf_counter() - _T_START}


SCENARIOS = {"e2e": scenario_e2e, "rerun": scenario_rerun, "baseline": scenario_baseline,
             "efficiency": scenario_efficiency, "million": scenario_million, "warmcache": scenario_warmcache}


def run_child(args) -> None:
    try:
        out = {"ok": True, **SCENARIOS[args.scenario](args)}
    except BaseException as exc:  # noqa: BLE001 - report any failure to the parent
        import traceback
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}
        shutdown_ray()
    out["scenario"] = args.scenario
    out["loadavg_end"] = os.getloadavg()
    print(MARKER + json.dumps(out, default=float), flush=True)


# ====================================================================================================== parent

class Runner:
    script = Path(__file__).resolve()
    """The script each scenario subprocess runs (``script --scenario NAME``); a subclass in another benchmark sets
    its own file."""

    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bench_sweep_")
        # Ray's own temporary directory for the subprocesses: private and short (Ray puts Unix sockets in it).
        self.ray_tmp = tempfile.mkdtemp(prefix="bsw_ray_", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.records: list[dict] = []

    def run(self, scenario: str, label: str, timeout: float, **options) -> dict:
        command = [sys.executable, str(self.script), "--scenario", scenario]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        if self.args.quick:
            command.append("--quick")
        # A fresh local Ray in every subprocess, never one that happens to run on this machine: no RAY_ADDRESS,
        # and a private RAY_TMPDIR, so ray.init() does not find another `ray start` cluster's address file.
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env["RAY_TMPDIR"] = self.ray_tmp
        waited, background = wait_quiet(self.args.wait_quiet, self.args.quiet_cores)
        print(f"[{time.strftime('%H:%M:%S')}] {label} (background load {background:.2f} cores"
              f"{f', after waiting {waited:.0f} s' if waited > 2.5 else ''}) ...", flush=True)
        load = os.getloadavg()
        t = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=str(HERE.parent), start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the subprocess's own session: it and the Ray it started
            stdout, stderr = proc.communicate()
        wall = time.perf_counter() - t
        line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(MARKER)), None)
        if line is None:
            record = {"ok": False, "error": f"no result (exit code {proc.returncode}); stderr tail:\n"
                                            f"{stderr[-3000:]}"}
        else:
            record = json.loads(line[len(MARKER):])
        record.update(label=label, scenario=scenario, process_wall_s=wall, exit_code=proc.returncode,
                      loadavg_start=load, background_cores_start=background, waited_s=waited, options=options)
        if not record.get("ok"):
            print(f"    FAILED: {record.get('error')}\n{record.get('traceback', '')}", flush=True)
        else:
            print("    " + describe(record), flush=True)
        self.records.append(record)
        return record

    def checkpoint_dir(self, name: str) -> str:
        return os.path.join(self.tmp, name)


def _f(value, fmt=".2f", unit="") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:{fmt}}{unit}"


def describe(r: dict) -> str:
    cpu = r.get("cpu", {})
    parts = ([f"sweep {_f(r.get('sweep_s', r.get('run_s')))} s"] if "sweep_s" in r or "run_s" in r else []) \
        + [f"process {_f(r['process_wall_s'])} s"]
    if "import_s" in r:
        parts.append(f"imports {_f(r['import_s'])} s")
    if r.get("ray_up_s") is not None:
        parts.append(f"Ray up at {_f(r['ray_up_s'])} s")
    if r.get("first_task_s") is not None:
        parts.append(f"first task seen at {_f(r['first_task_s'])} s")
    if "warmup_s" in r:
        parts.append(f"warm-up {_f(r['warmup_s'])} s")
    if "n_rows" in r:
        parts.append(f"rows {r['n_rows']:,}")
    if "driver_peak_growth_mb" in r:
        parts.append(f"driver growth {_f(r['driver_peak_growth_mb'], '.0f')} MB")
    if cpu:
        parts.append(f"CPU-s own {_f(cpu['driver_s'] + cpu['descendants_s'], '.1f')} / other "
                     f"{_f(cpu['other_s'], '.1f')} over {_f(cpu['elapsed_s'], '.1f')} s")
    return ", ".join(parts)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main_parent(args) -> None:
    if args.only:  # explicit groups win over --efficiency / --million
        groups = {g.strip() for g in args.only.split(",") if g.strip()}
        known = set(SCENARIOS) - {"warmcache"}
        if groups - known:
            raise SystemExit(f"unknown groups {sorted(groups - known)}; choose from {sorted(known)}")
    else:
        groups = {"e2e", "rerun", "baseline"} | ({"efficiency"} if args.efficiency else set()) \
            | ({"million"} if args.million else set())
    if "rerun" in groups:
        groups.add("e2e")
    runner = Runner(args)
    scale = 10 if args.quick else 1
    print(f"bench_sweep: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, Python "
          f"{sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}; groups {sorted(groups)}"
          f"{' (QUICK: workloads / 10)' if args.quick else ''}; temporary files in {runner.tmp}", flush=True)
    code = code_state()
    print(f"raybt code: {code['describe']}", flush=True)
    # Compile (or load) every numba kernel once, so no scenario pays a first compile after someone edited raybt.
    runner.run("warmcache", "warm the numba on-disk cache (not a measurement)", 900)
    try:
        e2e: dict[str, list[dict]] = {}
        if "e2e" in groups:
            for rep in range(args.repeat):
                for workers in ("None", "1", "-1"):
                    record = runner.run("e2e", f"e2e n_workers={workers} (rep {rep + 1})", 900, workers=workers,
                                        checkpoint_dir=runner.checkpoint_dir(f"e2e_{workers}_{rep}"))
                    e2e.setdefault(workers, []).append(record)
        rerun = []
        finished = next((r["options"]["checkpoint_dir"] for r in e2e.get("-1", []) if r.get("ok")), None)
        if "rerun" in groups and finished is None:
            print("    rerun skipped: no valid n_workers=-1 sweep to rerun", flush=True)
        elif "rerun" in groups:
            for rep in range(args.repeat):
                rerun.append(runner.run("rerun", f"rerun of the finished -1 sweep (rep {rep + 1})", 600,
                                        checkpoint_dir=finished))
        baseline = []
        if "baseline" in groups:
            for rep in range(args.repeat):
                baseline.append(runner.run("baseline", f"ProcessPoolExecutor baseline (rep {rep + 1})", 1800,
                                           checkpoint_dir=runner.checkpoint_dir(f"baseline_{rep}")))
        efficiency: list[tuple[dict, dict]] = []   # (n_workers=1, n_workers=-1) pairs, run back to back
        if "efficiency" in groups:
            for rep in range(args.repeat):
                pair = tuple(runner.run("efficiency", f"efficiency {100_000 // scale:,} jobs, n_workers={workers} "
                                        f"(rep {rep + 1})", 3600, workers=workers,
                                        checkpoint_dir=runner.checkpoint_dir(f"eff_{workers}_{rep}"))
                             for workers in ("1", "-1"))
                efficiency.append(pair)
        million = None
        if "million" in groups:
            million = runner.run("million", f"million: {1_000_000 // scale:,} jobs, n_workers=-1", 7200,
                                 checkpoint_dir=runner.checkpoint_dir("million"))
        summary(e2e, rerun, baseline, efficiency, million, args)
        changed = code_state()
        if changed["mtimes"] != code["mtimes"]:
            names = sorted(k for k in set(code["mtimes"]) | set(changed["mtimes"])
                           if code["mtimes"].get(k) != changed["mtimes"].get(k))
            print(f"WARNING: raybt source changed while the benchmark ran ({', '.join(names)}): the scenarios "
                  f"did not all measure the same code.")
    finally:
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(runner.records, handle, indent=1, default=float)
            print(f"raw results: {args.json}")
        if args.keep:
            print(f"kept {runner.tmp}")
        else:
            shutil.rmtree(runner.tmp, ignore_errors=True)
        shutil.rmtree(runner.ray_tmp, ignore_errors=True)


def code_state() -> dict:
    """Which raybt code is measured: git HEAD, modified files, and every source file's mtime."""
    root = HERE.parent

    def git(*argv: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *argv], capture_output=True, text=True,
                                  timeout=30).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "--", "raybt").splitlines()]
    mtimes = {str(p.relative_to(root)): p.stat().st_mtime for p in sorted((root / "raybt").rglob("*.py"))}
    describe = f"HEAD {git('rev-parse', '--short', 'HEAD') or '?'}"
    if dirty:
        describe += f" + uncommitted changes in {', '.join(dirty)}"
    return {"describe": describe, "mtimes": mtimes}


def _status(ok: bool | None) -> str:
    return "n/a" if ok is None else ("MET" if ok else "MISSED")


def summary(e2e, rerun, baseline, efficiency, million, args) -> None:
    rows: list[tuple[str, str, str, str]] = []

    def add(name, value, target="", ok=None):
        rows.append((name, value, target, _status(ok) if target else ""))

    def good(records):
        return [r for r in records if r.get("ok")]

    quick = " (QUICK)" if args.quick else ""
    med = {}
    for workers, records in e2e.items():
        records = good(records)
        if not records:
            add(f"e2e n_workers={workers}", "FAILED")
            continue
        med[workers] = m = {k: median([r.get(k) for r in records]) for k in
                            ("sweep_s", "process_wall_s", "child_total_s", "import_s", "run_s", "df_s",
                             "driver_peak_growth_mb", "shutdown_s", "sum_job_s")}
        n = records[0]["n_jobs"]
        target = f"<= {TARGET_E2E_S:.0f} s" if workers == "-1" else ""
        ok = m["sweep_s"] <= TARGET_E2E_S if workers == "-1" and not args.quick else None
        reps = f" (median of {len(records)}: {', '.join(_f(r['sweep_s']) for r in records)})" if len(records) > 1 \
            else ""
        add(f"e2e {n:,} jobs n_workers={workers}: sweep (run+df){quick}", f"{_f(m['sweep_s'])} s{reps}", target, ok)
        add("  backtests/s; process wall incl. imports/exit",
            f"{n / m['sweep_s']:,.0f}/s; {_f(m['process_wall_s'])} s")
        if "None" in med and workers != "None":
            add("  speed-up vs None (sweep; process)", f"{med['None']['sweep_s'] / m['sweep_s']:.2f}x; "
                f"{med['None']['process_wall_s'] / m['process_wall_s']:.2f}x")
        first = records[0]
        if workers == "-1":
            add("  Ray up / first task running (s after call)", f"{_f(first.get('ray_up_s'))} / "
                f"{_f(first.get('first_task_s'))}")
            busy = [w for w in first.get("workers", []) if w["busy"]]
            add("  worker USS peak (busy workers)", ", ".join(f"{_f(w['peak_uss_mb'], '.0f')} MB" for w in busy)
                or "n/a")
            add("  Ray total USS after sweep", f"{_f(first.get('ray_total_uss_mb'), '.0f')} MB in "
                f"{first.get('ray_n_processes')} processes")
            add("  ray.shutdown()", f"{_f(m['shutdown_s'])} s")
        add("  driver RSS growth (peak)", f"{_f(m['driver_peak_growth_mb'], '.0f')} MB")
        add("  CPU-s own / other processes, during sweep", "; ".join(
            f"{r['cpu']['driver_s'] + r['cpu']['descendants_s']:.1f} / {r['cpu']['other_s']:.1f} over "
            f"{r['cpu']['elapsed_s']:.1f} s" for r in records))
        add("  checkpoint size", f"{_f(first.get('checkpoint_mb'), '.2f')} MB")
        if m.get("sum_job_s"):
            add("  sum of per-job compute (duration_s)", f"{_f(m['sum_job_s'])} s "
                f"({m['sum_job_s'] / n * 1e3:.3f} ms/job)")

    records = good(rerun)
    if records:
        t = median([r["sweep_s"] for r in records])
        started = any(r["ray_started"] for r in records)
        wall = median([r["process_wall_s"] for r in records])
        add(f"rerun finished sweep (n_workers=-1){quick}", f"{_f(t)} s (process {_f(wall)} s)",
            f"<= {TARGET_RERUN_S:.0f} s", t <= TARGET_RERUN_S if not args.quick else None)
        add("  Ray started?", f"ray imported={records[0]['ray_imported']}, initialised="
            f"{records[0]['ray_initialised']}, child processes={records[0]['child_processes']}, "
            f"computed={records[0]['n_computed']}, skipped={records[0]['n_skipped']:,}", "not started", not started)
    elif rerun:
        add("rerun", "FAILED")

    records = good(baseline)
    if records:
        t = median([r["sweep_s"] for r in records])
        n = records[0]["n_jobs"]
        add(f"ProcessPoolExecutor baseline {n:,} jobs{quick}", f"{_f(t)} s ({n / t:,.0f}/s), process "
            f"{_f(median([r['process_wall_s'] for r in records]))} s")
        add("  baseline per-job compute (run_backtest)", f"{records[0]['sum_job_s'] / n * 1e3:.3f} ms/job")
        workers = records[0].get("workers", [])
        add("  baseline worker USS peak", ", ".join(f"{_f(w['peak_uss_mb'], '.0f')} MB" for w in workers) or "n/a")
        if "-1" in med:
            add("  raybt(-1) / baseline (sweep; process)", f"{med['-1']['sweep_s'] / t:.2f}; "
                f"{med['-1']['process_wall_s'] / median([r['process_wall_s'] for r in records]):.2f}")
    elif baseline:
        add("baseline", "FAILED")

    pairs = [(local, ray) for local, ray in efficiency if local.get("ok") and ray.get("ok")]
    if pairs:
        n = pairs[0][0]["n_jobs"]
        cpus = pairs[0][1].get("n_cpus_used") or os.cpu_count()
        speedups = [local["sweep_s"] / ray["sweep_s"] for local, ray in pairs]
        speedup = median(speedups)
        t_local = median([local["sweep_s"] for local, _ in pairs])
        t_ray = median([ray["sweep_s"] for _, ray in pairs])
        t_start = median([ray["warmup_s"] for _, ray in pairs])
        reps = f" (median of {len(pairs)} pairs: {', '.join(f'{x:.2f}' for x in speedups)})" if len(pairs) > 1 \
            else ""
        add(f"efficiency {n:,} jobs, 1 y hourly: n_workers=1{quick}", f"{_f(t_local)} s ({n / t_local:,.0f}/s)")
        add(f"  n_workers=-1 ({cpus} CPUs), Ray already up", f"{_f(t_ray)} s ({n / t_ray:,.0f}/s)")
        add("  speed-up (Ray up); efficiency", f"{speedup:.2f}x; {speedup / cpus:.0%}{reps}",
            f">= {TARGET_SPEEDUP}x", speedup >= TARGET_SPEEDUP if not args.quick else None)
        add("  Ray start + warm-up sweep; speed-up incl. it", f"{_f(t_start)} s; {t_local / (t_ray + t_start):.2f}x")

        def own_cpu(r):
            return r["cpu"]["driver_s"] + r["cpu"]["descendants_s"]

        local_cpu = median([own_cpu(local) for local, _ in pairs])
        ray_cpu = median([own_cpu(ray) for _, ray in pairs])
        worker_cpu = median([sum(w["cpu_s"] for w in ray.get("workers", [])) for _, ray in pairs])
        add("  CPU per job: in-process / Ray workers / Ray all", f"{local_cpu / n * 1e3:.3f} / "
            f"{worker_cpu / n * 1e3:.3f} / {ray_cpu / n * 1e3:.3f} ms (all = driver + workers + Ray daemons)")
        add("  speed-up bound from CPU cost (n_cpus x local/all)", f"{cpus * local_cpu / ray_cpu:.2f}x "
            "(if the CPUs were ours alone; a noise-robust cross-check)")
        for local, ray in pairs:
            for name, r in (("1", local), ("-1", ray)):
                cpu = r["cpu"]
                busy = r["sum_job_s"] / (r["run_s"] * (cpus if name == "-1" else 1))
                add(f"  {r['label']}: per-job wall in worker; busy",
                    f"{r['sum_job_s'] / n * 1e3:.3f} ms/job; {busy:.0%} of {'workers' if name == '-1' else 'driver'}"
                    f" wall")
                add(f"  {r['label']}: CPU-s driver / workers+Ray / others",
                    f"{cpu['driver_s']:.1f} / {cpu['descendants_s']:.1f} / {cpu['other_s']:.1f} over "
                    f"{cpu['elapsed_s']:.1f} s")
    elif efficiency:
        add("efficiency", "FAILED")

    if million is not None:
        if million.get("ok"):
            m = million
            add(f"million: {m['n_jobs']:,} jobs on {m['n_bars']} bars{quick}", f"{_f(m['run_s'], '.1f')} s "
                f"({m['n_jobs'] / m['run_s']:,.0f}/s), first task at {_f(m.get('first_task_s'), '.1f')} s")
            add("  building the strategies (before the call)", f"{_f(m['strategies_s'], '.1f')} s, "
                f"{_f(m['strategies_rss_mb'], '.0f')} MB")
            add("  driver growth at 10% / 50% / 100% of jobs", " / ".join(
                f"{_f(p['growth_mb'], '.0f')}" for p in m["progress"] if p["fraction"] in (0.1, 0.5, 1.0)) + " MB")
            add("  driver growth at each 10%", " ".join(f"{p['growth_mb']:.0f}" for p in m["progress"]) + " MB")
            add("  driver growth when the first task ran", f"{_f(m.get('growth_at_first_task_mb'), '.0f')} MB")
            add("  CPU-s driver / workers+Ray / others", f"{m['cpu']['driver_s']:.1f} / {m['cpu']['descendants_s']:.1f}"
                f" / {m['cpu']['other_s']:.1f} over {m['cpu']['elapsed_s']:.1f} s (incl. reading rows back)")
            add("  driver peak growth during run", f"{_f(m['run_peak_growth_mb'], '.0f')} MB",
                f"<= {TARGET_MILLION_GROWTH_MB:.0f} MB",
                m["run_peak_growth_mb"] <= TARGET_MILLION_GROWTH_MB if not args.quick else None)
            add("  reading all rows back (results.df)", f"{_f(m['df_s'], '.1f')} s, peak growth incl. it "
                f"{_f(m['driver_peak_growth_mb'], '.0f')} MB")
            busy = [w for w in m.get("workers", []) if w["busy"]]
            add("  worker USS peak (busy workers)", ", ".join(f"{_f(w['peak_uss_mb'], '.0f')} MB" for w in busy))
            add("  Ray total USS after run", f"{_f(m['ray_total_uss_mb'], '.0f')} MB")
            add("  checkpoint", f"{_f(m['checkpoint_mb'], '.1f')} MB in {m['n_parts']} parts, "
                f"{m['n_rows']:,} rows, {m['n_errors']} errors")
            add("  per-job compute", f"{m['sum_job_s'] / m['n_jobs'] * 1e3:.3f} ms/job")
        else:
            add("million", "FAILED")

    width = [max(len(r[i]) for r in rows) for i in range(4)] if rows else [0] * 4
    print("\nSummary (" + ("QUICK: workloads / 10, targets not judged" if args.quick else
                           f"{os.cpu_count()} CPUs, shared machine: expect noise") + ")")
    print(f"{'figure':<{width[0]}}  {'value':<{width[1]}}  {'target':<{width[2]}}  status")
    for name, value, target, status in rows:
        print(f"{name:<{width[0]}}  {value:<{width[1]}}  {target:<{width[2]}}  {status}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help="shrink every workload 10x (smoke test)")
    parser.add_argument("--efficiency", action=argparse.BooleanOptionalAction, default=True,
                        help="run the 100,000-backtest parallel-efficiency scenario (default on)")
    parser.add_argument("--million", action="store_true",
                        help="run the 1,000,000-backtest flat-memory scenario (default off: takes minutes)")
    parser.add_argument("--only", help="comma-separated groups: e2e,rerun,baseline,efficiency,million")
    parser.add_argument("--repeat", type=int, default=1,
                        help="repeat the e2e / rerun / baseline / efficiency scenarios (medians are reported)")
    parser.add_argument("--wait-quiet", type=float, default=120, metavar="SECONDS",
                        help="before each scenario wait up to this long for the machine to be quiet (default 120)")
    parser.add_argument("--quiet-cores", type=float, default=0.3, metavar="CORES",
                        help="'quiet' = fewer than this many cores busy with other work (default 0.3)")
    parser.add_argument("--json", help="write every scenario's raw figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary checkpoint directories")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=argparse.SUPPRESS)
    parser.add_argument("--workers", default="-1", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        run_child(args)
    else:
        main_parent(args)


if __name__ == "__main__":
    main()
