"""The Results API: lazy loading with columns and filters (also while a sweep writes), best / rank / summary checked
against computations written here, replay of any row bit for bit, returns of many rows, parameter grids."""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.compute as pc
import pytest

import raybt
from raybt.checkpoint import CheckpointStore, MemoryStore
from raybt.data import DataError
from raybt.metrics import METRIC_NAMES
from raybt.results import RANK_PRESETS, Results, bar_returns

from sweeps import DATA, GRID, RANGES, SmaCross, run

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The standard sweep, checkpointed: (its Results, the directory)."""
    directory = tmp_path_factory.mktemp("ck")
    return run(checkpoint_dir=str(directory)), str(directory)


def _frame_results(frame: pd.DataFrame) -> Results:
    """Results over hand-written rows (in memory)."""
    store = MemoryStore()
    store.write(pa.Table.from_pandas(frame, preserve_index=False))
    return Results(store, frame["key"].to_numpy().astype("S24"))


HAND = pd.DataFrame({
    "key": [f"{i:024d}" for i in range(8)],
    "strategy_id": ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s4"],
    "strategy": ["X"] * 8,
    "p": [1, 1, 2, 2, 3, 3, 4, 4],
    "parameters": ['{"p":1}'] * 2 + ['{"p":2}'] * 2 + ['{"p":3}'] * 2 + ['{"p":4}'] * 2,
    "symbol": [None] * 8,
    "range": ["a", "b"] * 4,
    "total_return": [0.10, -0.05, 0.20, 0.30, np.nan, -0.10, 0.05, np.nan],
    "max_drawdown": [-0.10, -0.20, -0.05, -0.30, np.nan, -0.15, -0.02, np.nan],
    "sharpe": [1.0, np.nan, 2.5, 0.5, np.nan, -1.0, 3.0, np.nan],
    "volatility": [0.2, 0.1, 0.3, 0.4, np.nan, 0.5, 0.1, np.nan],
    "n_trades": [10.0, 0.0, 40.0, 35.0, 0.0, 12.0, 3.0, np.nan],
    "error": [None, None, None, None, None, None, None, "ValueError: boom"],
})


# ----------------------------------------------------------------------------------------------- one results type

def test_load_results_is_a_results_with_the_stored_rows(swept):
    results, directory = swept
    loaded = raybt.load_results(directory)
    assert isinstance(loaded, Results) and len(loaded) == len(results) == 24
    pd.testing.assert_frame_equal(loaded.df.sort_values("key").reset_index(drop=True),
                                  results.df.sort_values("key").reset_index(drop=True))


def test_columns_and_filter_read_only_what_is_asked(swept):
    results, directory = swept
    full = results.df
    expected = full[(full["sharpe"] > 1) & (full["n_trades"] >= 30)].sort_values("key")
    assert 0 < len(expected) < len(full)  # the filter selects something, not everything
    for filter in ([("sharpe", ">", 1), ("n_trades", ">=", 30)], (pc.field("sharpe") > 1) & (pc.field("n_trades") >= 30)):
        loaded = raybt.load_results(directory, columns=["sharpe", "fast"], filter=filter)
        df = loaded.df.sort_values("key").reset_index(drop=True)
        assert list(df.columns) == ["key", "sharpe", "fast"]  # key always, the filter's columns only if asked
        assert df["key"].tolist() == expected["key"].tolist()
        assert df["sharpe"].tolist() == expected["sharpe"].tolist() and df["fast"].tolist() == expected["fast"].tolist()
    with pytest.raises(KeyError, match="nope"):
        raybt.load_results(directory, columns=["nope"]).df
    with pytest.raises(TypeError, match="filter"):
        raybt.load_results(directory, filter="sharpe > 1")


def test_the_filter_applies_to_the_newest_row_of_a_key_only(tmp_path):
    """A key stored twice: its older row matches the filter, its newer one does not. The older row must not come
    back (a filter applied before choosing the newest row would return it)."""
    results = run(checkpoint_dir=str(tmp_path))
    row = results.df.iloc[[0]]
    newer = row.assign(sharpe=-99.0)
    assert row["sharpe"].iloc[0] > -50
    # The schema of a part raybt wrote (a round trip through pandas 2 would type the all-null symbol column as null).
    schema = pq.read_schema(next((tmp_path / "parts").glob("part-*.parquet")))
    CheckpointStore(str(tmp_path), writer=True).write(pa.Table.from_pandas(newer, preserve_index=False,
                                                                           schema=schema))
    kept = raybt.load_results(str(tmp_path), filter=[("sharpe", ">", -50)]).df
    assert row["key"].iloc[0] not in set(kept["key"])
    assert len(kept) == 23
    every = raybt.load_results(str(tmp_path), columns=["sharpe"]).df.set_index("key")
    assert every.loc[row["key"].iloc[0], "sharpe"] == -99.0 and len(every) == 24


def test_reading_while_another_process_writes(tmp_path):
    """A sweep in a subprocess writes parts while this process reads the directory in a loop: every read is a
    consistent set of whole rows (unique keys, no half part), never fewer than before, and the sweep finishes."""
    directory = tmp_path / "ck"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS.parent), str(TESTS)]))
    writer = subprocess.Popen([sys.executable, str(TESTS / "sweeps.py"), str(directory), "60"], env=env,
                              stderr=subprocess.PIPE)
    seen, sizes = 0, []
    try:
        while writer.poll() is None:
            if (directory / "parts").is_dir():
                df = raybt.load_results(str(directory), columns=["sharpe", "n_trades"],
                                        filter=[("n_trades", ">=", 0)]).df
                assert df["key"].is_unique and df["sharpe"].notna().all() if len(df) else True
                assert len(df) >= seen
                seen = len(df)
                sizes.append(seen)
            time.sleep(0.05)
    finally:
        _, stderr = writer.communicate(timeout=120)
    assert writer.returncode == 0, stderr.decode()[-2000:]
    assert len([s for s in sizes if 0 < s < 120]) >= 2, sizes  # read several times mid-sweep
    assert len(raybt.load_results(str(directory)).df) == 120


# ----------------------------------------------------------------------------------------------- ranking

def test_best_orders_nan_last_leaves_out_failures_and_shows_parameters_first():
    results = _frame_results(HAND)
    best = results.best("sharpe", n=10)
    ok = HAND[HAND["error"].isna()]
    with_value = ok[ok["sharpe"].notna()].sort_values("sharpe", ascending=False)["key"].tolist()
    without = sorted(ok[ok["sharpe"].isna()]["key"])
    assert best["key"].tolist() == with_value + without
    assert list(best.columns[:4]) == ["strategy", "p", "symbol", "range"] and best.columns[4] == "sharpe"
    assert best.columns.get_loc("key") > best.columns.get_loc("volatility")
    assert results.best("sharpe", 2)["key"].tolist() == with_value[:2]
    assert results.best("sharpe", 10, min_trades=12)["key"].tolist() == \
        ok[(ok["n_trades"] >= 12) & ok["sharpe"].notna()].sort_values("sharpe", ascending=False)["key"].tolist()
    lowest_vol = ok[ok["volatility"].notna()].sort_values(["volatility", "key"])["key"].tolist()
    assert results.best("volatility", 10)["key"].tolist()[:len(lowest_vol)] == lowest_vol  # lower is better
    with pytest.raises(KeyError, match="nope"):
        results.best("nope")


def test_best_of_many_rows_equals_the_full_sort_with_ties_and_nans():
    """best() sorts only the rows that can make the top n: the same rows in the same order as sorting them all by
    metric and key, with many ties (also at the n-th place), -0.0 and 0.0, infinities and NaN."""
    rng = np.random.default_rng(3)
    n_rows = 3_000
    values = rng.choice([np.nan, -np.inf, np.inf, -0.0, 0.0, 0.5, 1.0, 1.5, 2.0], size=n_rows)
    frame = pd.DataFrame({"key": [f"{i:024x}" for i in rng.permutation(n_rows)], "strategy_id": "s",
                          "strategy": "X", "parameters": "{}", "symbol": None, "range": "a", "sharpe": values,
                          "volatility": values, "error": None})
    results = _frame_results(frame)
    for metric, ascending in (("sharpe", False), ("volatility", True)):
        full = frame.sort_values([metric, "key"], ascending=[ascending, True], na_position="last", kind="stable")
        for n in (1, 7, 100, 1_000, 2_999, 3_000, 5_000):
            assert results.best(metric, n)["key"].tolist() == full["key"].head(n).tolist(), (metric, n)


def _score(frame, weights, lower=(), per_range=False):
    """The rank score written out: per metric, the percentile of the (oriented) value among the rows that have one
    (ties share the mean of their positions), NaN → 0."""
    total = pd.Series(0.0, index=frame.index)
    for metric, weight in weights.items():
        values = -frame[metric] if metric in lower else frame[metric]
        groups = frame.groupby("range").groups.values() if per_range else [frame.index]
        for index in groups:
            v = values.loc[index]
            n = v.notna().sum()
            pct = v.map(lambda x, v=v, n=n: np.nan if np.isnan(x) else ((v < x).sum() + ((v == x).sum() + 1) / 2) / n)
            total.loc[index] += weight * pct.fillna(0.0)
    return total / sum(weights.values())


def test_rank_with_weights_and_per_range():
    results = _frame_results(HAND)
    ok = HAND[HAND["error"].isna()]
    weights = {"sharpe": 2.0, "max_drawdown": 1.0, "volatility": 1.0}
    for per_range in (False, True):
        ranked = results.rank(weights, per_range=per_range)
        expected = _score(ok, weights, lower={"volatility"}, per_range=per_range)
        order = expected.reset_index().assign(key=ok["key"].to_numpy()).sort_values([0, "key"],
                                                                                      ascending=[False, True])
        assert ranked["key"].tolist() == order["key"].tolist()
        np.testing.assert_allclose(ranked.set_index("key")["score"].loc[order["key"]], order[0], rtol=0, atol=1e-15)
        assert ranked.columns[:2].tolist() == ["strategy", "p"] and "score" in ranked.columns[:6]
    with pytest.raises(KeyError, match="sharp"):
        results.rank({"sharp": 1})
    with pytest.raises(ValueError, match="positive"):
        results.rank({"volatility": -1})
    with pytest.raises(ValueError, match="presets are"):
        results.rank(preset="fast")


@pytest.mark.parametrize("preset", sorted(RANK_PRESETS))
def test_rank_presets(swept, preset):
    results, _ = swept
    assert {"balanced", "profit", "risk_adjusted", "frequency"} <= set(RANK_PRESETS)
    ranked = results.rank(preset=preset)
    ok = results.df[results.df["error"].isna()]
    expected = _score(ok, RANK_PRESETS[preset], lower=raybt.results.LOWER_IS_BETTER)
    np.testing.assert_allclose(ranked["score"].to_numpy(), expected.loc[ranked.index].to_numpy(), atol=1e-12)
    assert ranked["score"].is_monotonic_decreasing


def test_summary_against_pandas():
    summary = _frame_results(HAND).summary().set_index("strategy_id")
    for sid, rows in HAND.groupby("strategy_id"):
        ran = rows[rows["error"].isna()]
        s = summary.loc[sid]
        assert s["n_ranges"] == len(ran) and s["n_failed"] == rows["error"].notna().sum()
        assert s["n_profitable"] == (ran["total_return"] > 0).sum()
        assert s["consistency"] == (ran["total_return"] > 0).sum() / len(ran)
        compounded = np.nan
        if len(ran) == len(rows) and ran["total_return"].notna().all():
            compounded = float(np.prod([1 + r for r in ran["total_return"]]) - 1)
        assert s["compounded_return"] == pytest.approx(compounded, nan_ok=True, rel=0, abs=1e-15)
        assert s["worst_max_drawdown"] == pytest.approx(ran["max_drawdown"].min(), nan_ok=True)  # most negative
        sharpes = ran["sharpe"].dropna()
        assert s["mean_sharpe"] == pytest.approx(sharpes.mean() if len(sharpes) else np.nan, nan_ok=True)
        assert s["worst_sharpe"] == pytest.approx(sharpes.min() if len(sharpes) else np.nan, nan_ok=True)
        assert s["n_trades"] == ran["n_trades"].sum()
    assert summary.loc["s1", "worst_max_drawdown"] == -0.20  # not the best (-0.10)
    assert summary.index.tolist() == ["s2", "s1", "s3", "s4"]  # compounded return, NaN (failed, NaN return) last


def test_summary_of_a_sweep_has_one_row_per_strategy(swept):
    results, _ = swept
    summary = results.summary()
    assert len(summary) == len(GRID) and (summary["n_ranges"] == len(RANGES)).all()
    assert summary.columns[:3].tolist() == ["strategy", "fast", "slow"]


# ----------------------------------------------------------------------------------------------- replay

def test_backtest_replays_any_row_bit_for_bit(swept):
    results, directory = swept
    loaded = raybt.load_results(directory)
    for _, row in results.df.sample(6, random_state=1).iterrows():
        for bt in (results.backtest(row, DATA), loaded.backtest(row["key"], DATA, strategy=SmaCross),
                   loaded.backtest(row, DATA, strategy={"SmaCross": SmaCross})):
            for name in METRIC_NAMES:
                assert bt.metrics[name] == row[name] or (np.isnan(bt.metrics[name]) and np.isnan(row[name])), name
            assert bt.equity.index[0] == row["start"] and bt.equity.index[-1] == row["end"]
            assert len(bt.trades) == row["n_trades"] or bt.trades["exit_reason"].eq("end").any()


def test_replay_errors_are_clear(swept):
    results, directory = swept
    row = results.df.iloc[0]
    other = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-04-01", "1h", seed=6)
    with pytest.raises(DataError, match="fingerprint"):
        results.backtest(row, other)
    loaded = raybt.load_results(directory)
    with pytest.raises(DataError, match="fingerprint"):
        loaded.backtest(row, other, strategy=SmaCross)
    with pytest.raises(TypeError, match="strategy=SmaCross"):
        loaded.backtest(row, DATA)

    class SmaCross2(SmaCross):
        pass

    with pytest.raises(TypeError, match="SmaCross2"):
        loaded.backtest(row, DATA, strategy=SmaCross2)
    with pytest.raises(ValueError, match="code"):  # a class with other code does not reproduce the key
        loaded.backtest(row, DATA, strategy={"SmaCross": SmaCross2})
    with pytest.raises(KeyError, match="0000"):
        loaded.backtest("0" * 24, DATA, strategy=SmaCross)


def test_returns_of_many_rows_equal_replays(swept):
    results, _ = swept
    rows = results.best("sharpe", 5)
    per_bar = results.returns(rows, DATA)
    assert per_bar.columns.tolist() == rows["key"].tolist()
    for key in rows["key"]:
        bt = results.backtest(key, DATA)
        r = bt.equity.pct_change()
        r.iloc[0] = bt.equity.iloc[0] / 10_000 - 1
        column = per_bar[key].dropna()
        assert column.index.equals(bt.equity.index)
        assert np.array_equal(column.to_numpy(), r.to_numpy())  # bit for bit
    daily = results.returns(rows, DATA, freq="1D")
    key = rows["key"].iloc[0]
    by_day = (1 + per_bar[key].dropna()).groupby(per_bar[key].dropna().index.floor("1D")).prod() - 1
    np.testing.assert_array_equal(daily[key].dropna().to_numpy(), by_day.to_numpy())


def test_returns_on_ray_equal_in_process(swept, ray_cluster):
    results, _ = swept
    rows = results.best("total_return", 6)
    pd.testing.assert_frame_equal(results.returns(rows, DATA, n_workers=2, batch_size=2),
                                  results.returns(rows, DATA), check_exact=True)


def test_bar_returns_first_bar_against_initial_amount():
    equity = pd.Series([101.0, 99.0, 99.0])
    np.testing.assert_array_equal(bar_returns(equity, 100.0).to_numpy(), [101 / 100 - 1, 99 / 101 - 1, 0.0])


# ----------------------------------------------------------------------------------------------- grids

def test_grid_with_where():
    strategies = raybt.grid(SmaCross, fast=range(5, 55, 5), slow=range(20, 210, 10), where=lambda fast, slow: fast < slow)
    expected = [(f, s) for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    assert [(s.fast, s.slow) for s in strategies] == expected
    assert all(type(s) is SmaCross for s in strategies)
    assert [s.fast for s in raybt.grid(SmaCross, fast=np.arange(3, 6))] == [3, 4, 5]
    assert raybt.grid(SmaCross, fast=[3, 3], slow=30) == [SmaCross(fast=3, slow=30)]
    with pytest.raises(TypeError, match="'fats'"):
        raybt.grid(SmaCross, fats=[1])
    with pytest.raises(TypeError, match="medium"):
        raybt.grid(SmaCross, fast=[1], where=lambda fast, medium: True)
    with pytest.raises(ValueError, match="'slow' has no values"):
        raybt.grid(SmaCross, fast=[1], slow=[])
    with pytest.raises(ValueError, match="rejected every"):
        raybt.grid(SmaCross, fast=[10], slow=[5], where=lambda fast, slow: fast < slow)


def test_random_grid_is_deterministic_by_seed():
    from scipy import stats

    def draw(seed):
        return raybt.random_grid(SmaCross, n=20, seed=seed, fast=range(2, 30), slow=stats.uniform(30, 100),
                                 where=lambda fast, slow: fast < slow)

    first = draw(7)
    assert first == draw(7) and first != draw(8)
    assert len(set(first)) == 20 and all(2 <= s.fast < 30 and 30 <= s.slow <= 130 for s in first)
    assert all(isinstance(s.slow, int) for s in first)  # an int parameter's draws rounded
    rng = np.random.default_rng(7)  # the documented draw order: parameter by parameter, in keyword order
    fast0 = list(range(2, 30))[int(rng.integers(28))]
    slow0 = int(round(stats.uniform(30, 100).rvs(random_state=rng)))
    assert (first[0].fast, first[0].slow) == (fast0, slow0)
    by_callable = raybt.random_grid(SmaCross, n=3, seed=1, fast=lambda rng: int(rng.integers(2, 9)), slow=50)
    assert all(s.slow == 50 and 2 <= s.fast < 9 for s in by_callable)
    with pytest.raises(TypeError, match="'fastt'"):
        raybt.random_grid(SmaCross, n=3, seed=1, fastt=range(3))
    with pytest.raises(ValueError, match="only 2 distinct"):
        raybt.random_grid(SmaCross, n=5, seed=1, fast=[2, 3])


def test_every_row_of_a_sweep_replays_whatever_ran_before_it_in_its_batch():
    """cvar_95 once depended on the backtests run before a row in the same batch (a lane-wise sum over a tail whose
    collection limit they set): 8 of these 57 rows replayed with a cvar_95 one or two ulps off."""
    strategies = raybt.grid(SmaCross, fast=[3, 5, 8, 13, 21], slow=[20, 30, 50, 80], where=lambda fast, slow: fast < slow)
    results = run(strategies, date_ranges=[*RANGES, None], batch_size=60)
    for _, row in results.df.iterrows():
        bt = raybt.run_backtest(SmaCross(fast=int(row["fast"]), slow=int(row["slow"])), DATA, raybt.results.row_inputs(
            row).date_range, fees=0.001)
        assert bt.metrics["cvar_95"] == row["cvar_95"], row["key"]
        results.backtest(row, DATA)  # every metric checked bit for bit


class ByInt(raybt.Strategy):
    p: int = 1

    def signals(self, data):
        return data.close > data.close.shift(self.p), data.close < data.close.shift(self.p)


class ByText(raybt.Strategy):
    p: str = "1"

    def signals(self, data):
        n = int(self.p)
        return data.close > data.close.shift(n), data.close < data.close.shift(n)


def test_a_filtered_load_keeps_parameters_exact_across_parts(tmp_path):
    """A parameter that is an int in one part and text in another (two classes share its name): a load with
    columns and a filter gives the same exact values as a full load (5 stays 5, "5" stays "5")."""
    run([ByInt(p=2), ByInt(p=5)], checkpoint_dir=str(tmp_path))
    run([ByText(p="3"), ByText(p="5")], checkpoint_dir=str(tmp_path))
    full = raybt.load_results(str(tmp_path)).df.set_index("key")
    lazy = raybt.load_results(str(tmp_path), columns=["strategy", "p", "parameters"],
                              filter=pc.field("n_trades") >= 0).df.set_index("key")
    assert len(lazy) == len(full) == 8
    assert lazy["p"].loc[full.index].tolist() == full["p"].tolist()
    assert sorted(map(repr, set(lazy["p"]))) == ["'3'", "'5'", "2", "5"]
