"""Small sweeps never pay for Ray: with ``n_workers=-1`` and no Ray to join, the driver computes, starts Ray in the
background only if the work left is worth it, and hands the remaining batches over once Ray is up
(raybt.executors.hybrid); and ``batch_size=None`` sizes batches from measured ones (raybt.resources.BatchSizer).

The hand-over tests replace the background start with a stand-in that reports Ray "up" after a chosen number of
local batches (the session's Ray then takes the rest), so the moment of the hand-over is under the test's control.
One test starts a real local Ray in a subprocess, to show that a sweep done first neither waits for it nor hangs at
exit.
"""

import doctest
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import raybt
from raybt.executors import hybrid, local
from raybt.executors.ray_env import LocalRayError
from raybt.resources import PROBE_JOBS, BatchSizer, adaptive_batch_size

from sweeps import GRID, SmaCross, run, same_rows

LOCAL = "local:"  # the worker column of a row computed in this process starts so


class StartAfter:
    """Stands in for :class:`hybrid.RayStart`: "finished" once ``local_batches`` batches have been looked at, or
    never (None); ``error`` is what the start failed with."""

    def __init__(self, local_batches: int | None, error: BaseException | None = None):
        self.remaining, self.error, self.error_reported = local_batches, error, False

    @property
    def finished(self) -> bool:
        if self.remaining is None:
            return False
        self.remaining -= 1
        return self.remaining < 0


@pytest.fixture()
def start_after(monkeypatch):
    """Install a stand-in start: ``start_after(n)``; sweeps with ``n_workers=-1`` then take the hand-over path even
    though the session's Ray is initialised."""
    def install(local_batches, error=None):
        start = StartAfter(local_batches, error)
        monkeypatch.setattr(hybrid, "wanted", lambda address: address is None)
        monkeypatch.setattr(hybrid, "START_RAY_ABOVE_S", 0.0)  # these sweeps are small: start Ray all the same
        monkeypatch.setattr(hybrid, "start_in_background", lambda data_bytes: start)
        return start
    return install


def _rows_by_place(df):
    local_rows = df["worker"].str.startswith(LOCAL)
    return int(local_rows.sum()), int((~local_rows).sum())


def test_hand_over_mid_sweep_gives_the_in_process_rows_once_each(ray_cluster, start_after, tmp_path):
    # the start is asked for after the first two (timed) batches; "finished" at the third look: 4 batches here
    start_after(local_batches=2)
    handed = run(GRID, n_workers=-1, batch_size=2, checkpoint_dir=tmp_path / "ck")
    alone = run(GRID)
    df = handed.df
    assert len(df) == 2 * len(GRID) and df["key"].is_unique
    assert _rows_by_place(df) == (4 * 2, len(df) - 4 * 2)  # four batches of two here, the rest on Ray
    same_rows(df, alone.df)
    stored = raybt.load_results(tmp_path / "ck").df  # what the checkpoint holds: each job once
    assert len(stored) == len(df) and stored["key"].is_unique


def test_a_sweep_done_before_ray_is_up_runs_in_process_and_does_not_wait(start_after):
    start = start_after(local_batches=None)  # never up
    results = run(GRID, n_workers=-1, batch_size=5)
    assert _rows_by_place(results.df) == (2 * len(GRID), 0)
    assert start.remaining is None


def test_a_failed_start_is_raised_at_the_hand_over_and_rows_computed_before_are_kept(start_after, tmp_path):
    start_after(local_batches=0, error=LocalRayError("no Ray today"))
    with pytest.raises(LocalRayError, match="no Ray today"):
        run(GRID, n_workers=-1, batch_size=5, checkpoint_dir=tmp_path / "ck", checkpoint_batch_size=1000)
    assert len(raybt.load_results(tmp_path / "ck").df) == 10  # the two batches computed here, the probes


def test_a_start_that_failed_after_the_sweep_finished_is_a_warning(start_after):
    # 24 jobs in batches of 5: the start is asked for after the first two; four looks (before the next three batches,
    # then the first at the end), all "not yet"; the fifth, at the end, finds the failure
    start_after(local_batches=4, error=LocalRayError("no Ray today"))
    with pytest.warns(hybrid.RayStartWarning, match="no Ray today.*this sweep ran in this process"):
        results = run(GRID, n_workers=-1, batch_size=5)
    assert _rows_by_place(results.df) == (2 * len(GRID), 0)


def test_an_environment_ray_would_refuse_fails_before_anything_is_computed(monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "legacy")
    monkeypatch.setattr(hybrid, "wanted", lambda address: True)
    monkeypatch.setattr(hybrid, "_current", None)
    monkeypatch.setattr(local, "run_batch", lambda *args: pytest.fail("computed"))
    with pytest.raises(LocalRayError, match="RAY_AUTH_MODE='legacy'"):
        run(GRID, n_workers=-1)
    assert hybrid._current is None  # no start attempted


def _timed_at(seconds_per_job, monkeypatch, first_batch=None):
    """Every job "takes" ``seconds_per_job`` (``first_batch`` in the first batch, if given), injected into the results
    of the in-process executor; returns the sizes of the batches it ran."""
    sizes = []
    real = local.run_batch

    def timed(market, batch, settings, profile, worker):
        seconds = first_batch if first_batch is not None and not sizes else seconds_per_job
        sizes.append(len(batch.jobs))
        result = real(market, batch, settings, profile, worker)
        return replace(result, durations=np.full(len(batch.jobs), seconds))

    monkeypatch.setattr(local, "run_batch", timed)
    return sizes


def test_ray_is_started_only_when_the_work_left_would_take_longer_than_the_start(monkeypatch):
    asked = []
    monkeypatch.setattr(hybrid, "wanted", lambda address: True)
    monkeypatch.setattr(hybrid, "start_in_background", lambda data_bytes: asked.append(1) or StartAfter(None))
    sizes = _timed_at(0.001, monkeypatch)  # 24 jobs of 1 ms: nowhere near START_RAY_ABOVE_S
    run(GRID, n_workers=-1, batch_size=5)
    assert sizes == [5, 5, 5, 5, 4] and asked == []
    # at 2 s per job the 9 jobs not handed out when the third batch starts (18 s) are worth a start, asked for once
    sizes = _timed_at(2.0, monkeypatch)
    run(GRID, n_workers=-1, batch_size=5)
    assert sizes == [5, 5, 5, 5, 4] and asked == [1]
    assert hybrid.worth_starting(0.001, 10_001) and not hybrid.worth_starting(0.001, 10_000)  # 10 s


def test_a_first_batch_slowed_by_one_off_costs_does_not_start_ray_for_a_small_sweep(monkeypatch):
    """The first batch of a process pays for compiling or loading kernels: at its pace (2 s per job here) the 14 jobs
    left after the next batch look like 28 s of work, at the next batches' (1 ms) like none."""
    asked = []
    monkeypatch.setattr(hybrid, "wanted", lambda address: True)
    monkeypatch.setattr(hybrid, "start_in_background", lambda data_bytes: asked.append(1) or StartAfter(None))
    sizes = _timed_at(0.001, monkeypatch, first_batch=2.0)
    run(GRID, n_workers=-1, batch_size=5)
    assert sizes == [5, 5, 5, 5, 4] and asked == []


SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {tests!r})
    import raybt
    from raybt.executors import hybrid
    from sweeps import GRID, DATA, RANGES

    hybrid.START_RAY_ABOVE_S = 0.0  # start Ray for this small sweep all the same
    started = time.perf_counter()
    results = raybt.run_backtests(GRID, DATA, RANGES, n_workers=-1, show_progress=False)
    took = time.perf_counter() - started
    ray = sys.modules.get("ray")
    up = bool(getattr(ray, "is_initialized", lambda: False)())
    print("ROWS", len(results.df), "WORKERS", sorted(set(w.split(":")[0] for w in results.df["worker"])),
          "RAY_UP", up, "TOOK", round(took, 3), flush=True)
""")


def test_a_real_small_sweep_returns_before_ray_is_up_and_exits_without_waiting(tmp_path):
    """The sweep (24 quick backtests) ends long before a local Ray could be up (seconds on any machine); the
    interpreter then exits with Ray half started in its thread, cleanly and without waiting for it (only a sweep
    stopped by an exception makes the end of the program wait: tests/test_ray_orphans.py)."""
    script = tmp_path / "small.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert "ROWS 24 WORKERS ['local'] RAY_UP False" in done.stdout, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "Fatal" not in done.stderr, done.stderr
    assert "waiting for the local Ray" not in done.stderr, done.stderr
    took = float(done.stdout.split("TOOK")[1])
    assert elapsed < took + 30, (elapsed, took)  # a generous bound on interpreter start and exit under load


# --- adaptive batch size -----------------------------------------------------------------------------------------

def test_adaptive_size_aims_at_half_a_second_per_task_within_bounds_and_shares_out_the_end():
    # 1 ms per job: 500 jobs fill 0.5 s when plenty remain
    assert adaptive_batch_size(0.001, jobs_left=1_000_000, n_workers=2) == 500
    # near the end, batches shrink so each of 2 workers gets 4 more: 2,400 left → 300 jobs (0.3 s)
    assert adaptive_batch_size(0.001, jobs_left=2_400, n_workers=2) == 300
    # ... but not below 0.2 s of work
    assert adaptive_batch_size(0.001, jobs_left=1_000, n_workers=2) == 200
    # ... unless that leaves a worker without a batch: then the jobs left are shared among the workers
    assert adaptive_batch_size(0.001, jobs_left=150, n_workers=2) == 75
    assert adaptive_batch_size(0.00001, jobs_left=20_000, n_workers=2) == 10_000  # 0.1 s each, not 0.2 s on one
    assert adaptive_batch_size(0.00001, jobs_left=20_001, n_workers=4) == 5_001  # the share rounds up
    # ... in shares of at least MIN_TASK_SECONDS (0.05 s) of work, so the tasks' fixed costs stay small
    assert adaptive_batch_size(0.001, jobs_left=60, n_workers=2) == 50
    assert adaptive_batch_size(0.001, jobs_left=40, n_workers=2) == 40
    # one worker (in-process) takes what is left
    assert adaptive_batch_size(0.001, jobs_left=150, n_workers=1) == 150
    # a job slower than 0.5 s runs alone; very fast jobs make large batches
    assert adaptive_batch_size(2.0, jobs_left=1_000, n_workers=2) == 1
    assert adaptive_batch_size(1e-6, jobs_left=10**9, n_workers=2) == 500_000


def test_adaptive_size_docstring_examples_hold():
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(adaptive_batch_size, "adaptive_batch_size",
                                                  globs={"adaptive_batch_size": adaptive_batch_size}):
        runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=2)


def test_sizer_probes_then_follows_the_median_job_time_and_keeps_an_explicit_size():
    sizer = BatchSizer(None)
    assert sizer.next_size(10_000, 2) == PROBE_JOBS
    # the probe's first job paid for a compile: the median ignores it
    sizer.observe(np.array([0.8] + [0.001] * (PROBE_JOBS - 1)))
    assert sizer.next_size(1_000_000, 2) == 500
    fixed = BatchSizer(7)
    fixed.observe(np.full(7, 0.001))
    assert fixed.next_size(10_000, 2) == 7


def test_a_sweep_with_batch_size_none_sizes_its_batches_from_their_timing(monkeypatch):
    """Every job "takes" 10 ms (injected): the probe, then 0.5 s batches (50 jobs), shrinking towards 0.2 s (20 jobs)
    as the end nears; every job runs once."""
    sizes = _timed_at(0.010, monkeypatch)
    strategies = [SmaCross(fast=f, slow=s) for f in range(2, 12) for s in range(20, 50)]  # 300 × 2 ranges
    results = run(strategies, batch_size=None)
    # 580 left after the probe: 50s while 4 batches of them fit (the in-process executor is 1 worker), then a
    # quarter of what is left (45, 33, 25), then the 20-job floor, then the last 17
    assert sizes == [PROBE_JOBS] + [50] * 8 + [45, 33, 25, 20, 20, 20, 17]
    assert results.df["key"].is_unique and len(results.df) == 600


def test_batch_size_must_be_none_or_positive():
    with pytest.raises(ValueError, match=r"batch_size must be a positive int or None \(adaptive\), got 0"):
        run(GRID, batch_size=0)


def test_warming_up_the_session_rays_workers_runs_a_backtest_on_each_cpu(ray_cluster):
    from raybt.executors import ray_tasks

    ray_tasks.warm_up_workers()  # raises if a worker cannot import raybt or run its kernels
