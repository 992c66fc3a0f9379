"""Plotly figures (raybt.plots): their data equal values computed here from the rows, blank cells included."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt import indicators, plots
from raybt.demo import SmaCross

pytest.importorskip("plotly", reason="the plots need the plot extra: pip install 'raybt[plot]'")

DATA = raybt.synthetic_ohlcv(symbols=["A", "B"], start="2022-01-01", end="2023-01-01", freq="1D", seed=1)
RANGES = [raybt.DateRange("2022-07-01", "2023-01-01", name="H2"),  # listed out of order: plots sort by start
          raybt.DateRange("2022-01-01", "2022-07-01", name="H1")]


class Cross(raybt.Strategy):
    """SMA cross whose entry may need the fast average ``band`` above the slow one (None: no band)."""

    fast: int = 5
    slow: int = 20
    band: float | None = None

    def signals(self, data):
        fast = indicators.sma(data.close, self.fast)
        slow = indicators.sma(data.close, self.slow)
        return indicators.crossed_above(fast, slow * (1 + (self.band or 0.0))), indicators.crossed_below(fast, slow)


GRID = [Cross(fast=f, slow=s, band=b) for f in (2, 5, 10, 40) for s in (20, 30, 150, 400) for b in (None, 0.01)]
"""slow=400 is longer than a range: no trade, NaN Sharpe for every fast value (a whole heatmap row blank)."""


@pytest.fixture(scope="module")
def df():
    return raybt.run_backtests(GRID, DATA, RANGES, fees=0.001, show_progress=False).df


def cell_median(rows: pd.DataFrame, metric: str) -> float:
    values = rows[metric].dropna()
    return float(np.median(values)) if len(values) else np.nan


def test_heatmap_cells_equal_a_pivot_built_here_blank_cells_included(df):
    fig = plots.plot_heatmap(df, "fast", "slow", "sharpe")
    heatmap = fig.data[0]
    xs, ys = [2, 5, 10, 40], [20, 30, 150, 400]
    expected = np.array([[cell_median(df[(df["fast"] == x) & (df["slow"] == y)], "sharpe") for x in xs] for y in ys])
    rows = np.array([[len(df[(df["fast"] == x) & (df["slow"] == y)]) for x in xs] for y in ys])
    with_value = np.array([[df[(df["fast"] == x) & (df["slow"] == y)]["sharpe"].notna().sum() for x in xs]
                           for y in ys])
    assert list(heatmap.x) == xs and list(heatmap.y) == ys
    np.testing.assert_array_equal(np.asarray(heatmap.z, dtype=float), expected)  # NaN where expected is NaN
    assert np.isnan(expected[-1]).all() and np.isfinite(expected).any()  # a blank row (slow=400), and values
    np.testing.assert_array_equal(np.asarray(heatmap.customdata)[:, :, 0], rows)
    np.testing.assert_array_equal(np.asarray(heatmap.customdata)[:, :, 1], with_value)
    assert ((with_value > 0) & (with_value < rows)).any()  # a cell that aggregates values and NaNs
    assert "rows: %{customdata[0]}" in heatmap.hovertemplate and "median" in fig.layout.title.text
    assert fig.layout.xaxis.type == "category" and fig.layout.yaxis.type == "category"


def test_heatmap_of_one_range_other_aggregates_and_a_none_parameter(df):
    h1 = df[df["range"] == "H1"]
    fig = plots.plot_heatmap(df, "band", "fast", "total_return", agg="max", date_range=RANGES[1])
    bands = [0.01, "None"]  # values ascending, None last
    expected = [[h1[(h1["fast"] == f) & (h1["band"].isna() if b == "None" else h1["band"] == b)]["total_return"].max()
                 for b in bands] for f in (2, 5, 10, 40)]
    assert list(fig.data[0].x) == bands
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), np.array(expected, dtype=float))
    assert "range H1" in fig.layout.title.text
    by_name = plots.plot_heatmap(df, "band", "fast", "total_return", agg="max", date_range="H1")
    np.testing.assert_array_equal(by_name.data[0].z, fig.data[0].z)


def test_heatmap_uses_only_strategies_having_both_parameters_and_says_how_many_rows_it_left_out(df):
    other = raybt.run_backtests([SmaCross(fast=5, slow=20), SmaCross(fast=7, slow=20)], DATA, RANGES,
                                show_progress=False).df
    both = pd.concat([df, other], ignore_index=True)
    fig = plots.plot_heatmap(both, "band", "fast")
    assert list(fig.data[0].y) == [2, 5, 10, 40]  # fast=7 is only in SmaCross rows, which have no band
    np.testing.assert_array_equal(fig.data[0].z, plots.plot_heatmap(df, "band", "fast").data[0].z)
    assert f"{len(other)} rows of strategies without band and fast left out" in fig.layout.title.text
    assert 7 in list(plots.plot_heatmap(both, "fast", "slow").data[0].x)  # both classes have fast and slow


@pytest.mark.parametrize("arguments, error, message", [
    (("fast", "nope"), KeyError, "unknown parameter 'nope'"),
    (("fast", "slow", "nope"), KeyError, "unknown metric 'nope'"),
    (("fast", "fast"), ValueError, "two different parameters"),
    (("fast", "slow", "sharpe", "mode"), ValueError, "unknown agg 'mode'"),
    (("fast", "slow", "sharpe", "median", "2030"), ValueError, "no rows for date range '2030'"),
])
def test_heatmap_errors_name_the_problem(df, arguments, error, message):
    with pytest.raises(error, match=message):
        plots.plot_heatmap(df, *arguments)


def test_distribution_counts_every_finite_value_per_range_in_chronological_order_and_counts_the_rest(df):
    fig = plots.plot_distribution(df, "sharpe")
    assert [trace.name for trace in fig.data] == ["H1", "H2"]
    finite = df.loc[np.isfinite(df["sharpe"])]
    for trace in fig.data:
        bins = np.asarray(trace.customdata)  # each bar's [low, high)
        assert bins[0, 0] == finite["sharpe"].min() and bins[-1, 1] == finite["sharpe"].max()
        np.testing.assert_array_equal(bins[1:, 0], bins[:-1, 1])  # adjacent
        values = finite.loc[finite["range"] == trace.name, "sharpe"].to_numpy()
        expected = [int(((values >= low) & ((values < high) | (last and values == high))).sum())
                    for (low, high), last in zip(bins, [False] * (len(bins) - 1) + [True])]
        assert list(trace.y) == expected and sum(expected) == len(values)
    assert f"({df['sharpe'].isna().sum()} NaN not shown)" in fig.layout.title.text


def test_distribution_of_many_rows_stays_small():
    """The bars are counted in Python: 200,000 rows make a figure of at most MAX_HISTOGRAM_BINS bars per range,
    not one value per row, even for a heavy-tailed metric."""
    values = np.random.default_rng(0).standard_cauchy(200_000)
    rows = pd.DataFrame({"range": np.repeat(["a", "b"], 100_000), "range_start": pd.NaT, "sharpe": values,
                         "strategy_id": "x", "error": None})
    fig = plots.plot_distribution(rows, "sharpe")
    assert [len(trace.y) for trace in fig.data] == [plots.MAX_HISTOGRAM_BINS] * 2
    assert sum(int(sum(trace.y)) for trace in fig.data) == 200_000
    assert len(fig.to_json()) < 100_000


def test_histogram_bins_follow_numpys_auto_rule_up_to_the_cap():
    rng = np.random.default_rng(1)
    for values in (rng.normal(size=1_000), rng.uniform(size=50), np.array([2.0]), np.array([1.0, 1.0, 1.0, 2.0])):
        np.testing.assert_array_equal(plots.histogram_bin_edges(values), np.histogram_bin_edges(values, "auto"))
    heavy = rng.standard_cauchy(100_000)
    assert len(np.histogram_bin_edges(heavy, "auto")) - 1 > plots.MAX_HISTOGRAM_BINS
    edges = plots.histogram_bin_edges(heavy)
    assert len(edges) - 1 == plots.MAX_HISTOGRAM_BINS and (edges[0], edges[-1]) == (heavy.min(), heavy.max())


def test_ranges_show_the_top_strategies_by_mean_with_their_value_in_each_range(df):
    fig = plots.plot_ranges(df, "total_return", top=5)
    means = {}
    for _, rows in df.groupby("strategy_id"):
        by_range = rows.set_index("range")["total_return"]
        means[rows["parameters"].iloc[0]] = (by_range.mean(), [by_range.get("H1"), by_range.get("H2")])
    best = sorted(means.items(), key=lambda item: -item[1][0])[:5]
    assert list(fig.data[0].x) == ["H1", "H2"]
    np.testing.assert_array_equal(np.asarray(fig.data[0].z, dtype=float), np.array([v[1] for _, v in best]))
    labels = [f"Cross {' '.join(f'{k}={v}' for k, v in json.loads(p).items())}" for p, _ in best]
    assert list(fig.data[0].y) == labels  # e.g. "Cross band=None fast=2 slow=30"


def test_parallel_coordinates_have_every_swept_parameter_and_the_metric(df):
    fig = plots.plot_parallel(df, "sharpe")
    shown = df[np.isfinite(df["sharpe"])]
    dimensions = fig.data[0].dimensions
    assert [d.label for d in dimensions] == ["fast", "slow", "band", "sharpe"]
    np.testing.assert_array_equal(dimensions[0].values, shown["fast"])
    np.testing.assert_array_equal(dimensions[3].values, shown["sharpe"])
    assert list(dimensions[2].ticktext) == ["0.01", "None"]
    np.testing.assert_array_equal(dimensions[2].values, np.where(shown["band"].isna(), 1, 0))
    assert f"({len(df) - len(shown)} rows without a finite sharpe not shown)" in fig.layout.title.text
    best = plots.plot_parallel(df, "sharpe", max_rows=5)
    np.testing.assert_array_equal(best.data[0].dimensions[3].values, np.sort(shown["sharpe"])[::-1][:5])
    assert f"only the best 5 of {len(shown)} by sharpe" in best.layout.title.text


def test_backtest_plot_shows_each_symbols_price_trades_equity_drawdown_and_a_trade_table():
    bt = raybt.run_backtest(Cross(fast=5, slow=20), DATA, RANGES[1], fees=0.001)
    fig = bt.plot()
    by_name = {trace.name: trace for trace in fig.data}
    for symbol in ("A", "B"):
        close = DATA[symbol]["close"].loc["2022-01-01":"2022-06-30"]
        np.testing.assert_array_equal(by_name[f"{symbol} close"].y, close.to_numpy())
        trades = bt.trades[bt.trades["symbol"] == symbol]
        assert len(trades)
        entries = by_name[f"{symbol} long entry"]
        assert list(pd.to_datetime(entries.x, utc=True)) == list(trades["entry_time"])
        np.testing.assert_array_equal(entries.y, trades["entry_price"])
        closed = trades[trades["exit_reason"] != "open_at_end"]
        np.testing.assert_array_equal(by_name[f"{symbol} exit"].y, closed["exit_price"])
    np.testing.assert_array_equal(by_name["equity"].y, bt.equity.to_numpy())
    peak = np.maximum.accumulate(bt.equity.to_numpy())
    np.testing.assert_allclose(by_name["drawdown"].y, bt.equity.to_numpy() / peak - 1)
    assert min(by_name["drawdown"].y) == pytest.approx(bt.metrics["max_drawdown"])
    table = fig.data[-1]
    assert list(table.header.values) == list(bt.trades.columns) and len(table.cells.values[0]) == len(bt.trades)
    with pytest.raises(KeyError, match="unknown symbol"):
        bt.plot(symbols=["C"])


def test_plot_equity_overlays_equity_and_drawdown_of_each_backtest():
    backtests = [raybt.run_backtest(Cross(fast=f, slow=20), DATA, RANGES[1]) for f in (2, 5)]
    fig = raybt.plot_equity(backtests)
    assert len(fig.data) == 4
    assert [t.name for t in fig.data] == ["Cross fast=2 slow=20 band=None · H1"] * 2 + [
        "Cross fast=5 slow=20 band=None · H1"] * 2
    for bt, equity, drawdown in zip(backtests, fig.data[0::2], fig.data[1::2]):
        np.testing.assert_array_equal(equity.y, bt.equity)
        np.testing.assert_allclose(drawdown.y, bt.equity / bt.equity.cummax() - 1)
    with pytest.raises(ValueError, match="at least one"):
        raybt.plot_equity([])


def test_results_methods_plot_their_rows(df):
    results = raybt.run_backtests(GRID[:6], DATA, RANGES, fees=0.001, show_progress=False)
    np.testing.assert_array_equal(results.plot_heatmap("band", "slow").data[0].z,
                                  plots.plot_heatmap(results.df, "band", "slow").data[0].z)
    assert results.plot_distribution("cagr").layout.title.text.startswith("Distribution of cagr over 12 rows")
    assert len(results.plot_ranges("sharpe", top=3).data[0].y) == 3
    assert [d.label for d in results.plot_parallel().data[0].dimensions] == ["slow", "band", "sharpe"]


def test_raybt_imports_without_plotly_and_a_plot_says_what_to_install():
    code = ("import sys; sys.modules['plotly'] = None\n"  # what an environment without plotly looks like
            "import raybt\n"
            "try:\n    raybt.plot_equity([])\nexcept ImportError as exc:\n    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'raybt[plot]'" in out
