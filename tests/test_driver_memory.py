"""What the driver keeps while a sweep runs: memory that grows with the number of jobs, or that the driver holds
for work it no longer does, is released (issue 19: a million backtests within 500 MB of driver growth).

* The hand-over executor bounds this process's indicator cache while Ray starts and clears it once Ray takes the
  batches over: the batches run here filled it (up to 256 MiB) and the driver computes nothing more.
* A part changed on disk after this sweep wrote it is read whole again by the lost-rows check (which otherwise
  need not read back the parts the sweep wrote) and, if damaged, quarantined and its jobs rerun in the same call.
* The Ray executor keeps no reference to a finished task's result: at most ``window`` tasks are in flight.
"""

import gc
import re
import weakref

import numpy as np
import pytest

import raybt
from raybt.checkpoint import CheckpointStore, CheckpointWarning
from raybt.engine import CostModel
from raybt.executors import hybrid
from raybt.plan import RunSettings, plan_jobs
from raybt.resources import BatchSizer
from raybt.sweep import _Batches

from sweeps import DATA, GRID, RANGES, run, same_rows
from test_checkpoint import flip_byte_mid_file, parts_of
from test_handover import LOCAL, StartAfter


@pytest.fixture()
def ray_after(monkeypatch):
    """Sweeps with ``n_workers=-1`` take the hand-over path; the stand-in start is "up" after ``n`` local batches
    (``None``: never), the session's Ray then takes the rest (as in test_handover)."""
    def install(local_batches):
        start = StartAfter(local_batches)
        monkeypatch.setattr(hybrid, "wanted", lambda address: address is None)
        monkeypatch.setattr(hybrid, "START_RAY_ABOVE_S", 0.0)
        monkeypatch.setattr(hybrid, "start_in_background", lambda data_bytes: start)
    return install


def test_the_hand_over_releases_the_indicator_cache_the_batches_run_here_filled(ray_cluster, ray_after):
    raybt.indicators.clear_cache()
    ray_after(None)  # Ray never up: every batch runs here
    run(GRID, n_workers=-1, batch_size=4)
    assert raybt.indicators.cache_info().bytes > 0  # what the driver holds after computing here

    raybt.indicators.clear_cache()
    ray_after(2)
    handed = run(GRID, n_workers=-1, batch_size=4)
    assert handed.df["worker"].str.startswith(LOCAL).sum() == 4 * 4  # four batches computed here first
    info = raybt.indicators.cache_info()
    assert info.bytes == 0 and info.entries == 0
    same_rows(handed.df, run(GRID).df)


@pytest.fixture()
def cache_limits(monkeypatch):
    """The indicator cache's bound as each batch computed in the driver starts (a list the sweep fills)."""
    limits = []
    original = hybrid.LocalExecutor.run

    def noting_the_limit(self, batches):
        limits.append(raybt.indicators.cache_info().limit)
        yield from original(self, batches)

    monkeypatch.setattr(hybrid.LocalExecutor, "run", noting_the_limit)
    return limits


def test_while_ray_starts_the_driver_cache_is_bounded_and_its_bound_restored_after(ray_after, cache_limits):
    limits = cache_limits
    before = raybt.indicators.cache_info().limit
    assert before > hybrid.CACHE_MB_WHILE_RAY_STARTS * 2**20
    ray_after(None)
    run(GRID, n_workers=-1, batch_size=4)
    # the start is asked for after two timed batches; the bound comes once the first one's pace says a start may pay
    assert limits == [before] + [int(hybrid.CACHE_MB_WHILE_RAY_STARTS * 2**20)] * (len(limits) - 1)
    assert len(limits) == 6
    assert raybt.indicators.cache_info().limit == before
    raybt.indicators.set_cache_limit(16)  # a lower bound set by the user holds
    limits.clear()
    run(GRID, n_workers=-1, batch_size=4)
    assert set(limits) == {16 * 2**20} and raybt.indicators.cache_info().limit == 16 * 2**20
    raybt.indicators.set_cache_limit(before / 2**20)


def test_a_sweep_too_small_for_ray_keeps_its_indicator_cache(ray_after, cache_limits, monkeypatch):
    ray_after(None)
    monkeypatch.setattr(hybrid, "START_RAY_ABOVE_S", 1e9)  # no pace makes this sweep worth a start
    before = raybt.indicators.cache_info().limit
    run(GRID, n_workers=-1, batch_size=4)
    assert cache_limits == [before] * 6


def test_a_part_changed_after_this_sweep_wrote_it_is_read_again_and_its_jobs_rerun(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    original = CheckpointStore.write
    written = []

    def write_then_damage_the_first(self, table):
        path = original(self, table)
        written.append(path)
        if len(written) == 2:  # the first part is damaged on disk while the sweep goes on
            flip_byte_mid_file(parts_of(ck)[0])
        return path

    monkeypatch.setattr(CheckpointStore, "write", write_then_damage_the_first)
    with pytest.warns(CheckpointWarning) as caught:
        results = run(checkpoint_dir=ck)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and re.search(r"is unreadable.*moved to", messages[0], re.S)
    assert re.search(r"\d+ jobs of this sweep lost their stored rows while it ran", messages[1])
    assert len(results.df) == 2 * len(GRID) and results.df["key"].is_unique
    assert len(list((ck / "quarantine").iterdir())) == 1
    same_rows(results.df, run(GRID).df)


def test_the_ray_executor_holds_no_finished_task_result(ray_cluster):
    """Flow control keeps driver memory flat: once the caller has taken a result and moved on, the executor holds
    no reference to it (nor to its ObjectRef), however many batches follow."""
    from raybt.executors.ray_tasks import RayExecutor

    market = raybt.load_ohlcv(DATA)
    settings = RunSettings(CostModel(10_000, 0.001, 0.0, 0.0, "close"), None, 0.0)
    plan = plan_jobs(GRID, RANGES, market, settings, False, None)
    executor = RayExecutor(market, settings, n_workers=-1)
    taken = []
    for result in executor.run(_Batches(plan, np.arange(len(plan)), BatchSizer(2), lambda: executor.n_workers)):
        taken.append(weakref.ref(result))
        del result
        gc.collect()
        assert [ref() is None for ref in taken[:-1]] == [True] * (len(taken) - 1)
    executor.close()
    assert len(taken) == len(plan) // 2
