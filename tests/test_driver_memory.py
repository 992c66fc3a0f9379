"""What the driver keeps while a sweep runs: memory that grows with the number of jobs, or that the driver holds
for work it no longer does, is released (issue 19: a million backtests within 500 MB of driver growth).

* The hand-over executor clears this process's indicator cache once Ray takes the batches over: the batches run
  here filled it (up to 256 MiB) and the driver computes nothing more.
* The sweep's lost-rows check (after the last batch) does not read back the parts this sweep has just written
  (for a million rows: seconds of CPU and hundreds of MB of read buffers), yet a part changed since it was written
  is read whole again and, if damaged, quarantined and its jobs rerun.
* The Ray executor keeps no reference to a finished task's result: at most ``window`` tasks are in flight.
"""

import gc
import re
import weakref

import numpy as np
import pyarrow as pa
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
    assert handed.df["worker"].str.startswith(LOCAL).sum() == 3 * 4  # three batches computed here first
    info = raybt.indicators.cache_info()
    assert info.bytes == 0 and info.entries == 0
    same_rows(handed.df, run(GRID).df)


def test_while_ray_starts_the_driver_cache_is_bounded_and_its_bound_restored_after(ray_after, monkeypatch):
    limits = []
    original = hybrid.LocalExecutor.run

    def noting_the_limit(self, batches):
        limits.append(raybt.indicators.cache_info().limit)
        yield from original(self, batches)

    monkeypatch.setattr(hybrid.LocalExecutor, "run", noting_the_limit)
    before = raybt.indicators.cache_info().limit
    assert before > hybrid.CACHE_MB_WHILE_RAY_STARTS * 2**20
    ray_after(None)
    run(GRID, n_workers=-1, batch_size=4)
    # the first batch runs before the start is asked for (its timing decides whether Ray pays)
    assert limits == [before] + [int(hybrid.CACHE_MB_WHILE_RAY_STARTS * 2**20)] * (len(limits) - 1)
    assert len(limits) == 6
    assert raybt.indicators.cache_info().limit == before
    raybt.indicators.set_cache_limit(16)  # a lower bound set by the user holds
    limits.clear()
    run(GRID, n_workers=-1, batch_size=4)
    assert set(limits) == {16 * 2**20} and raybt.indicators.cache_info().limit == 16 * 2**20
    raybt.indicators.set_cache_limit(before / 2**20)


def _count_part_reads(monkeypatch) -> list[str]:
    reads: list[str] = []
    original = CheckpointStore._checked_read

    def counting(self, path, columns=None):
        reads.append(path)
        return original(self, path, columns)

    monkeypatch.setattr(CheckpointStore, "_checked_read", counting)
    return reads


def test_a_sweep_does_not_read_back_the_parts_it_wrote(tmp_path, monkeypatch):
    reads = _count_part_reads(monkeypatch)
    results = run(checkpoint_dir=tmp_path / "ck")  # 24 jobs, batches of 5, a part every 7 rows or more: 3 parts
    assert len(parts_of(tmp_path / "ck")) == 3
    assert reads == []
    assert len(results.df) == 2 * len(GRID)


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


def _addresses(table: pa.Table) -> set[int]:
    """Where the (non-empty) buffers of a table's columns are."""
    return {buffer.address for column in table.columns for chunk in column.chunks for buffer in chunk.buffers()
            if buffer is not None and buffer.size}


def test_the_keys_a_store_remembers_of_a_part_it_wrote_are_copies(tmp_path):
    """The table written may be made of Ray's zero-copy task results: a reference to its buffers would keep every
    task result of the sweep in the object store."""
    rows = run(GRID[:4]).df
    table = pa.Table.from_pandas(rows, preserve_index=False)
    store = CheckpointStore(tmp_path / "ck", writer=True)
    path = store.write(table)
    remembered = store._verified_keys[path][1]
    assert not _addresses(table.select(["key", "error"])) & _addresses(remembered)
    assert remembered.column("key").to_pylist() == table.column("key").to_pylist()
    assert sorted(store.done_keys().astype(str)) == sorted(rows["key"])


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
