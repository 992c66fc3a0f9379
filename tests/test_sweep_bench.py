"""`raybt bench SPEC.py`: a sample of a spec timed with 1 and 2 workers, extrapolated to the whole spec.

A module named to run after test_cluster.py: its `ray job submit` test fails ("No available agent to submit job")
when the session's Ray was started just before it — the stopped Ray's job agent still holds its fixed port."""

import pytest

from raybt.cli import EXIT_OK, main

from test_cli import SPEC


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "spec.py"
    path.write_text(SPEC.format(checkpoint_dir=str(tmp_path / "from_spec")))
    return path


def test_bench_times_a_sample_and_extrapolates(spec, capsys, ray_cluster):
    assert main(["bench", str(spec), "--sample", "3", "--max-workers", "2"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "sample: 6 backtests; whole spec: 8 backtests" in out  # 3 of 4 strategies × 2 ranges
    lines = out.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:1] == ["workers"]))
    rows = [line.split() for line in lines[header + 1:header + 3]]
    assert [int(r[0]) for r in rows] == [1, 2]
    for workers, sample_s, ms, speedup, whole in ([float(v) for v in r] for r in rows):
        assert ms == pytest.approx(1000 * sample_s / 6, rel=1e-3)
        assert whole == pytest.approx(ms / 1000 * 8, rel=1e-3)
    assert float(rows[0][3]) == 1 and float(rows[1][3]) == pytest.approx(float(rows[0][1]) / float(rows[1][1]),
                                                                         rel=1e-3)
    assert "recommended_workers(): n_workers=" in out and "8 jobs" in out
    assert not (spec.parent / "from_spec").exists()  # nothing written
