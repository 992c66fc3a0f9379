"""Staged sweeps (run_backtests(..., keep=)): equal to the stages run by hand, resumable, pruned rows kept as trials,
and every odd keep rule reported."""

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt.stages import StagedResults, StageWarning
from sweeps import DATA, FailsOn, SmaCross, same_rows

STAGES = [raybt.DateRange("2023-01-01", "2023-02-01", name="jan"),
          raybt.DateRange("2023-02-01", "2023-03-01", name="feb"),
          raybt.DateRange("2023-03-01", "2023-04-01", name="mar")]
COSTS = dict(fees=0.001, initial_amount=5_000)


class SmaCrossTwin(SmaCross):
    """The same rule under another name: the same metrics as SmaCross, another strategy id (a tie)."""


class NeverTrades(raybt.Strategy):
    """No signal at all: a Sharpe ratio of NaN, which top-k must never keep."""

    n: int = 0

    def signals(self, data):
        flat = data.close != data.close
        return flat, flat


class Momentum(raybt.Strategy):
    """Long while the close is above its value ``n`` bars ago. On a range starting in February: stops the sweep once
    if the environment variable RAYBT_TEST_STOP is ``<its id>:<how>`` — how = ``error`` (an exception) or ``ctrl-c``
    (a KeyboardInterrupt) — and sleeps RAYBT_TEST_SLEEP_S seconds per backtest (a stage slow enough to be killed in).
    Environment variables, not module constants: constants are part of the strategy's code, so changing one would
    change every id."""

    n: int = 1

    def signals(self, data):
        if data.close.index[0] >= pd.Timestamp("2023-02", tz="UTC"):
            time.sleep(float(os.environ.get("RAYBT_TEST_SLEEP_S", "0")))
            target, _, how = os.environ.get("RAYBT_TEST_STOP", "").partition(":")
            if target == self.id:
                del os.environ["RAYBT_TEST_STOP"]
                raise KeyboardInterrupt if how == "ctrl-c" else RuntimeError("injected failure")
        return data.close > data.close.shift(self.n), data.close < data.close.shift(self.n)


GRID = ([SmaCross(fast=f, slow=s) for f in (3, 5, 8, 13) for s in (20, 30, 50)]
        + [SmaCrossTwin(fast=5, slow=20), NeverTrades(), FailsOn(n=3)])


def staged(strategies=GRID, keep=4, **kwargs) -> StagedResults:
    options = dict(COSTS, show_progress=False, continue_on_error=True, batch_size=3, checkpoint_batch_size=4)
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
        return raybt.run_backtests(strategies, DATA, STAGES, keep=keep, **options)


def top_k_by_hand(df, survivors, k):
    """Independent top-k: Python's sort of (−Sharpe) over rows that ran with a Sharpe; the sort is stable, so ties
    keep the order of the strategies."""
    rows = {row.strategy_id: row for row in df.itertuples()}
    usable = [s for s in survivors if pd.isna(rows[s.id].error) and not np.isnan(rows[s.id].sharpe)]
    return sorted(usable, key=lambda s: -rows[s.id].sharpe)[:k]


def stages_by_hand(strategies, k):
    """Each stage one run_backtests call on one range, with the previous stage's top k."""
    frames, kept, survivors = [], [], list(strategies)
    for stage in STAGES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
            df = raybt.run_backtests(survivors, DATA, [stage], show_progress=False, continue_on_error=True,
                                     **COSTS).df
        frames.append(df)
        survivors = top_k_by_hand(df, survivors, k)
        kept.append({s.id for s in survivors})
    return pd.concat(frames, ignore_index=True), kept


def same_rows_any_column_order(a, b):
    """The same rows (see sweeps.same_rows); parameter columns may come in another order (a stage's parts decide
    which parameter is seen first)."""
    same_rows(a[sorted(a.columns)], b[sorted(b.columns)])


def ids(strategies):
    return [s.id for s in strategies]


def test_top_k_equals_the_stages_run_by_hand(tmp_path):
    results = staged(keep=4, checkpoint_dir=str(tmp_path / "run"))
    expected_rows, expected_kept = stages_by_hand(GRID, 4)
    assert isinstance(results, StagedResults)
    assert [set(ids(k)) for k in results.kept] == expected_kept
    same_rows_any_column_order(results.df, expected_rows)
    same_rows_any_column_order(results.df, raybt.load_results(str(tmp_path / "run")).df)  # as stored
    last = results.df.iloc[-1]
    assert results.backtest(last, DATA).metrics["sharpe"] == last["sharpe"]  # rows replay
    assert results.stages.to_dict("list") == {
        "stage": [0, 1, 2], "range": ["jan", "feb", "mar"], "n_in": [15, 4, 4], "n_failed": [1, 0, 0],
        "n_kept": [4, 4, 4], "n_computed": [15, 4, 4], "n_skipped": [0, 0, 0]}
    assert results.survivors == results.kept[-1] and len(results) == 23
    # survivors go on in the order of `strategies`; rows are stage by stage, each stage's in that order too
    assert ids(results.kept[0]) == [s.id for s in GRID if s.id in expected_kept[0]]
    assert list(results.df["strategy_id"]) == ids(GRID) + ids(results.kept[0]) + ids(results.kept[1])
    assert list(results.df["range"]) == ["jan"] * 15 + ["feb"] * 4 + ["mar"] * 4


def test_top_k_breaks_ties_by_strategy_order_and_never_keeps_failed_or_nan_rows():
    twin, original = SmaCrossTwin(fast=5, slow=20), SmaCross(fast=5, slow=20)
    for first, second in ((twin, original), (original, twin)):
        results = staged([NeverTrades(), first, second], keep=1)
        jan = results.df[results.df["range"] == "jan"]
        assert jan["sharpe"].iloc[1] == jan["sharpe"].iloc[2] and np.isfinite(jan["sharpe"].iloc[1])  # a tie
        assert ids(results.survivors) == [first.id], "a tie goes to the strategy given first"
    every_usable = staged(GRID, keep=100)  # more than there are: a failed row and a NaN Sharpe are still dropped
    assert every_usable.stages["n_kept"].tolist() == [13, 13, 13]
    assert not {NeverTrades().id, FailsOn(n=3).id} & set(ids(every_usable.survivors))


def test_a_callable_gets_each_stage_in_strategy_order_and_may_return_rows_ids_or_strategies():
    seen = []

    def best_three_rows(stage):
        seen.append(list(stage.df["strategy_id"]))
        return stage.best("sharpe", 3)

    by_rows = staged(keep=best_three_rows)
    assert seen[0] == ids(GRID) and seen[1] == ids(by_rows.kept[0]) and seen[2] == ids(by_rows.kept[1])
    assert by_rows.stages["n_kept"].tolist() == [3, 3, 3]
    by_ids = staged(keep=lambda stage: list(stage.best("sharpe", 3)["strategy_id"])[::-1])
    by_strategies = staged(keep=lambda stage: [s for s in GRID if s.id in set(stage.best("sharpe", 3)["strategy_id"])])
    rank_preset = staged(keep=lambda stage: stage.rank(preset="balanced").head(3))
    assert by_ids.kept == by_rows.kept == by_strategies.kept
    same_rows(by_ids.df, by_rows.df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
        first = raybt.run_backtests(GRID, DATA, STAGES[0], show_progress=False, continue_on_error=True, **COSTS)
    expected = [s.id for s in GRID if s.id in set(first.rank(preset="balanced").head(3)["strategy_id"])]
    assert ids(rank_preset.kept[0]) == expected


@pytest.mark.parametrize("how, error, message", [
    ("error", raybt.BacktestError, r"stage 1 of 3 \('feb'\): backtest of Momentum\(n=\d+\).*injected failure"),
    ("ctrl-c", KeyboardInterrupt, r"interrupted: 2 of 4 backtests saved in .*; run again to resume \(stage 1 of 3 "
                                  r"\('feb'\); the stages before it are complete\)"),
], ids=["error", "ctrl-c"])
def test_a_stopped_sweep_resumes_in_its_stage_with_the_same_survivors_and_rows(tmp_path, monkeypatch, how, error,
                                                                               message):
    grid = [Momentum(n=n) for n in range(1, 9)]
    options = dict(keep=4, checkpoint_dir=str(tmp_path / "stopped"), continue_on_error=False, batch_size=1)
    uninterrupted = staged(grid, **dict(options, checkpoint_dir=str(tmp_path / "whole")))
    # the third strategy of stage 1 stops the sweep
    monkeypatch.setenv("RAYBT_TEST_STOP", f"{uninterrupted.kept[0][2].id}:{how}")
    with pytest.raises(error, match=message):
        staged(grid, **options)
    stored = raybt.load_results(options["checkpoint_dir"]).df
    assert stored["range"].value_counts().to_dict() == {"jan": 8, "feb": 2}  # stopped in the middle of stage 1
    resumed = staged(grid, **options)
    assert resumed.kept == uninterrupted.kept
    same_rows(resumed.df, uninterrupted.df)
    assert resumed.stages[["n_computed", "n_skipped"]].values.tolist() == [[0, 8], [2, 2], [4, 0]]
    again = staged(grid, **options)  # a finished staged sweep: nothing computed, the same survivors
    assert again.kept == uninterrupted.kept and again.n_computed == 0 and again.n_skipped == 16


def staged_momentum(checkpoint_dir):
    """The staged sweep the SIGKILL test runs in a child process (``test_stages`` imported by name there, so that
    its strategies have the ids they have here): one row per part."""
    return staged([Momentum(n=n) for n in range(1, 9)], keep=4, checkpoint_dir=checkpoint_dir, batch_size=1,
                  checkpoint_batch_size=1)


def test_a_killed_sweep_resumes_in_its_stage_with_the_same_survivors_and_rows(tmp_path):
    """The driver process is SIGKILLed (nothing flushed, nothing cleaned up) once stage 1 has stored a row."""
    stopped = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", "import sys, test_stages; test_stages.staged_momentum(sys.argv[1])",
                              str(stopped)], cwd=Path(__file__).parent,
                             env=dict(os.environ, RAYBT_TEST_SLEEP_S="0.5"))  # stage 1: 4 backtests of 0.5 s
    try:
        deadline = time.monotonic() + 120
        while _n_parts(stopped) <= 8 and child.poll() is None and time.monotonic() < deadline:  # 8: stage 0's
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the sweep ended before it was killed"
    assert 1 <= _rows_of(stopped, "feb") < 4  # killed in the middle of stage 1
    resumed = staged_momentum(str(stopped))
    uninterrupted = staged_momentum(str(tmp_path / "whole"))
    assert resumed.kept == uninterrupted.kept
    same_rows(resumed.df, uninterrupted.df)
    assert resumed.stages["n_computed"].tolist()[0] == 0 and resumed.stages["n_skipped"].tolist()[1] >= 1


def _n_parts(checkpoint_dir):
    parts = checkpoint_dir / "parts"
    return len([p for p in parts.iterdir() if p.name.startswith("part-")]) if parts.exists() else 0


def _rows_of(checkpoint_dir, range_name):
    return int((raybt.load_results(str(checkpoint_dir), columns=["range"]).df["range"] == range_name).sum())


def test_a_job_failing_alone_in_its_batch_stops_the_sweep_with_its_error(tmp_path):
    """The stop path the resume above relies on: a batch whose only job failed has no row to write (writing its
    empty table raised 'not a result table' instead of the BacktestError)."""
    with pytest.raises(raybt.BacktestError, match=r"FailsOn\(n=3, bad=3\).*cannot handle n=3"):
        raybt.run_backtests([FailsOn(n=n) for n in range(5)], DATA, STAGES[0], batch_size=1, checkpoint_batch_size=1,
                            checkpoint_dir=str(tmp_path / "run"), show_progress=False)
    assert len(raybt.load_results(str(tmp_path / "run")).df) == 3


def test_pruned_strategies_stay_in_the_store_and_count_as_trials(tmp_path):
    results = staged(keep=2, checkpoint_dir=str(tmp_path / "run"))
    trials = raybt.stats.count_trials(tmp_path / "run")
    assert trials.by_range == {"jan": 15, "feb": 2, "mar": 2}
    assert trials.n_configurations == 15 and trials.n_jobs == 19 == len(results) and trials.n_failed == 1
    assert len(raybt.load_results(str(tmp_path / "run")).df) == 19


@pytest.mark.parametrize("keep, error, message", [
    (0, ValueError, "at least 1"), (True, TypeError, "positive int"), ("sharpe", TypeError, "a str"),
    (2.5, TypeError, "a float"),
])
def test_a_bad_keep_is_refused_before_anything_runs(keep, error, message):
    with pytest.raises(error, match=message):
        raybt.run_backtests(GRID, DATA, STAGES, keep=keep, show_progress=False)


def test_per_symbol_and_repeated_stages_are_refused():
    with pytest.raises(ValueError, match="per_symbol"):
        raybt.run_backtests(GRID, DATA, STAGES, keep=2, per_symbol=True, show_progress=False)
    with pytest.raises(ValueError, match=r"share the range name\(s\) \['jan'\]"):
        raybt.run_backtests(GRID, DATA, [STAGES[0], STAGES[1], STAGES[0]], keep=2, show_progress=False)


@pytest.mark.parametrize("returned, error, message", [
    (None, TypeError, r"keep returned a NoneType \(None\) after stage 0"),
    ("abc", TypeError, r"keep returned a str \('abc'\)"),
    ([1, 2], TypeError, r"an iterable holding an int \(1\)"),
    (pd.DataFrame({"sharpe": [1.0]}), TypeError, r"DataFrame without a strategy_id column \(columns \['sharpe'\]\)"),
    (["no-such-id"], ValueError,
     r"1 strategy id\(s\) that are not among the 15 strategies of stage 0: \['no-such-id'\]"),
])
def test_what_a_keep_callable_returns_is_checked(returned, error, message):
    with pytest.raises(error, match=message):
        staged(keep=lambda stage: returned)


def test_an_id_pruned_by_an_earlier_stage_is_named_as_such():
    first_stage = []

    def keep(stage):
        first_stage.append(stage)
        if len(first_stage) == 1:
            return stage.best("sharpe", 2)
        return list(first_stage[0].df["strategy_id"])  # everything of stage 0: most were pruned after it

    with pytest.raises(ValueError, match=r"not among the 2 strategies of stage 1: .*\(pruned after stage 0\)"):
        staged(keep=keep)


def test_keeping_nothing_stops_with_a_warning_and_pruning_nothing_is_reported():
    with pytest.warns(StageWarning, match=r"kept none of the 4 strategies of stage 1 \('feb'\); the sweep stops "
                                          r"here \(stages \['mar'\] not run\)"):
        stopped = staged(keep=lambda stage: stage.best("sharpe", 4) if stage.df["range"].iloc[0] == "jan" else [])
    assert stopped.stages["n_kept"].tolist() == [4, 0] and stopped.survivors == ()
    assert list(stopped.df["range"].unique()) == ["jan", "feb"]
    usable = [s for s in GRID[:12]]
    with pytest.warns(StageWarning, match=r"keep=12 pruned nothing: every stage kept all 12 strategies"):
        everything = staged(usable, keep=12)
    assert everything.stages["n_kept"].tolist() == [12, 12, 12]


def test_rules_see_rows_in_strategy_order_whatever_order_the_store_holds_them_in(tmp_path):
    """Rows come back from a checkpoint directory in the order they were written (an earlier sweep's order, Ray's
    completion order): the rule must not depend on it, or a resumed sweep could keep other strategies."""
    twin, original = SmaCrossTwin(fast=5, slow=20), SmaCross(fast=5, slow=20)
    strategies = [NeverTrades(), twin, original]
    raybt.run_backtests(strategies[::-1], DATA, STAGES[0], checkpoint_dir=str(tmp_path / "run"), batch_size=1,
                        checkpoint_batch_size=1, show_progress=False, **COSTS)
    assert list(raybt.load_results(str(tmp_path / "run")).df["strategy_id"]) == ids(strategies[::-1])
    seen = []
    by_rows = staged(strategies, keep=lambda stage: seen.append(list(stage.df["strategy_id"])) or [twin],
                     checkpoint_dir=str(tmp_path / "run"))
    assert seen[0] == ids(strategies) and by_rows.n_skipped == 3
    assert ids(staged(strategies, keep=1, checkpoint_dir=str(tmp_path / "run")).survivors) == [twin.id]
