"""A job that kills its Ray worker process (a segfault in a C extension, the OOM killer, ``os._exit``) is found by
bisecting its batch: with ``continue_on_error=True`` it becomes an error row and the sweep goes on, with ``False``
``BacktestError`` names it; finished rows are flushed either way, and a resume does not hit the crash again."""

import os

import pytest

import raybt
from raybt.sweep import FailedBacktestsWarning

from sweeps import DATA, RANGES, comparable, run


class ExitsOn(raybt.Strategy):
    """Ends its own process for one value of ``n``, every time, as a crash in native code would."""

    n: int = 0
    bad: int = 5

    def signals(self, data):
        if self.n == self.bad:
            os._exit(3)
        return data.close > data.close.shift(self.n + 1), data.close < data.close.shift(self.n + 1)


GRID = [ExitsOn(n=n) for n in range(8)]
DATA_MARKET = raybt.load_ohlcv(DATA)
FIRST = RANGES[:1]
LARGE = 10_000  # checkpoint_batch_size: no part is written before the crash, so the flush on the way out is tested


def _sequential_rows(strategies):
    return comparable(run(strategies, date_ranges=FIRST).df).drop(columns=["key"])


def test_crashing_job_becomes_an_error_row_and_the_sweep_goes_on(ray_cluster, tmp_path):
    ck = tmp_path / "ck"
    with pytest.warns(FailedBacktestsWarning, match="1 of 8 backtests failed"):
        results = run(GRID, date_ranges=FIRST, n_workers=-1, batch_size=2, checkpoint_dir=ck, continue_on_error=True,
                      checkpoint_batch_size=LARGE)
    df = results.df
    assert len(df) == 8 and df["key"].is_unique
    error = df.loc[df["n"] == 5, "error"].item()
    assert error.startswith("worker process died: WorkerCrashedError while running ExitsOn(n=5, bad=5) (id ")
    assert "on range 'first', twice when run alone" in error
    ok = df[df["n"] != 5]
    assert ok["error"].isna().all()
    assert (comparable(ok).drop(columns=["key"]).reset_index(drop=True)
            .equals(_sequential_rows([s for s in GRID if s.n != 5]).reset_index(drop=True)))
    # stored, error row included: a resume computes nothing and meets no crash
    assert len(raybt.load_results(str(ck))) == 8
    again = run(GRID, date_ranges=FIRST, n_workers=-1, batch_size=2, checkpoint_dir=ck)
    assert again.n_computed == 0 and again.n_skipped == 8


def test_crashing_job_stops_the_sweep_naming_it_and_keeps_finished_rows(ray_cluster, tmp_path):
    ck = tmp_path / "ck"
    with pytest.raises(raybt.BacktestError, match=r"backtest of ExitsOn\(n=5, bad=5\) \(id [0-9a-f]{16}\) on range "
                                                  r"'first' failed: worker process died: WorkerCrashedError"):
        run(GRID, date_ranges=FIRST, n_workers=-1, batch_size=2, checkpoint_dir=ck, checkpoint_batch_size=LARGE)
    stored = raybt.load_results(str(ck)).df
    assert stored["error"].isna().all() and 5 not in set(stored["n"])
    assert {0, 1, 2, 3} <= set(stored["n"])  # batches without the crash finished long before the bisection did


def test_oom_retries_are_bounded_for_the_tasks_raybt_submits(ray_cluster, monkeypatch):
    """Ray retries tasks its memory monitor kills without limit unless ``RAY_task_oom_retries`` is set when this
    process initialises Ray; the Ray executor sets it (unless the user did) before it connects."""
    from raybt.executors.ray_tasks import TASK_RETRIES, RayExecutor
    from raybt.engine import CostModel
    from raybt.plan import RunSettings

    monkeypatch.delenv("RAY_task_oom_retries", raising=False)
    RayExecutor(DATA_MARKET, RunSettings(CostModel())).close()
    assert os.environ["RAY_task_oom_retries"] == str(TASK_RETRIES)
    monkeypatch.setenv("RAY_task_oom_retries", "7")
    RayExecutor(DATA_MARKET, RunSettings(CostModel())).close()
    assert os.environ["RAY_task_oom_retries"] == "7"
