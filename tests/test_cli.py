"""The raybt command line: every command, bad arguments, missing files, exit codes."""

import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from raybt.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from raybt.sweep import FailedBacktestsWarning

SPEC = textwrap.dedent("""
    import raybt

    class Momentum(raybt.Strategy):
        lookback: int = 24

        def signals(self, data):
            change = data.close.pct_change(self.lookback)
            return change > 0, change < 0

    data = raybt.synthetic_ohlcv(["ETH"], "2023-01-01", "2023-03-01", "1h", seed=2)
    strategies = [Momentum(lookback=n) for n in (6, 12, 24, 48)]
    date_ranges = [raybt.DateRange("2023-01-01", "2023-02-01", name="jan"), raybt.DateRange("2023-02-01", None, name="feb")]
    fees = 0.001
    checkpoint_dir = {checkpoint_dir!r}
    show_progress = False
""")


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "spec.py"
    path.write_text(SPEC.format(checkpoint_dir=str(tmp_path / "from_spec")))
    return path


def test_demo_runs_and_prints_top_strategies(tmp_path, capsys):
    ck = tmp_path / "demo"
    assert main(["demo", "--strategies", "30", "--n-workers", "1", "--checkpoint-dir", str(ck), "--no-progress",
                 "--top", "3"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "60 backtests: 30 strategies × 2 range(s), 0 failed" in out
    assert "top 3 by sharpe" in out and f"checkpoints: {ck}" in out
    assert len(pd.concat(pd.read_parquet(p) for p in (ck / "parts").glob("*.parquet"))) == 60


def test_run_spec_file_and_flag_overrides(spec, tmp_path, capsys):
    assert main(["run", str(spec)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "8 backtests: 4 strategies × 2 range(s), 0 failed" in out
    assert (tmp_path / "from_spec" / "parts").is_dir()
    override = tmp_path / "override"
    assert main(["run", str(spec), "--checkpoint-dir", str(override), "--batch-size", "3",
                 "--checkpoint-batch-size", "4", "--no-progress"]) == EXIT_OK
    assert len(list((override / "parts").glob("*.parquet"))) == 2  # 8 rows, batches of 3, flushed at >= 4
    assert "8 computed" in capsys.readouterr().out


def test_run_missing_or_incomplete_spec(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.py")]) == EXIT_USAGE
    assert "spec file not found" in capsys.readouterr().err
    incomplete = tmp_path / "incomplete.py"
    incomplete.write_text("x = 1\n")
    assert main(["run", str(incomplete)]) == EXIT_USAGE
    assert "must define strategies and data" in capsys.readouterr().err


def test_run_failing_backtest_exit_code(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text(textwrap.dedent("""
        import raybt
        class Broken(raybt.Strategy):
            def signals(self, data):
                raise ZeroDivisionError("boom")
        data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-01-10", "1h")
        strategies = [Broken()]
    """))
    assert main(["run", str(broken), "--no-progress"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "BacktestError" in err and "ZeroDivisionError: boom" in err
    with pytest.warns(FailedBacktestsWarning, match="1 of 1 backtests failed"):
        assert main(["run", str(broken), "--no-progress", "--continue-on-error"]) == EXIT_OK
    assert "1 failed" in capsys.readouterr().out


def test_results_summary_sort_and_csv(spec, tmp_path, capsys):
    main(["run", str(spec)])
    capsys.readouterr()
    csv = tmp_path / "all.csv"
    assert main(["results", str(tmp_path / "from_spec"), "--sort", "max_drawdown", "--top", "2", "--csv",
                 str(csv)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "top 2 by max_drawdown" in out and "wrote 8 rows" in out
    assert len(pd.read_csv(csv)) == 8


def test_results_bad_directory_and_column(spec, tmp_path, capsys):
    assert main(["results", str(tmp_path / "missing")]) == EXIT_FAILED
    assert "not a raybt checkpoint directory" in capsys.readouterr().err
    main(["run", str(spec)])
    assert main(["results", str(tmp_path / "from_spec"), "--sort", "bogus"]) == EXIT_USAGE
    assert "unknown column --sort 'bogus'" in capsys.readouterr().err


def test_info_local(capsys, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["info"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "CPUs" in out and "recommended: n_workers=" in out


@pytest.mark.parametrize("argv, message", [
    (["demo", "--n-workers", "0"], "must be -1 (all CPUs) or a positive integer"),
    (["demo", "--strategies", "-5"], "must be a positive integer"),
    (["run"], "the following arguments are required: spec"),
    (["frobnicate"], "invalid choice"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_exit_2_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_USAGE
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", ["demo", "run", "results", "info"])
def test_help_for_every_command(command):
    out = subprocess.run([sys.executable, "-m", "raybt.cli", command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and f"usage: raybt {command}" in out.stdout


def test_version(capsys):
    import raybt

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == EXIT_OK
    assert capsys.readouterr().out.strip() == f"raybt {raybt.__version__}"


@pytest.mark.parametrize("line, option", [
    ("fee = 0.001", "fees"),
    ("chekpoint_dir = 'runs/typo'", "checkpoint_dir"),
    ("continue_on_errors = True", "continue_on_error"),
    ("date_range = [raybt.DateRange('2023-01-01', '2023-02-01')]", "date_ranges"),
])
def test_spec_with_a_misspelt_option_is_an_error_naming_the_closest(tmp_path, capsys, line, option):
    path = tmp_path / "spec.py"
    path.write_text(SPEC.format(checkpoint_dir=str(tmp_path / "ck")) + line + "\n")
    assert main(["run", str(path)]) == EXIT_USAGE
    name = line.split(" =")[0]
    assert f"unknown option {name!r} (did you mean {option!r}?)" in capsys.readouterr().err
    assert not (tmp_path / "ck").exists()  # nothing ran


def test_spec_helpers_are_not_taken_for_options(tmp_path, capsys):
    path = tmp_path / "spec.py"
    helpers = textwrap.dedent("""
        ranges = date_ranges                     # a list of ranges named like no option
        symbols = ["ETH"]
        strategies_fast = strategies[:2]         # close to 'strategies', but strategies are not an option value
        _fee = 0.5                               # private
        FEE = 0.5                                # a constant
    """)
    path.write_text(SPEC.format(checkpoint_dir=str(tmp_path / "ck")) + helpers)
    assert main(["run", str(path)]) == EXIT_OK
    assert "8 backtests" in capsys.readouterr().out


def test_spec_with_a_syntax_error_exits_2_naming_file_and_line(tmp_path, capsys):
    path = tmp_path / "spec.py"
    path.write_text("import raybt\n\nfees = (0.001\n")
    assert main(["run", str(path)]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{path}, line 3: " in err and "Traceback" not in err


def test_info_on_an_address_where_nothing_listens_fails_fast(capsys):
    import socket
    import time

    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    assert main(["info", "--address", f"127.0.0.1:{port}"]) == EXIT_FAILED
    assert time.monotonic() - started < 10
    assert f"no Ray cluster at 127.0.0.1:{port}: cannot connect" in capsys.readouterr().err


def test_results_sort_suggests_the_closest_column(spec, tmp_path, capsys):
    main(["run", str(spec)])
    assert main(["results", str(tmp_path / "from_spec"), "--sort", "sharp"]) == EXIT_USAGE
    assert "unknown column --sort 'sharp'; did you mean 'sharpe'?" in capsys.readouterr().err
