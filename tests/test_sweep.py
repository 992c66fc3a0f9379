"""run_backtests: executors agree, resume, staleness, errors, pre-flight, crashes of workers and of the driver."""

import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt.sweep import FailedBacktestsWarning
from raybt.metrics import METRIC_NAMES
import sweeps
from sweeps import DATA, GRID, RANGES, FailsOn, KillsItsWorkerOnce, SmaCross, run, same_rows, slow_sweep

@pytest.fixture(scope="module")
def reference():
    """The sweep run sequentially in memory: what every other way of running it must reproduce."""
    return run().df


# ---------------------------------------------------------------------------------------------- shape of results

def test_results_columns_and_values(reference):
    df = reference
    assert len(df) == len(GRID) * len(RANGES)
    assert list(df.columns[:11]) == ["key", "strategy_id", "strategy", "fast", "slow", "parameters", "symbol",
                                     "range", "range_start", "range_end", "start"]
    assert list(df.columns[11:14]) == ["end", "permutation_seed", "permutation"]
    assert list(df.columns[14:14 + len(METRIC_NAMES)]) == list(METRIC_NAMES)
    assert df["symbol"].isna().all()  # one portfolio of every symbol
    assert df[["permutation_seed", "permutation"]].isna().all().all()  # on the real data
    assert (df[df["range"] == "first"]["range_end"] == pd.Timestamp("2023-02-15", tz="UTC")).all()
    assert list(df.columns[-3:]) == ["error", "duration_s", "worker"]
    assert df["worker"].str.startswith("local:").all()
    assert df["key"].is_unique and df["error"].isna().all()
    assert set(df["range"]) == {"first", "second"}
    first = df[df["range"] == "first"]
    assert (first["start"] == pd.Timestamp("2023-01-01", tz="UTC")).all()
    assert (first["end"] == pd.Timestamp("2023-02-14 23:00", tz="UTC")).all()
    # each row equals the single-backtest API on the same job
    row = df[(df["fast"] == 5) & (df["slow"] == 30) & (df["range"] == "second")].iloc[0]
    single = raybt.run_backtest(SmaCross(fast=5, slow=30), DATA, RANGES[1], fees=0.001)
    for name in METRIC_NAMES:
        assert row[name] == single.metrics[name] or (np.isnan(row[name]) and np.isnan(single.metrics[name]))


def test_duplicates_planned_once_and_bad_arguments():
    results = run([SmaCross(), SmaCross()], date_ranges=RANGES[0])
    assert len(results.df) == 1
    with pytest.raises(ValueError, match="n_workers must be None, -1"):
        run(n_workers=0)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        run(batch_size=0)
    with pytest.raises(TypeError, match=r"strategies\[1\] is a str, not a raybt.Strategy"):
        run([SmaCross(), "SmaCross"])
    with pytest.raises(raybt.DataError, match="date range 'empty' selects no bars"):
        run(date_ranges=[raybt.DateRange("2030-01-01", "2030-02-01", name="empty")])


# ----------------------------------------------------------------------------------------------------- Ray

def test_ray_results_identical_to_sequential(ray_cluster, reference, tmp_path):
    for n_workers in (-1, 2):
        results = run(n_workers=n_workers, checkpoint_dir=tmp_path / f"ray{n_workers}")
        same_rows(results.df, reference)
        assert results.n_computed == len(reference)


class Declared(raybt.Strategy):
    """Parameters declared required, defaulted, required: instances made with keywords in other orders."""
    a: int
    b: int = 2
    c: int

    def signals(self, data):
        return data.close > data.close.shift(self.a), data.close < data.close.shift(self.c)


def test_parameter_columns_follow_the_class_on_every_executor(ray_cluster):
    """Parameter columns come in the order the class declares them, whatever the order of the keywords and
    whichever executor ran the jobs (Ray rebuilds the instances from packed parameter columns)."""
    grid = [Declared(c=3, a=1), Declared(b=5, c=1, a=2)]
    in_process, on_ray = run(grid).df, run(grid, n_workers=2).df
    assert list(in_process.columns) == list(on_ray.columns)
    assert list(in_process.columns[3:6]) == ["a", "b", "c"]
    same_rows(on_ray, in_process)


def test_worker_killed_mid_sweep_is_retried_without_duplicates(ray_cluster, tmp_path):
    marker = tmp_path / "killed"
    grid = [KillsItsWorkerOnce(n=n, marker=str(marker)) for n in range(12)]
    results = run(grid, n_workers=-1, checkpoint_dir=tmp_path / "ck")
    assert marker.exists(), "no worker was killed"
    assert results.df["key"].is_unique and len(results.df) == 24 and results.df["error"].isna().all()
    # identical to a sequential run (the marker exists now, so nothing dies in-process)
    same_rows(results.df, run(grid).df)


def test_pickle_preflight_names_the_attribute(ray_cluster):
    class HoldsALock(raybt.Strategy):
        lock = threading.Lock()
        n: int = 1

        def signals(self, data):
            return data.close > 0, data.close < 0

    from raybt.executors.ray_tasks import PicklingError
    with pytest.raises(PicklingError, match=r"HoldsALock\(n=1\) cannot be pickled.*attribute .*HoldsALock.lock "
                                            r"\(lock\) is not picklable"):
        run([HoldsALock()], n_workers=-1)


def test_profile_merges_worker_stats(ray_cluster):
    results = run(GRID[:4], n_workers=-1, profile=True)
    functions = {f[2] for f in results.profile.stats}
    assert "evaluate_group" in functions and "signals" in functions  # the batch path and the user's code


# ------------------------------------------------------------------------------------------------ resuming

def test_resume_computes_only_missing_jobs(tmp_path, reference):
    ck = tmp_path / "ck"
    first = run(GRID[:5], checkpoint_dir=ck)
    assert first.n_computed == 10 and first.n_skipped == 0
    second = run(checkpoint_dir=ck)
    assert second.n_skipped == 10 and second.n_computed == len(reference) - 10
    same_rows(second.df, reference)
    third = run(checkpoint_dir=ck)
    assert third.n_computed == 0
    same_rows(third.df, reference)


def test_stale_results_rerun(tmp_path):
    ck = tmp_path / "ck"
    run(GRID[:2], checkpoint_dir=ck)
    assert run(GRID[:2], checkpoint_dir=ck).n_computed == 0
    assert run(GRID[:2], checkpoint_dir=ck, fees=0.002).n_computed == 4          # cost model changed
    assert run(GRID[:2], checkpoint_dir=ck, fill="next_open").n_computed == 4    # fill changed
    other_data = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-04-01", "1h", seed=6)
    assert run(GRID[:2], checkpoint_dir=ck, data=other_data).n_computed == 4     # data changed

    namespace = {}
    exec(textwrap.dedent("""
        import raybt
        class SmaCross(raybt.Strategy):
            fast: int = 5
            slow: int = 21   # a changed default: a different class source, so a different strategy id
            def signals(self, data):
                return data.close > data.close.shift(self.fast), data.close < data.close.shift(self.slow)
    """), namespace)
    changed = namespace["SmaCross"]
    assert run([changed(fast=3, slow=20)], checkpoint_dir=ck).n_computed == 2


def test_results_of_the_run_only_and_load_results(tmp_path):
    ck = tmp_path / "ck"
    run(GRID[:2], checkpoint_dir=ck)
    later = run(GRID[2:4], checkpoint_dir=ck)
    assert len(later.df) == 4
    assert len(raybt.load_results(str(ck))) == 8


# -------------------------------------------------------------------------------------------------- errors

def test_continue_on_error_records_the_failure(tmp_path):
    grid = [FailsOn(n=n) for n in range(6)]
    with pytest.warns(FailedBacktestsWarning, match="2 of 12 backtests failed"):
        results = run(grid, checkpoint_dir=tmp_path / "ck", continue_on_error=True)
    failed = results.errors
    assert len(failed) == 2 and set(failed["n"]) == {3}
    assert failed["error"].str.startswith("ValueError: cannot handle n=3").all()
    assert "signals" in failed["error"].iloc[0]  # traceback tail
    assert failed[list(METRIC_NAMES)].isna().all().all()
    assert results.df["error"].isna().sum() == 10
    # stored like any other row: not rerun, unless asked
    assert run(grid, checkpoint_dir=tmp_path / "ck", continue_on_error=True).n_computed == 0
    with pytest.warns(FailedBacktestsWarning, match="2 of 2 backtests failed"):
        rerun = run(grid, checkpoint_dir=tmp_path / "ck", continue_on_error=True, rerun_errors=True)
    assert rerun.n_computed == 2


def test_stop_on_first_error_keeps_finished_rows(tmp_path):
    grid = [FailsOn(n=n) for n in range(6)]
    with pytest.raises(raybt.BacktestError, match=r"FailsOn\(n=3, bad=3\) \(id [0-9a-f]{16}\) on range 'first' "
                                                   r"failed: ValueError: cannot handle n=3"):
        run(grid, checkpoint_dir=tmp_path / "ck", batch_size=4)
    stored = raybt.load_results(str(tmp_path / "ck")).df
    assert len(stored) == 6 and stored["error"].isna().all()  # jobs 0..5 ran; the failed one is not stored
    with pytest.warns(FailedBacktestsWarning, match="2 of 6 backtests failed"):
        fixed = run(grid, checkpoint_dir=tmp_path / "ck", continue_on_error=True)
    assert fixed.n_computed == 6


def test_stop_on_first_error_with_ray(ray_cluster, tmp_path):
    grid = [FailsOn(n=n) for n in range(6)]
    with pytest.raises(raybt.BacktestError, match=r"FailsOn\(n=3, bad=3\)"):
        run(grid, n_workers=-1, checkpoint_dir=tmp_path / "ck")


# --------------------------------------------------------------------------------------------- driver crash

def test_driver_killed_at_random_moments_then_resumed(tmp_path):
    uninterrupted = slow_sweep(150).df
    rng = np.random.default_rng(11)
    for attempt, delay in enumerate(rng.uniform(0.0, 1.5, size=3)):
        ck = tmp_path / f"ck{attempt}"
        process = subprocess.Popen([sys.executable, sweeps.__file__, str(ck), "150"])
        deadline = time.monotonic() + 60
        while not list((ck / "parts").glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until the sweep is under way (the first part is written) ...
        time.sleep(delay)  # ... then kill it at a random moment, possibly in the middle of a write
        process.send_signal(signal.SIGKILL)
        process.wait()
        stored_before = len(raybt.load_results(str(ck))) if (ck / "parts").exists() else 0
        assert stored_before < 300, f"the sweep finished before the kill at {delay:.1f}s"
        resumed = slow_sweep(150, str(ck))
        assert resumed.n_skipped == stored_before and resumed.n_computed == 300 - stored_before
        assert resumed.df["key"].is_unique and len(resumed.df) == 300
        same_rows(resumed.df, uninterrupted)

