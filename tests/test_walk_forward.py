"""raybt.walk_forward equals the same folds run by hand with run_backtests / run_backtest."""

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
from scipy import stats as sps

import raybt
from sweeps import DATA, FailsOn, SmaCross

FOLDS = raybt.windows.rolling("2023-01-01", "2023-04-01", train="30D", test="15D", step="20D")
COSTS = dict(fees=0.001, initial_amount=5_000)


class NeverTrades(raybt.Strategy):
    """No signal at all: a Sharpe ratio of NaN (constant equity), which selection must skip."""

    n: int = 0

    def signals(self, data):
        flat = data.close != data.close
        return flat, flat


class SmaCrossTwin(SmaCross):
    """The same rule under another name: the same metrics, another strategy id."""


GRID = [SmaCross(fast=f, slow=s) for f in (3, 5, 8) for s in (20, 40)] + [NeverTrades(), FailsOn(n=3)]


def walk(grid=GRID, folds=FOLDS, **kwargs):
    options = dict(COSTS, show_progress=False, continue_on_error=True)
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
        return raybt.walk_forward(grid, DATA, folds, **options)


def by_hand(grid, folds):
    """Each fold: sweep the train window, take the highest finite Sharpe, backtest it on the test window; the
    rank correlation from every strategy backtested alone on both windows."""
    rows, curves, level = [], [], COSTS["initial_amount"]
    for train, test in folds:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
            df = raybt.run_backtests(grid, DATA, [train], show_progress=False, continue_on_error=True, **COSTS).df
        ok = df[df["error"].isna() & np.isfinite(df["sharpe"])]
        best_id = ok.loc[ok["sharpe"].idxmax(), "strategy_id"]
        best = next(s for s in grid if s.id == best_id)
        oos = raybt.run_backtest(best, DATA, test, **COSTS)
        curves.append(oos.equity * level / COSTS["initial_amount"])
        level = curves[-1].iloc[-1]
        is_sharpe, oos_sharpe = [], []
        for strategy in grid:
            try:
                a = raybt.run_backtest(strategy, DATA, train, **COSTS).metrics["sharpe"]
                b = raybt.run_backtest(strategy, DATA, test, **COSTS).metrics["sharpe"]
            except ValueError:  # FailsOn(n=3)
                continue
            if np.isfinite(a) and np.isfinite(b):
                is_sharpe.append(a)
                oos_sharpe.append(b)
        rows.append(dict(strategy_id=best_id, is_sharpe=ok["sharpe"].max(), oos_sharpe=oos.metrics["sharpe"],
                         oos_total_return=oos.metrics["total_return"],
                         rank_correlation=sps.spearmanr(is_sharpe, oos_sharpe).statistic))
    return pd.DataFrame(rows), pd.concat(curves)


def test_walk_forward_equals_the_folds_run_by_hand():
    wf = walk()
    expected, equity = by_hand(GRID, FOLDS)
    assert len(FOLDS) == 3 and list(wf.folds["fold"]) == [0, 1, 2]
    assert list(wf.folds["train"]) == [t.name for t, _ in FOLDS]
    pd.testing.assert_series_equal(wf.folds["strategy_id"], expected["strategy_id"])
    for column in ("is_sharpe", "oos_sharpe", "oos_total_return", "rank_correlation"):
        np.testing.assert_allclose(wf.folds[column], expected[column], rtol=1e-12, err_msg=column)
    pd.testing.assert_series_equal(wf.equity, equity.rename("equity"), rtol=1e-12)
    np.testing.assert_allclose(wf.folds["sharpe_ratio_oos_is"], expected["oos_sharpe"] / expected["is_sharpe"])
    assert wf.efficiency == pytest.approx(expected["oos_sharpe"].mean() / expected["is_sharpe"].mean())
    assert wf.rank_correlation == pytest.approx(expected["rank_correlation"].mean())
    # the stitched curve compounds: its total return is the product of the folds' out-of-sample returns
    assert wf.equity.iloc[-1] / COSTS["initial_amount"] == pytest.approx(np.prod(1 + wf.folds["oos_total_return"]))
    # neither the strategy without a Sharpe ratio nor the failing one is ever chosen
    assert set(wf.folds["strategy"]) == {"SmaCross"}
    # the in-sample figures are the sweep's rows; the out-of-sample ones equal the sweep's test-window rows too
    for (_, row), results in zip(wf.folds.iterrows(), wf.results):
        sweep = results.df.set_index(["strategy_id", "range"])
        assert sweep.loc[(row["strategy_id"], row["test"]), "sharpe"] == pytest.approx(row["oos_sharpe"], rel=1e-12)


def test_a_callable_selects_and_without_oos_all_there_is_no_rank_correlation():
    wf = walk(select=lambda rows: rows["total_return"].idxmin(), oos_all=False)
    for (_, row), results in zip(wf.folds.iterrows(), wf.results):
        train = results.df
        assert set(train["range"]) == {row["train"]}             # the test window was not swept
        assert row["strategy_id"] == train.loc[train["total_return"].idxmin(), "strategy_id"]
    assert wf.folds["rank_correlation"].isna().all() and np.isnan(wf.rank_correlation)


def test_a_resumed_walk_forward_reruns_nothing_and_reproduces_the_folds(tmp_path):
    folder = str(tmp_path / "wf")
    walk(folds=FOLDS[:1], checkpoint_dir=folder)                  # stopped after the first fold
    resumed = walk(checkpoint_dir=folder)
    assert resumed.results[0].n_computed == 0 and resumed.results[1].n_computed > 0
    again = walk(checkpoint_dir=folder)
    assert all(r.n_computed == 0 for r in again.results)
    fresh = walk()
    pd.testing.assert_frame_equal(resumed.folds, fresh.folds)
    pd.testing.assert_frame_equal(again.folds, fresh.folds)
    pd.testing.assert_series_equal(resumed.equity, fresh.equity)


class SlowSmaCross(SmaCross):
    """SmaCross that sleeps RAYBT_TEST_SLEEP_S seconds per backtest (a walk-forward slow enough to be killed in)."""

    def signals(self, data):
        time.sleep(float(os.environ.get("RAYBT_TEST_SLEEP_S", "0")))
        return super().signals(data)


def slow_walk(checkpoint_dir):
    """The walk-forward the SIGKILL test runs in a child process (``test_walk_forward`` imported by name there, so
    that its strategies have the ids they have here): two folds of 4 strategies, train and test, one row per part."""
    grid = [SlowSmaCross(fast=f, slow=s) for f in (3, 8) for s in (20, 40)]
    return walk(grid, FOLDS[:2], checkpoint_dir=checkpoint_dir, batch_size=1, checkpoint_batch_size=1)


def test_a_walk_forward_killed_mid_fold_resumes_to_the_same_folds(tmp_path):
    """The driver is SIGKILLed (nothing flushed, nothing cleaned up) in the second fold's train sweep; running the
    same call again computes only what is missing and gives the folds and equity of an uninterrupted run."""
    stopped = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", "import sys, test_walk_forward as t; t.slow_walk(sys.argv[1])",
                              str(stopped)], cwd=Path(__file__).parent,
                             env=dict(os.environ, RAYBT_TEST_SLEEP_S="0.3"))
    try:
        deadline = time.monotonic() + 120
        while _n_parts(stopped) <= 9 and child.poll() is None and time.monotonic() < deadline:  # fold 0: 8 rows
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert child.returncode == -signal.SIGKILL, "the walk-forward ended before it was killed"
    assert 9 < _n_parts(stopped) < 16  # killed inside fold 1
    resumed = slow_walk(str(stopped))
    assert resumed.results[0].n_computed == 0 and 0 < resumed.results[1].n_computed < 8
    fresh = slow_walk(str(tmp_path / "whole"))
    pd.testing.assert_frame_equal(resumed.folds, fresh.folds)
    pd.testing.assert_series_equal(resumed.equity, fresh.equity)


def _n_parts(checkpoint_dir):
    parts = checkpoint_dir / "parts"
    return len([p for p in parts.iterdir() if p.name.startswith("part-")]) if parts.exists() else 0


def test_ties_go_to_the_first_strategy_given():
    twins = [SmaCross(fast=5, slow=20), SmaCrossTwin(fast=5, slow=20)]
    assert twins[0].id != twins[1].id
    for grid in (twins, twins[::-1]):
        wf = walk(grid=grid, folds=FOLDS[:1])
        assert wf.folds["strategy_id"].iloc[0] == grid[0].id


def test_errors_name_the_problem():
    message = r"no strategy has a sharpe value in fold-0 \(fold-0/train\) \(2 rows, 1 failed"
    with pytest.raises(ValueError, match=message):
        walk(grid=[FailsOn(n=3), NeverTrades()])
    train, test = FOLDS[0]
    overlapping = [(train, test), (FOLDS[1][0], raybt.DateRange(test.start, test.end, name="again"))]
    with pytest.raises(ValueError, match="test windows 'fold-0/test' and 'again' overlap"):
        walk(folds=overlapping)
    with pytest.raises(ValueError, match="per_symbol"):
        walk(per_symbol=True)
    with pytest.raises(KeyError, match="unknown select metric 'sharp'"):
        walk(select="sharp")
