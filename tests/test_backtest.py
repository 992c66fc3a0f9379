"""``raybt.backtest``: the metrics the simulation kernel computes as it goes (a sweep stores no equity curve), checked
against pandas references computed here from the equity curve and trades ``run_backtest`` returns, and the sweep
path (reused workspace, learnt tail limits) against ``run_backtest`` and ``compute_metrics``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt import _records as rec
from raybt import metrics as m
from raybt.backtest import evaluate, range_context
from raybt.engine import CostModel, Workspace, simulate
from raybt.strategy import signal_arrays

from test_metrics import HOURS_PER_YEAR, ref_equity_metrics, ref_returns, ref_trade_metrics

pytestmark = pytest.mark.filterwarnings("error")


class RandomSignals(raybt.Strategy):
    """Entries and exits on random bars, ``density`` of the bars each, for every symbol."""

    density: float = 0.01
    seed: int = 0
    size: float = 1.0
    direction: str = "long"
    stop_loss: float | None = None
    trailing_stop: float | None = None
    take_profit: float | None = None
    warmup: int = 0

    def signals(self, data):
        rng = np.random.default_rng(self.seed)
        shape = data.arrays.close.shape
        return rng.random(shape) < self.density, rng.random(shape) < self.density


class RareEntries(raybt.Strategy):
    """In the market ``hold`` bars in every 997: var_95 comes out of the zero returns of the flat stretches."""

    hold: int = 3

    def signals(self, data):
        n_bars, n_symbols = data.arrays.close.shape
        entries = np.zeros((n_bars, n_symbols), dtype=bool)
        exits = np.zeros((n_bars, n_symbols), dtype=bool)
        entries[::997] = True
        exits[self.hold :: 997] = True
        return entries, exits


STRATEGIES = [
    RandomSignals(density=0.01, seed=1),
    RandomSignals(density=0.05, seed=2, size=0.5, direction="both"),
    RandomSignals(density=0.002, seed=3, direction="short", stop_loss=0.02, take_profit=0.05),
    RandomSignals(density=0.02, seed=4, trailing_stop=0.01),
    RandomSignals(density=0.0005, seed=5),  # long stretches, flat and in the market
    RareEntries(hold=3),
    RareEntries(hold=40),
]
INITIAL = 10_000.0


@pytest.fixture(scope="module")
def hourly() -> raybt.MarketData:
    return raybt.load_ohlcv(raybt.synthetic_ohlcv(["BTC"], "2022-01-01", "2024-01-01", "1h", seed=11))


@pytest.fixture(scope="module")
def two_symbols() -> raybt.MarketData:
    return raybt.load_ohlcv(raybt.synthetic_ohlcv(["BTC", "ETH"], "2022-06-01", "2023-03-01", "1h", seed=12))


def trade_records(bt: raybt.Backtest) -> np.ndarray:
    """Kernel-layout trade records rebuilt from a Backtest's trades frame (the fields the trade metrics read)."""
    t, index = bt.trades, bt.equity.index
    records = np.zeros((len(t), rec.N_TRADE_FIELDS))
    records[:, rec.ENTRY_BAR] = index.get_indexer(t["entry_time"])
    records[:, rec.EXIT_BAR] = index.get_indexer(t["exit_time"])
    records[:, rec.PNL] = t["pnl"]
    records[:, rec.RETURN] = t["return"]
    records[:, rec.FEES] = t["fees"]
    return records


def bars_in_market(bt: raybt.Backtest) -> int:
    """Bars with a position open at the close: each trade holds from its entry bar to the bar before its exit (to
    the last bar if still open), positions of several symbols counted once."""
    index = bt.equity.index
    held = np.zeros(len(index), dtype=bool)
    for trade in bt.trades.itertuples():
        end = len(index) if trade.exit_reason == "open_at_end" else index.get_loc(trade.exit_time)
        held[index.get_loc(trade.entry_time) : end] = True
    return int(held.sum())


def assert_matches_references(bt: raybt.Backtest, rf: float) -> None:
    equity = bt.equity.to_numpy()
    expected = ref_equity_metrics(equity, bars_in_market(bt), INITIAL, bt.equity.index, HOURS_PER_YEAR, rf)
    for name, value in expected.items():
        assert bt.metrics[name] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (bt.strategy, name)
    assert bt.metrics["var_95"] == np.percentile(ref_returns(equity, INITIAL).to_numpy(), 5)  # same order statistic
    pnl = bt.trades["pnl"]
    if (pnl > 0).any() and (pnl < 0).any():  # the reference's formulas need both
        for name, value in ref_trade_metrics(trade_records(bt), bt.equity.index, HOURS_PER_YEAR).items():
            assert bt.metrics[name] == pytest.approx(value, rel=1e-9), (bt.strategy, name)


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("rf", [0.0, 0.03])
def test_run_backtest_metrics_match_pandas_references(hourly: raybt.MarketData, fill: str, rf: float) -> None:
    """run_backtest's metrics, computed in the kernel as it values the equity, against pandas on the equity curve
    and trades it returns: moments, drawdown, var/cvar (also where the zero returns of flat stretches hold the
    quantile), months and years, exposure and the trade metrics."""
    for strategy in STRATEGIES:
        bt = raybt.run_backtest(strategy, hourly, initial_amount=INITIAL, fees=0.001, fill=fill, risk_free_rate=rf)
        assert_matches_references(bt, rf)


def test_two_symbols_and_a_range_with_warmup(two_symbols: raybt.MarketData) -> None:
    """The kernel specialised for any symbol count, on a date range whose signals start in a warm-up window."""
    date_range = raybt.DateRange("2022-09-01", "2023-02-01")
    for strategy in STRATEGIES[:5]:
        bt = raybt.run_backtest(RandomSignals(**{**strategy.params, "warmup": 50}), two_symbols, date_range,
                                initial_amount=INITIAL, fees=0.001)
        assert bt.equity.index[0] == pd.Timestamp("2022-09-01", tz="UTC")
        assert_matches_references(bt, 0.0)


@pytest.mark.parametrize("data", ["hourly", "two_symbols"])
def test_sweep_rows_equal_run_backtest_and_compute_metrics(data: str, request: pytest.FixtureRequest) -> None:
    """A sweep's rows (one workspace, no curve stored, tail limits learnt from the previous backtests, hence some
    exact reruns: strategies alternate between fat and thin tails) equal run_backtest's metrics, and those equal
    compute_metrics on run_backtest's curve, to rounding (var_95 exactly)."""
    market = request.getfixturevalue(data)
    costs = CostModel(INITIAL, fees=0.001)
    workspace = Workspace()
    order = STRATEGIES + STRATEGIES[::-1] + STRATEGIES[1::2]
    for strategy in order:
        row, sim, ctx = evaluate(strategy, market, None, costs, workspace=workspace)
        assert sim.equity.size == 0  # not stored
        bt = raybt.run_backtest(strategy, market, initial_amount=INITIAL, fees=0.001)
        by_curve = m.compute_metrics(bt.equity.to_numpy(), sim.trades, round(bt.metrics["exposure"] * len(bt.equity)),
                                     initial_amount=INITIAL, calendar=ctx.calendar,
                                     unfunded_entries=sim.unfunded_entries)
        for name, value in zip(m.METRIC_NAMES, row):
            assert value == pytest.approx(bt.metrics[name], rel=1e-12, abs=1e-15, nan_ok=True), (strategy, name)
            assert value == pytest.approx(by_curve[name], rel=1e-12, abs=1e-15, nan_ok=True), (strategy, name)
        assert row[m.METRIC_NAMES.index("var_95")] == bt.metrics["var_95"] == by_curve["var_95"]


def test_a_scan_serves_one_simulation(hourly: raybt.MarketData) -> None:
    """The scan's tail has room for one run's returns: a second simulation without begin() is refused, as is a
    simulation of another length, or one that would keep nothing."""
    ctx = range_context(hourly, None, 0, None)
    entries, exits = signal_arrays(STRATEGIES[0], ctx.view)
    costs = CostModel(INITIAL)
    args = (hourly.open, hourly.high, hourly.low, hourly.close, entries, exits, costs)
    scan = m.CurveScan()
    scan.begin(ctx.calendar, INITIAL)
    simulate(*args, scan=scan, keep_curve=False)
    with pytest.raises(ValueError, match="begun"):
        simulate(*args, scan=scan, keep_curve=False)
    scan.begin(ctx.calendar, INITIAL)
    with pytest.raises(ValueError, match="begun for"):
        simulate(*args, n_bars=len(ctx.calendar.times_ns) - 1, scan=scan)
    with pytest.raises(ValueError, match="keep_curve=False needs a scan"):
        simulate(*args, keep_curve=False)
