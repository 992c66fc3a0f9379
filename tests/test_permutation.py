"""The permutation test: permuted markets (checked against a reference written here) and raybt.stats.permutation_test
(p-values, determinism across executors, checkpoint resume, refusals)."""

import functools
import re
import warnings

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import raybt
from raybt import permute
from raybt.cli import EXIT_OK, main
from raybt.demo import SmaCross
from raybt.permuted_rows import PermutedRowsWarning

TWO = raybt.synthetic_ohlcv(["A", "B"], "2023-01-01", "2023-01-15", "1h", seed=3)
RANGE = raybt.DateRange("2023-01-05", "2023-01-12", name="middle")
permutation_test = functools.partial(raybt.stats.permutation_test, show_progress=False)


class FollowsLastBar(raybt.Strategy):
    """Long after an up bar, out after a down bar: the edge planted in :func:`trending_market`."""

    lag: int = 1

    def signals(self, data):
        up = data.close > data.close.shift(self.lag)
        return up, ~up


class FailsWhenPermuted(raybt.Strategy):
    """Raises when the last close of its data differs from the real one: fails on permuted markets only."""

    real_close: float = 0.0

    def signals(self, data):
        if data.close.iloc[-1, 0] != self.real_close:
            raise ValueError("not the real market")
        return data.close > data.close.shift(1), data.close < data.close.shift(1)


def ohlcv(log_returns, seed, start="2023-01-01", freq="1h"):
    """A single-symbol market from close-to-close log returns, with random opens, highs and lows around them."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(log_returns))
    prev = np.concatenate([[100.0], close[:-1]])
    open_ = prev * np.exp(rng.normal(0, 0.0005, len(close)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, 0.002, len(close))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, 0.002, len(close))))
    index = pd.date_range(start, periods=len(close), freq=freq, tz="UTC")
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.lognormal(5, 1, len(close))}, index=index)


def trending_market(n_bars=600, phi=0.4, seed=1):
    """AR(1) log returns: an up bar tends to follow an up bar, a structure in time that permutations destroy."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0, 0.004, n_bars)
    returns = np.zeros(n_bars)
    for t in range(1, n_bars):
        returns[t] = phi * returns[t - 1] + shocks[t]
    return ohlcv(returns, seed)


def random_walk(n_bars=600, seed=2):
    return ohlcv(np.random.default_rng(seed).normal(0, 0.004, n_bars), seed)


# ------------------------------------------------------------------------------------------------- permuted markets

def reference_sources(real, permuted, first, end):
    """For each bar of the window, the real bar whose shape it has: found by its close-to-close ratio on symbol 0
    (continuous data: every ratio is distinct), then every ratio of every symbol checked against that bar."""
    def ratios(market, t_prev, t):
        prev = market.close[:, t_prev]
        return np.stack([market.open[:, t] / prev, market.high[:, t] / prev, market.low[:, t] / prev,
                         market.close[:, t] / prev, market.volume[:, t]])

    real_close_ratio = real.close[0, first:end] / real.close[0, first - 1:end - 1]
    sources = []
    for t in range(first, end):
        ratio = permuted.close[0, t] / permuted.close[0, t - 1]
        source = first + int(np.argmin(np.abs(real_close_ratio - ratio)))
        np.testing.assert_allclose(ratios(permuted, t - 1, t), ratios(real, source - 1, source), rtol=1e-12)
        sources.append(source)
    return np.array(sources)


def test_permuted_bars_keep_their_shape_relative_to_the_previous_close_with_one_order_for_all_symbols():
    permuted = permute.permuted_market(TWO, RANGE, (7, 3))
    first, end = permute.window(TWO, RANGE)
    _, start, stop = TWO.bounds(RANGE)
    assert (first, end) == (start, stop) and 0 < first < end < TWO.n_bars
    sources = reference_sources(TWO, permuted, first, end)  # checks symbol B against the order found on A
    assert sorted(sources) == list(range(first, end))  # every bar of the window once
    assert not np.array_equal(sources, np.arange(first, end))  # and not in the real order
    for field in raybt.data.FIELDS:
        real, new = getattr(TWO, field), getattr(permuted, field)
        np.testing.assert_array_equal(new[:, :first], real[:, :first])  # warm-up bars are the real ones
        np.testing.assert_array_equal(new[:, end:], real[:, end:])  # so are the bars after the range
    np.testing.assert_allclose(permuted.close[:, end - 1], TWO.close[:, end - 1], rtol=1e-12)  # same total return
    assert (permuted.high >= np.maximum(permuted.open, permuted.close)).all()
    assert (permuted.low <= np.minimum(permuted.open, permuted.close)).all()
    assert permuted.index.equals(TWO.index) and permuted.symbols == TWO.symbols


def test_permuted_returns_are_a_permutation_of_the_real_ones():
    permuted = permute.permuted_market(TWO, None, (0, 0))
    log_returns = [np.diff(np.log(m.close), axis=1) for m in (TWO, permuted)]
    np.testing.assert_allclose(np.sort(log_returns[1], axis=1), np.sort(log_returns[0], axis=1), atol=1e-13)
    assert not np.allclose(log_returns[1], log_returns[0])
    assert permuted.close[0, 0] == TWO.close[0, 0]  # the first bar has no previous close: it stays


def test_permutations_depend_on_seed_and_i_alone():
    def fresh(seed, i):
        permute._CACHE.clear()
        return permute.permuted_market(TWO, RANGE, (seed, i)).close

    np.testing.assert_array_equal(fresh(5, 1), fresh(5, 1))
    assert not np.array_equal(fresh(5, 1), fresh(5, 2))
    assert not np.array_equal(fresh(5, 1), fresh(6, 1))
    kept = [permute.permuted_market(TWO, RANGE, p).close for p in ((5, 1), (6, 1), (5, 2))]  # from the cache
    assert not np.array_equal(kept[0], kept[1]) and not np.array_equal(kept[0], kept[2])
    # the i-th child of SeedSequence(seed), as SeedSequence.spawn hands them out
    child = np.random.SeedSequence(5).spawn(3)[2]
    np.testing.assert_array_equal(permute.bar_order(5, 2, 50),
                                  np.random.Generator(np.random.PCG64(child)).permutation(50))


def test_missing_bars_in_the_window_are_refused_naming_the_symbol_and_time():
    late = {"A": TWO["A"], "B": TWO["B"].iloc[50:]}
    market = raybt.load_ohlcv(late)
    with pytest.raises(raybt.DataError, match=r"symbol 'B' has no bar at 2023-01-01 00:00.*range 'all data'"):
        permute.check_permutable(market, None)
    permute.check_permutable(market, RANGE)  # B trades throughout this range
    with pytest.raises(raybt.DataError, match="symbol 'B'"):
        permutation_test(SmaCross(fast=3, slow=10), late, n=2)


# ------------------------------------------------------------------------------------------------- the test

def test_a_planted_edge_is_significant_and_noise_is_not():
    edge = permutation_test(FollowsLastBar(), trending_market(), n=39, seed=1)
    assert edge.observed > 3 and edge.p_value == 1 / 40  # no permuted market comes close
    noise = permutation_test([SmaCross(fast=f, slow=s) for f in (3, 6) for s in (12, 24)],
                                         random_walk(), n=39, seed=1)
    assert noise.p_value > 0.2
    assert edge.n_permutations == noise.n_permutations == 39 and edge.metric == "sharpe" and edge.seed == 1


def test_p_value_counts_permuted_markets_at_least_as_good_as_the_best_observed():
    grid = [SmaCross(fast=f, slow=s) for f in (3, 6) for s in (12, 24)]
    test = permutation_test(grid, random_walk(), n=30, seed=4)
    rows = raybt.run_backtests(grid, random_walk(), show_progress=False).df.set_index("strategy_id")["sharpe"]
    assert test.observed == rows.max() and test.best == rows.idxmax()
    pd.testing.assert_series_equal(test.observed_by_strategy, rows.loc[[s.id for s in grid]], check_names=False)
    assert test.p_value == (1 + np.sum(test.permuted >= test.observed)) / 31
    assert len(test.permuted) == 30 and not test.permuted.flags.writeable
    # permuted[i] is the best of the grid on permuted market i, as run_backtest computes it there
    market = permute.permuted_market(raybt.load_ohlcv(random_walk()), None, (4, 17))
    assert test.permuted[17] == max(raybt.run_backtest(s, market).metrics["sharpe"] for s in grid)
    # a metric where lower is better counts permuted values at most the observed one
    volatility = permutation_test(grid, random_walk(), n=30, seed=4, metric="volatility")
    assert volatility.observed == test.observed_by_strategy.index.map(
        raybt.run_backtests(grid, random_walk(), show_progress=False).df.set_index("strategy_id")["volatility"]
    ).min()
    assert volatility.p_value == (1 + np.sum(volatility.permuted <= volatility.observed)) / 31


def test_same_p_value_in_process_and_on_ray(ray_cluster):
    grid = [FollowsLastBar(lag=1), FollowsLastBar(lag=2), SmaCross(fast=3, slow=12)]
    local = permutation_test(grid, random_walk(), n=12, seed=9, batch_size=5)
    on_ray = permutation_test(grid, random_walk(), n=12, seed=9, batch_size=4, n_workers=-1)
    assert on_ray.p_value == local.p_value and on_ray.observed == local.observed
    np.testing.assert_array_equal(on_ray.permuted, local.permuted)


def test_a_rerun_resumes_from_the_checkpoint_and_more_permutations_compute_only_the_new_ones(tmp_path):
    grid = [FollowsLastBar(lag=1), FollowsLastBar(lag=3)]
    first = permutation_test(grid, trending_market(), n=4, seed=2, checkpoint_dir=str(tmp_path))
    assert (first.n_computed, first.n_skipped) == (2 * 5, 0)
    again = permutation_test(grid, trending_market(), n=4, seed=2, checkpoint_dir=str(tmp_path))
    assert (again.n_computed, again.n_skipped) == (0, 10) and again.p_value == first.p_value
    more = permutation_test(grid, trending_market(), n=7, seed=2, checkpoint_dir=str(tmp_path))
    assert (more.n_computed, more.n_skipped) == (2 * 3, 10)
    np.testing.assert_array_equal(more.permuted[:4], first.permuted)
    other_seed = permutation_test(grid, trending_market(), n=4, seed=3, checkpoint_dir=str(tmp_path))
    assert (other_seed.n_computed, other_seed.n_skipped) == (2 * 4, 2)  # only the real-data rows are shared
    with pytest.raises(ValueError, match="permutation test run"):
        raybt.stats.count_trials(str(tmp_path))


def test_a_sweeps_directory_is_refused(tmp_path):
    raybt.run_backtests([FollowsLastBar()], trending_market(), checkpoint_dir=str(tmp_path), show_progress=False)
    with pytest.raises(ValueError, match="directory of its own"):
        permutation_test(FollowsLastBar(), trending_market(), n=3, checkpoint_dir=str(tmp_path))
    assert raybt.stats.count_trials(str(tmp_path)).n_jobs == 1  # untouched


def test_a_job_failing_on_a_permuted_market_is_named():
    market = raybt.load_ohlcv(random_walk())
    with pytest.raises(raybt.BacktestError, match=r"permuted \(permutation 0 of seed 5\).*not the real market"):
        permutation_test(FailsWhenPermuted(real_close=float(market.close[0, -2])), market, n=3, seed=5,
                                     date_range=raybt.DateRange(None, market.index[-1]))


@pytest.mark.parametrize("arguments, problem", [
    (dict(n=0), "n \\(the number of permutations\\) must be a positive int"),
    (dict(seed=-1), "seed must be a non-negative int"),
    (dict(metric="sharp"), "unknown metric 'sharp'"),
])
def test_bad_arguments_are_named(arguments, problem):
    with pytest.raises(ValueError, match=problem):
        permutation_test(FollowsLastBar(), random_walk(), **arguments)


def test_undefined_metrics_on_permuted_markets_count_against_the_strategy():
    values = np.array([[np.nan, np.nan], [0.5, np.nan], [2.0, 1.0]])
    best = raybt.stats.permutation._best_per_row(values, "sharpe")
    np.testing.assert_array_equal(best, [np.nan, 0.5, 2.0])
    assert raybt.stats.permutation._at_least_as_good(best, 1.0, "sharpe").tolist() == [True, False, True]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raybt.stats.permutation._best_per_row(values, "volatility")  # no all-NaN RuntimeWarning


def test_a_batch_split_to_find_a_crashing_job_keeps_each_jobs_permutation():
    strategies = [FollowsLastBar(lag=k) for k in range(1, 6)]
    batch = raybt.batch.Batch(np.arange(5), strategies, [None] * 5, [None] * 5,
                              permutations=[None, (1, 0), (1, 1), (1, 2), (1, 3)])
    first, second = batch.halves()
    assert first.permutations == [None, (1, 0)] and second.permutations == [(1, 1), (1, 2), (1, 3)]
    assert [s.lag for s in second.strategies] == [3, 4, 5]


def test_a_worker_lets_go_of_permuted_markets_it_no_longer_needs():
    """A permuted copy of the data is dropped with what holds it (per-range contexts, cached indicators), so a
    worker's memory stays at about two copies however many permutations it runs."""
    for i in range(5):
        market = permute.permuted_market(TWO, RANGE, (8, i))
        raybt.run_backtest(SmaCross(fast=3, slow=10), market, RANGE)
    assert len(permute._CACHE) == 2
    assert raybt.backtest.range_context.cache_info().currsize <= 2
    assert raybt.indicators.cache_info().entries <= 2 * 2  # two averages of the last market or two


def test_real_data_jobs_keep_a_sweeps_keys_and_permuted_ones_key_their_permutation():
    market = raybt.load_ohlcv(random_walk())
    settings = raybt.plan.RunSettings(raybt.engine.CostModel(10_000, 0.001, 0.0, 0.0, "close"))
    grid = [FollowsLastBar(lag=1), FollowsLastBar(lag=2)]
    sweep = raybt.plan.plan_jobs(grid, None, market, settings)
    test = raybt.plan.plan_jobs(grid, None, market, settings, permutations=[None, (0, 0), (0, 1), (1, 0)])
    np.testing.assert_array_equal(test.keys[:2], sweep.keys)  # a sweep's rows are the test's real-data rows
    assert len(set(test.keys)) == 8 and test.permutation_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert "permuted (permutation 1 of seed 0)" in test.describe(5)
    with pytest.raises(ValueError, match="distinct"):
        raybt.plan.plan_jobs(grid, None, market, settings, permutations=[(0, 1), (0, 1)])


# ------------------------------------------------------------------------------- the rows a permutation test stores

PERMUTATION_COLUMNS = ["permutation_seed", "permutation"]


@pytest.fixture(scope="module")
def stored_test(tmp_path_factory):
    """A small permutation test in a checkpoint directory of its own: 2 strategies × (real data + 3 permutations)."""
    directory = str(tmp_path_factory.mktemp("permutation"))
    grid = [FollowsLastBar(lag=1), SmaCross(fast=3, slow=10)]
    market = raybt.load_ohlcv(random_walk(n_bars=300))
    window = raybt.DateRange(market.index[40], None, name="tail")
    permutation_test(grid, market, n=3, seed=5, date_range=window, checkpoint_dir=directory, fees=0.001)
    return directory, grid, market, window


def planned_permutations(stored_test):
    """Key -> the permutation (None: the real data) that the plan of :func:`stored_test` gave the job."""
    _, grid, market, window = stored_test
    settings = raybt.plan.RunSettings(raybt.engine.CostModel(10_000, 0.001, 0.0, 0.0, "close"))
    drawn = [None, (5, 0), (5, 1), (5, 2)]
    plan = raybt.plan.plan_jobs(grid, window, market, settings, permutations=drawn)
    return {key.decode(): drawn[p] for key, p in zip(plan.keys, plan.permutation_index)}


def test_each_stored_row_names_the_permuted_market_it_ran_on(stored_test):
    directory = stored_test[0]
    df = raybt.load_results(directory).df
    planned = planned_permutations(stored_test)
    assert set(df["key"]) == set(planned)
    for _, row in df.iterrows():
        expected = planned[row["key"]]
        if expected is None:
            assert row[PERMUTATION_COLUMNS].isna().all()
        else:
            assert (row["permutation_seed"], row["permutation"]) == expected
    assert [str(df[c].dtype) for c in PERMUTATION_COLUMNS] == ["Int64", "Int64"]  # ints, <NA> on the real data
    columns = list(df.columns)
    assert columns[columns.index("end") + 1:columns.index("end") + 3] == PERMUTATION_COLUMNS
    # rows of one permuted market show them next to the range, as the only thing telling them apart from a sweep's
    best = raybt.load_results(directory, filter=pc.field("permutation") == 0).best("sharpe", n=8)
    assert list(best.columns[best.columns.get_loc("range") + 1:][:2]) == PERMUTATION_COLUMNS
    # and they can be filtered on when reading
    real = raybt.load_results(directory, columns=["sharpe", *PERMUTATION_COLUMNS],
                              filter=pc.field("permutation").is_null()).df
    assert sorted(real["key"]) == sorted(k for k, p in planned.items() if p is None)


def test_a_summary_of_a_permutation_tests_rows_keeps_each_market_apart(stored_test):
    directory, grid, _, _ = stored_test
    df = raybt.load_results(directory).df
    summary = raybt.load_results(directory).summary()
    assert len(summary) == len(df) == 2 * 4  # one range: a line per strategy and market, not one per strategy
    assert list(summary.columns[summary.columns.get_loc("symbol") + 1:][:2]) == PERMUTATION_COLUMNS
    by_market = df.set_index(["strategy_id", *PERMUTATION_COLUMNS])
    for _, line in summary.iterrows():
        row = by_market.loc[(line["strategy_id"], line["permutation_seed"], line["permutation"])]
        assert line["n_ranges"] == 1 and line["compounded_return"] == row["total_return"]
    sweep = raybt.run_backtests(grid, random_walk(n_bars=300), show_progress=False).summary()
    assert not set(PERMUTATION_COLUMNS) & set(sweep.columns)  # a sweep's summary is as it was


# ------------------------------------ picking, ranking and testing among a permutation test's rows: never a mix

REAL_DATA = pc.field("permutation").is_null()


def real_data_alone(directory, **options):
    """The real data's rows of a permutation test's directory, read with a filter (nothing left out afterwards)."""
    return raybt.load_results(directory, filter=REAL_DATA, **options)


def real_keys_by_sharpe(directory):
    """Independently of raybt's ranking: the keys of the rows on the real data, best Sharpe ratio first."""
    df = raybt.load_results(directory).df
    real = df[df["permutation_seed"].isna() & df["permutation"].isna()]
    return real.sort_values(["sharpe", "key"], ascending=[False, True])["key"].tolist()


def test_best_and_rank_of_a_permutation_tests_rows_use_the_real_data_alone_and_say_so(stored_test):
    directory = stored_test[0]
    results = raybt.load_results(directory)
    assert len(results.df) == 8 and len(real_keys_by_sharpe(directory)) == 2
    with pytest.warns(PermutedRowsWarning, match=r"Results.best: left out 6 rows on permuted markets \(seed 5: 3 "
                                                 r"markets, 6 rows\).*used the 2 rows on the real data"):
        best = results.best("sharpe", n=8)
    assert best["key"].tolist() == real_keys_by_sharpe(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # rows all on the real data: nothing left out, nothing said
        pd.testing.assert_frame_equal(best, real_data_alone(directory).best("sharpe", n=8))
        ranked = real_data_alone(directory).rank(preset="balanced")
    with pytest.warns(PermutedRowsWarning, match="Results.rank: left out 6 rows"):
        pd.testing.assert_frame_equal(results.rank(preset="balanced"), ranked)
    # read lazily with a few columns, the permutation columns come too: the permuted rows are still told apart
    lazy = raybt.load_results(directory, columns=["sharpe", "error"])
    assert set(lazy.df.columns) == {"key", "sharpe", "error", *PERMUTATION_COLUMNS}
    with pytest.warns(PermutedRowsWarning, match="Results.best: left out 6 rows"):
        assert lazy.best("sharpe", n=8)["key"].tolist() == real_keys_by_sharpe(directory)


def test_rows_of_one_permuted_market_are_compared_as_they_are_and_rows_of_several_are_refused(stored_test):
    directory = stored_test[0]
    one = raybt.load_results(directory, filter=[("permutation_seed", "==", 5), ("permutation", "==", 1)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one market: nothing to mix, nothing to say
        best = one.best("sharpe")
    assert len(best) == 2 and (best["permutation"] == 1).all()
    several = raybt.load_results(directory, filter=pc.field("permutation").is_valid())
    with pytest.raises(ValueError, match=r"Results.rank: these 6 rows ran on 3 permuted markets of a permutation "
                                         r"test \(seed 5: 3 markets, 6 rows\) and none on the real data.*"
                                         r"permutation_seed and permutation"):
        several.rank(preset="balanced")


def test_a_verdict_among_a_permutation_tests_rows_judges_the_real_data_alone(stored_test):
    directory, grid, market, _ = stored_test
    # count_trials refuses a permutation test's directory, so the number of trials is given
    options = dict(strategy={type(s).__qualname__: type(s) for s in grid}, n_trials=2, freq=None, reps=100)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        real = real_data_alone(directory)
        expected = real.verdict(real_keys_by_sharpe(directory)[0], market, **options)
    results = raybt.load_results(directory)
    with pytest.warns(PermutedRowsWarning, match="raybt.verdict: left out 6 rows"):
        judged = results.verdict(real_keys_by_sharpe(directory)[0], market, **options)
    pd.testing.assert_frame_equal(judged.to_frame(), expected.to_frame())  # peers, candidates: the real data's
    assert judged.n_candidates == expected.n_candidates == 2
    df = results.df
    permuted = df.loc[df["permutation"] == 1, "key"].iloc[0]
    with pytest.raises(ValueError, match=rf"the row to judge: row {permuted} ran on permuted market 1 of seed 5"):
        results.verdict(permuted, market, **options)
    with pytest.raises(ValueError, match=r"candidates=: row \S+ ran on permuted market \d of seed 5 .*\(6 such"):
        with pytest.warns(PermutedRowsWarning):
            results.verdict(real_keys_by_sharpe(directory)[0], market, candidates=df, **options)


def test_the_plots_report_and_cli_top_list_of_a_permutation_tests_rows_show_the_real_data(stored_test, tmp_path,
                                                                                         capsys):
    pytest.importorskip("plotly")
    directory = stored_test[0]
    results = raybt.load_results(directory)
    with pytest.warns(PermutedRowsWarning, match="Results.plot_ranges: left out 6 rows"):
        figure = results.plot_ranges()
    assert figure.to_json() == real_data_alone(directory).plot_ranges().to_json()
    with pytest.warns(PermutedRowsWarning, match="Results.report: left out 6 rows"):
        page = results.report(tmp_path / "report.html").read_text()
    assert sorted(re.findall(r'data-key="([^"]+)"', page)) == sorted(real_keys_by_sharpe(directory))
    with pytest.warns(PermutedRowsWarning, match="raybt results: left out 6 rows"):
        assert main(["results", directory, "--top", "8"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "2 backtests" in out and "top 2 by sharpe" in out


def test_the_plot_and_report_functions_called_on_a_permutation_tests_rows_show_the_real_data(stored_test):
    pytest.importorskip("plotly")
    from raybt import plots, report
    directory = stored_test[0]
    mixed, real = raybt.load_results(directory).df, real_data_alone(directory).df
    assert len(mixed) == len(real) + 6
    for name, draw in (("plot_ranges", lambda df: plots.plot_ranges(df).to_json()),
                       ("ranges_table", lambda df: plots.ranges_table(df).to_json()),
                       ("plot_distribution", lambda df: plots.plot_distribution(df).to_json()),
                       ("plot_parallel", lambda df: plots.plot_parallel(df).to_json())):
        with pytest.warns(PermutedRowsWarning, match=f"raybt.plots.{name}: left out 6 rows"):
            drawn = draw(mixed)
        assert drawn == draw(real), name
    with pytest.warns(PermutedRowsWarning, match="raybt.report: left out 6 rows"):
        page = report.render_report(mixed)
    assert sorted(re.findall(r'data-key="([^"]+)"', page)) == sorted(real["key"])


def test_an_ordinary_sweeps_rows_are_picked_as_before_without_a_word(tmp_path):
    grid = [FollowsLastBar(lag=1), FollowsLastBar(lag=2), SmaCross(fast=3, slow=10)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = raybt.run_backtests(grid, random_walk(n_bars=300), checkpoint_dir=str(tmp_path),
                                      show_progress=False)
        df = results.df
        expected = df.sort_values(["sharpe", "key"], ascending=[False, True])["key"].tolist()
        assert results.best("sharpe", n=3)["key"].tolist() == expected
        lazy = raybt.load_results(str(tmp_path), columns=["sharpe", "error"])
        assert list(lazy.df.columns) == ["key", "sharpe", "error"]  # no columns added to a sweep's rows
        assert lazy.best("sharpe", n=3)["key"].tolist() == expected
        assert len(results.rank(preset="balanced")) == 3


def test_a_permuted_row_replays_on_its_permuted_market(stored_test):
    directory, grid, market, window = stored_test
    results = raybt.load_results(directory)
    df = results.df
    classes = {type(s).__qualname__: type(s) for s in grid}
    planned = planned_permutations(stored_test)  # (not the new columns: this test also runs on older code)
    on = df["key"].map(planned)
    row = df[(on == (5, 1)) & (df["strategy"] == "SmaCross")].iloc[0]
    replayed = results.backtest(row, market, classes)  # its metrics are checked bit for bit against the row
    permuted = permute.permuted_market(market, window, (5, 1))
    expected = raybt.run_backtest(SmaCross(fast=3, slow=10), permuted, window, fees=0.001)
    assert replayed.metrics == expected.metrics and replayed.metrics["sharpe"] == row["sharpe"]
    pd.testing.assert_series_equal(replayed.equity, expected.equity)
    np.testing.assert_array_equal(replayed.prices.to_numpy()[:, 0], permuted.close[0, -len(replayed.prices):])
    real = df[on.isna() & (df["strategy"] == "SmaCross")].iloc[0]
    assert results.backtest(real, market, classes).metrics["sharpe"] == real["sharpe"]
    assert real["sharpe"] != row["sharpe"]
    returns = results.returns(df, market, strategy=classes)  # every row, the permuted ones each on its own market
    for _, each in df.iterrows():
        equity = results.backtest(each, market, classes).equity
        np.testing.assert_array_equal(returns[each["key"]].to_numpy(),
                                      raybt.results.bar_returns(equity, 10_000).to_numpy())


def test_a_row_naming_half_a_permutation_is_refused(stored_test):
    directory, grid, market, _ = stored_test
    row = raybt.load_results(directory).df.dropna(subset=["permutation"]).iloc[0].copy()
    row["permutation"] = pd.NA
    with pytest.raises(ValueError, match=r"permutation_seed=5 but no permutation"):
        raybt.results.row_inputs(row)


def test_an_ordinary_sweeps_rows_and_a_part_written_before_the_permutation_columns_read_as_today(tmp_path):
    grid = [FollowsLastBar(lag=1), FollowsLastBar(lag=2), SmaCross(fast=3, slow=10)]
    sweep = functools.partial(raybt.run_backtests, grid, random_walk(), show_progress=False,
                              checkpoint_dir=str(tmp_path), checkpoint_batch_size=2, batch_size=1)
    new = sweep().df
    assert new[PERMUTATION_COLUMNS].isna().all().all()
    parts = sorted((tmp_path / "parts").glob("part-*.parquet"))
    assert len(parts) == 2
    old = pq.read_table(parts[0]).drop_columns(PERMUTATION_COLUMNS)  # as raybt wrote parts before the columns
    pq.write_table(old, parts[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old part is not set aside
        loaded = raybt.load_results(str(tmp_path))
        pd.testing.assert_frame_equal(loaded.df.drop(columns=["duration_s", "worker"]),
                                      new.drop(columns=["duration_s", "worker"]), check_exact=True)
        scanned = raybt.load_results(str(tmp_path), filter=[("n_trades", ">=", 0)]).df  # the lazy reader too
        assert list(scanned.columns) == list(new.columns) and scanned[PERMUTATION_COLUMNS].isna().all().all()
        again = sweep()
    assert (again.n_computed, again.n_skipped) == (0, 3)  # resumed: the old part's rows count as done
    assert pq.read_schema(parts[0]).names == old.column_names  # and it was left as it was
    pq.write_table(pq.read_table(parts[1]).drop_columns(PERMUTATION_COLUMNS), parts[1])
    only_old = raybt.load_results(str(tmp_path)).df  # no part has the columns: they are there all the same
    assert list(only_old.columns) == list(new.columns) and only_old[PERMUTATION_COLUMNS].isna().all().all()
    with pytest.raises(TypeError, match="collides with a result column"):
        type("Shuffled", (raybt.Strategy,), {"__annotations__": {"permutation": int}, "permutation": 0,
                                              "signals": FollowsLastBar.signals})
