"""benchmarks/bench_throughput.py's driver ceiling: the "instant workers" replay goes through the real sweep path
and stores exactly the rows a real in-process sweep computes (else its rows per second would measure something
else). In-process and small: about a second."""

import importlib.util
import sys
from pathlib import Path

import pytest

import raybt

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("bench_throughput", BENCHMARKS / "bench_throughput.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module   # dataclasses resolve the module's annotations through sys.modules
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_throughput", None)
        sys.path.remove(str(BENCHMARKS))


def _tiny(bench):
    data = raybt.synthetic_ohlcv(["BTC/EUR"], "2022-01-01", "2022-01-05", "1h", seed=3)
    ranges = [raybt.DateRange("2022-01-01", "2022-01-03", name="a"), raybt.DateRange("2022-01-03", "2022-01-05")]
    return bench.Workload(data, ranges, bench._sma_grid(range(2, 7), range(8, 12)), batch_size=6, part_size=10,
                          freq="1h", vbt_every=0)


def test_instant_workers_replay_the_recorded_rows_through_the_checkpoint_path(bench, tmp_path):
    workload = _tiny(bench)   # 20 strategies x 2 ranges = 40 jobs, batches of 6
    figures = bench.driver_ceiling(raybt, workload, workload.batch_size, str(tmp_path / "store"))
    assert figures["n_rows"] == 40 and figures["n_batches"] == 7
    stored = raybt.load_results(str(tmp_path / "store")).df
    assert len(stored) == 40 and stored["error"].isna().all()


@pytest.mark.filterwarnings("ignore::raybt.checkpoint.CheckpointWarning")  # the sweep reruns the jobs it misses
def test_a_replay_that_returns_other_rows_is_refused(bench, tmp_path, monkeypatch):
    workload = _tiny(bench)
    real_replay = bench.instant_executor

    def first_batch_only(recorded, replayed):   # the first batch's result handed back for every batch
        return real_replay(recorded[:1] * len(recorded), replayed)

    monkeypatch.setattr(bench, "instant_executor", first_batch_only)
    with pytest.raises(RuntimeError, match="INVALID RUN"):
        bench.driver_ceiling(raybt, workload, workload.batch_size, None)
