"""raybt.walk_forward equals the same folds run by hand with run_backtests / run_backtest."""

import builtins
import functools
import importlib
import os
import pickle
import signal
import subprocess
import sys
import textwrap
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


# ------------------------------------------------------------------ the strategy's code edited while it runs

EDITED_STRATEGY = textwrap.dedent('''
    import raybt
    import wf_edited_helpers


    class EditedMomentum(raybt.Strategy):
        n: int = 5

        def signals(self, data):
            lag = wf_edited_helpers.lag(self.n)
            return data.close > data.close.shift(lag), data.close < data.close.shift(lag)
''')
EDITED_HELPERS = textwrap.dedent('''
    EXTRA = 0


    class Shift:
        """A callable object, as a compiled helper is: the code walk reads its class, not the instance's values."""

        def __init__(self, extra):
            self.extra = extra

        def __call__(self, n):
            return n + self.extra


    shift = Shift(0)


    def lag(n):
        return shift(n) + EXTRA
''')


@pytest.fixture()
def edited_code(tmp_path, monkeypatch):
    """``wf_edited_strategy.EditedMomentum``, which calls ``wf_edited_helpers.lag``: modules written to tmp_path,
    imported afresh, forgotten after the test."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within the same second must not load a stale .pyc
    (tmp_path / "wf_edited_strategy.py").write_text(EDITED_STRATEGY)
    (tmp_path / "wf_edited_helpers.py").write_text(EDITED_HELPERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    names = ("wf_edited_strategy", "wf_edited_helpers")
    try:
        yield importlib.import_module("wf_edited_strategy")
    finally:
        for name in names:
            sys.modules.pop(name, None)


def edit_files(folder, edits=(("wf_edited_strategy.py", "lag(self.n)", "lag(self.n) + 2"),
                               ("wf_edited_helpers.py", "shift(n) + EXTRA", "shift(n) + EXTRA + 3"))):
    """Result-changing edits (by default of both files: the lag grows by 2 and by 3), on disk only."""
    for name, old, new in edits:
        text = (folder / name).read_text()
        assert old in text, (name, old)
        (folder / name).write_text(text.replace(old, new))


def after_the_first_call(monkeypatch, name, action):
    """Run ``action`` right after walk_forward's first call of ``name`` (``run_backtests``: fold 0's sweep;
    ``run_backtest``: fold 0's test backtest, i.e. between fold 0 and fold 1)."""
    module = sys.modules["raybt.walk_forward"]
    real, calls = getattr(module, name), []

    def hooked(*args, **kwargs):
        result = real(*args, **kwargs)
        if not calls:
            action()
        calls.append(name)
        return result

    monkeypatch.setattr(module, name, hooked)


@pytest.mark.parametrize("when", ["before the call", "between a fold's sweep and its test backtest",
                                  "between folds"])
def test_a_strategy_file_edited_while_walk_forward_runs_gives_one_version_of_the_code(edited_code, tmp_path,
                                                                                        monkeypatch, when):
    """Editing the files (without reloading them) does not change the code that runs: the whole walk-forward is
    computed, keyed and reported with the code as it was when the call started, like one run_backtests. (Before:
    the next sweep refreshed the ids from the edited file and the selected id was not found, a bare KeyError.)"""
    grid = [edited_code.EditedMomentum(n=n) for n in (3, 8, 21)]
    unedited = walk(grid, checkpoint_dir=str(tmp_path / "unedited"))
    if when == "before the call":
        edit_files(tmp_path)  # the ids the strategies cached are now stale
    else:
        after_the_first_call(monkeypatch, "run_backtests" if "sweep" in when else "run_backtest",
                             lambda: edit_files(tmp_path))
    wf = walk(grid, checkpoint_dir=str(tmp_path / "edited"))
    ids = [s.id for s in grid]
    assert set(wf.folds["strategy_id"]) <= set(ids)
    for results in wf.results:  # every fold's rows are keyed by one version of the code
        assert set(results.df["strategy_id"]) == set(ids)
    same_ids = when != "before the call"  # the call started before the edit: the ids of the unedited files
    pd.testing.assert_frame_equal(wf.folds.drop(columns="strategy_id"), unedited.folds.drop(columns="strategy_id"))
    assert wf.folds["strategy_id"].equals(unedited.folds["strategy_id"]) == same_ids
    pd.testing.assert_series_equal(wf.equity, unedited.equity)
    again = walk(grid, checkpoint_dir=str(tmp_path / "edited"))  # a new call keys its rows by the files as they are
    assert [r.n_computed for r in again.results] == [len(r) if same_ids else 0 for r in again.results]
    reload_helpers()  # the edited code, once loaded, gives other results: none of it ran above
    loaded = importlib.reload(edited_code)
    assert not walk([loaded.EditedMomentum(n=n) for n in (3, 8, 21)]).equity.equals(unedited.equity)


def test_what_python_and_ray_set_while_no_code_changes_does_not_stop_a_walk_forward(edited_code, monkeypatch):
    """Between the folds of a first walk-forward on Ray, Ray replaces ``builtins.print`` (a value of every module's
    ``__builtins__``) with a function of its own, and pickling an object for the workers caches ``__slotnames__`` on
    its class: the code that runs is the same, so the walk-forward goes on."""
    helpers = sys.modules["wf_edited_helpers"]

    def as_ray_does():
        monkeypatch.setattr(builtins, "print", functools.partial(print))  # not user code, as Ray's is not
        pickle.dumps(helpers.shift)

    after_the_first_call(monkeypatch, "run_backtest", as_ray_does)
    wf = walk([edited_code.EditedMomentum(n=n) for n in (3, 8, 21)], folds=FOLDS[:2])
    assert len(wf.folds) == 2 and "__slotnames__" in vars(helpers.Shift)


def reload_helpers():
    importlib.reload(sys.modules["wf_edited_helpers"])


CODE_CHANGES = {
    "a helper edited and reloaded": lambda folder: (edit_files(folder), reload_helpers()),
    "a helper object rebuilt by a reload (invisible to the code walk)":
        lambda folder: (edit_files(folder, [("wf_edited_helpers.py", "Shift(0)", "Shift(3)")]), reload_helpers()),
    "a module-level value reassigned": lambda folder: setattr(sys.modules["wf_edited_helpers"], "EXTRA", 3),
}


@pytest.mark.parametrize("change", list(CODE_CHANGES))
def test_code_changed_in_memory_while_walk_forward_runs_stops_it_with_a_clear_error(edited_code, tmp_path,
                                                                                     monkeypatch, change):
    """The code that runs changes between fold 0 and fold 1: going on would mix two versions in one walk-forward.
    It stops before fold 1 computes anything, naming the class, its file and what to do; called again, every fold
    runs the new code (fold 0's rows of the old code are not reused)."""
    grid = [edited_code.EditedMomentum(n=n) for n in (3, 8, 21)]
    folder = str(tmp_path / "checkpoints")
    after_the_first_call(monkeypatch, "run_backtest", lambda: CODE_CHANGES[change](tmp_path))
    message = (r"walk_forward stopped before fold 1: the code of strategy class EditedMomentum \(.*"
               r"wf_edited_strategy\.py\) changed in memory while fold 0 ran: .* Call walk_forward again")
    with pytest.raises(RuntimeError, match=message):
        walk(grid, folds=FOLDS[:2], checkpoint_dir=folder)
    assert len(raybt.load_results(folder)) == 2 * len(grid)  # fold 0's train and test rows only
    old_ids = [s.id for s in grid]
    again = walk(grid, folds=FOLDS[:2], checkpoint_dir=folder)  # the hook acts once: the code stays as changed
    assert all(r.n_computed == len(r) for r in again.results)
    new_ids = [s.id for s in grid]
    assert not set(new_ids) & set(old_ids)
    assert all(set(r.df["strategy_id"]) == set(new_ids) for r in again.results)
