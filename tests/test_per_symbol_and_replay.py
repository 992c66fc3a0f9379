"""Per-symbol sweeps, shared-cash portfolios end to end, and result rows that replay exactly.

Each symbol of a per-symbol sweep must give exactly what ``run_backtest`` gives on that symbol's data loaded alone;
each stored row must carry what it takes to run its job again (parameters as given, the range as defined, the
symbol) and give the same metrics, bit for bit.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt.data import DateRangeWarning
from raybt.metrics import METRIC_NAMES
from raybt.results import row_inputs


class Momentum(raybt.Strategy):
    """Long after ``n`` rising closes; an optional stop loss (None = off) swept as a parameter."""

    n: int = 3
    stop_loss: float | None = None

    def signals(self, data):
        close = data.arrays.close
        rising = np.zeros(close.shape, dtype=bool)
        up = close[1:] > close[:-1]
        run = np.ones(close[1:].shape, dtype=bool)
        for k in range(self.n):
            run[k:] &= up[: len(up) - k]
            run[:k] = False
        rising[1:] = run
        falling = np.zeros(close.shape, dtype=bool)
        falling[1:] = close[1:] < close[:-1]
        return rising, falling


class Rotation(raybt.Strategy):
    """Holds the first symbol in even months and the second in odd months: on each month's first bar one symbol
    is sold and the other bought with the proceeds."""

    def signals(self, data):
        month = data.close.index.month.to_numpy()
        first_bar = np.r_[True, month[1:] != month[:-1]]
        even = month % 2 == 0
        first = first_bar & even
        second = first_bar & ~even
        entries = pd.DataFrame({data.symbols[0]: first, data.symbols[1]: second}, index=data.close.index)
        exits = pd.DataFrame({data.symbols[0]: second, data.symbols[1]: first}, index=data.close.index)
        return entries, exits


def _frames(market):
    """Each symbol's own OHLCV frame (the bars it has), as a user would load it alone."""
    return {s: market[s].dropna(subset=["open"]) for s in market.symbols}


@pytest.fixture(scope="module")
def market():
    """Three symbols; C starts a month late and has a gap: per-symbol data is each symbol's own bars."""
    frames = _frames(raybt.synthetic_ohlcv(["A", "B", "C"], "2023-01-01", "2023-05-01", "1h", seed=3))
    c = frames["C"]
    frames["C"] = c[(c.index >= "2023-02-01") & ~((c.index >= "2023-03-10") & (c.index < "2023-03-12"))]
    return raybt.load_ohlcv(frames)


RANGES = [raybt.DateRange("2023-01-01", "2023-03-01", name="early"),
          raybt.DateRange("2023-03-01", "2023-06-01", name="late")]  # ends a month past the data
GRID = [Momentum(n=n, stop_loss=sl) for n in (2, 3, 5) for sl in (None, 0.003)]
COSTS = dict(fees=0.001, fixed_fee=0.5, initial_amount=10_000)


def _same_metrics(row, metrics):
    for name in METRIC_NAMES:
        a, b = row[name], metrics[name]
        assert a == b or (np.isnan(a) and np.isnan(b)), (name, a, b)


# ------------------------------------------------------------------------------------------ shared-cash portfolio

@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("order", [("X", "Y"), ("Y", "X")])
def test_monthly_rotation_alternates_between_the_symbols(fill, order):
    # Six months, daily bars: the rotation makes 6 trades alternating X, Y, X, ... (Y in January, an odd month),
    # in either symbol order and fill mode. Before "exits before entries" it made 3 trades, all in one symbol.
    frames = _frames(raybt.synthetic_ohlcv(["X", "Y"], "2023-01-01", "2023-07-01", "1D", seed=8))
    data = {symbol: frames[symbol] for symbol in order}
    bt = raybt.run_backtest(Rotation(), data, fill=fill, fees=0.001)
    second = order[1]
    expected = [second if m % 2 else order[0] for m in range(1, 7)]
    assert list(bt.trades["symbol"]) == expected
    assert bt.metrics["n_unfunded_entries"] == 0
    assert list(bt.trades["exit_reason"]) == ["signal"] * 5 + ["open_at_end"]


def test_portfolio_counts_unfunded_entries():
    # size 1 on three symbols with an entry for each on the same bar: the first takes all the cash, the others
    # are counted as unfunded (the old engine dropped them without a word).
    class AllAtOnce(raybt.Strategy):
        def signals(self, data):
            entries = np.zeros(data.arrays.close.shape, dtype=bool)
            entries[5] = True
            return entries, np.zeros_like(entries)

    data = raybt.synthetic_ohlcv(["A", "B", "C"], "2023-01-01", "2023-02-01", "1D", seed=1)
    bt = raybt.run_backtest(AllAtOnce(), data)
    assert list(bt.trades["symbol"]) == ["A"]
    assert bt.metrics["n_unfunded_entries"] == 2.0
    row = raybt.run_backtests([AllAtOnce()], data, show_progress=False).df.iloc[0]
    assert row["n_unfunded_entries"] == 2.0


# ------------------------------------------------------------------------------------------------ per-symbol sweeps

def _per_symbol_sweep(market, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DateRangeWarning)
        return raybt.run_backtests(GRID, market, RANGES, per_symbol=True, show_progress=False, batch_size=4,
                                   checkpoint_batch_size=7, **COSTS, **options)


def test_per_symbol_rows_equal_run_backtest_on_each_symbol_alone(market):
    df = _per_symbol_sweep(market).df
    assert len(df) == len(GRID) * len(RANGES) * 3 and df["key"].is_unique
    assert set(df["symbol"]) == {"A", "B", "C"} and df["error"].isna().all()
    alone = {s: raybt.load_ohlcv({s: f}) for s, f in _frames(market).items()}
    for _, row in df.iterrows():
        strategy = Momentum(n=int(row["n"]), stop_loss=None if pd.isna(row["stop_loss"]) else row["stop_loss"])
        date_range = RANGES[0] if row["range"] == "early" else RANGES[1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DateRangeWarning)
            single = raybt.run_backtest(strategy, alone[row["symbol"]], date_range, **COSTS)
            by_name = raybt.run_backtest(strategy, market, date_range, symbol=row["symbol"], **COSTS)
        _same_metrics(row, single.metrics)
        _same_metrics(row, by_name.metrics)
        assert set(single.trades["symbol"]) <= {row["symbol"]}
        assert row["start"] == single.equity.index[0] and row["end"] == single.equity.index[-1]
    c_early = df[(df["symbol"] == "C") & (df["range"] == "early")]
    assert (c_early["start"] == pd.Timestamp("2023-02-01", tz="UTC")).all()  # C's own first bar


def test_per_symbol_on_ray_equals_in_process(ray_cluster, market):
    local = _per_symbol_sweep(market).df
    remote = _per_symbol_sweep(market, n_workers=-1).df
    columns = [c for c in local.columns if c not in ("duration_s", "worker")]
    pd.testing.assert_frame_equal(local.sort_values("key")[columns].reset_index(drop=True),
                                  remote.sort_values("key")[columns].reset_index(drop=True), check_exact=True)


def test_per_symbol_resume_recomputes_only_the_missing_symbols_jobs(market, tmp_path):
    first = _per_symbol_sweep(market, checkpoint_dir=tmp_path)
    parts = sorted((tmp_path / "parts").glob("part-*.parquet"))
    lost = pd.read_parquet(parts[1])
    parts[1].unlink()
    again = _per_symbol_sweep(market, checkpoint_dir=tmp_path)
    assert again.n_computed == len(lost) and again.n_skipped == len(first) - len(lost)
    columns = [c for c in first.df.columns if c not in ("duration_s", "worker")]
    pd.testing.assert_frame_equal(first.df.sort_values("key")[columns].reset_index(drop=True),
                                  again.df.sort_values("key")[columns].reset_index(drop=True), check_exact=True)


def test_a_symbol_without_bars_in_a_range_is_an_error_row_naming_both(market):
    january = raybt.DateRange("2023-01-01", "2023-02-01", name="january")  # C starts in February
    with pytest.warns(raybt.FailedBacktestsWarning):
        df = raybt.run_backtests(GRID[:1], market, january, per_symbol=True, show_progress=False,
                                 continue_on_error=True).df
    failed = df[df["error"].notna()]
    assert list(failed["symbol"]) == ["C"]
    assert "date range 'january' selects no bars" in failed["error"].iloc[0]
    assert failed["start"].isna().all()
    with pytest.raises(raybt.BacktestError, match=r"on range 'january' of symbol 'C'"):
        raybt.run_backtests(GRID[:1], market, january, per_symbol=True, show_progress=False)


def test_per_symbol_is_a_bool_and_portfolio_stays_the_default(market):
    with pytest.raises(TypeError, match="per_symbol must be True or False"):
        raybt.run_backtests(GRID[:1], market, per_symbol="yes", show_progress=False)
    df = raybt.run_backtests(GRID[:1], market, show_progress=False).df
    assert len(df) == 1 and df["symbol"].isna().all()
    with pytest.raises(KeyError, match=r"unknown symbol 'Z'; the data has \['A', 'B', 'C'\]"):
        raybt.run_backtest(GRID[0], market, symbol="Z")


# ---------------------------------------------------------------------------------------------- rows that replay

def test_rows_replay_from_the_checkpoint_directory_bit_for_bit(market, tmp_path):
    # Parameters (an int, a None), the range as defined (one ending a month past the data) and the symbol are read
    # back from the stored rows only, in a per-symbol and a portfolio sweep.
    _per_symbol_sweep(market, checkpoint_dir=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DateRangeWarning)
        raybt.run_backtests(GRID, market, RANGES, show_progress=False, checkpoint_dir=tmp_path, **COSTS)
    stored = raybt.load_results(str(tmp_path)).df
    assert len(stored) == len(GRID) * len(RANGES) * 4
    assert set(stored["symbol"].dropna()) == {"A", "B", "C"} and stored["symbol"].isna().sum() == len(GRID) * 2
    for _, row in stored.iterrows():
        inputs = row_inputs(row)
        assert type(inputs.parameters["n"]) is int
        assert inputs.parameters["stop_loss"] is None or type(inputs.parameters["stop_loss"]) is float
        assert inputs.date_range in RANGES  # instants and name as defined, the end past the data included
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DateRangeWarning)
            replayed = raybt.run_backtest(Momentum(**inputs.parameters), market, inputs.date_range,
                                          symbol=inputs.symbol, **COSTS)
        _same_metrics(row, replayed.metrics)
    late = stored[stored["range"] == "late"]
    assert (late["range_end"] == pd.Timestamp("2023-06-01", tz="UTC")).all()
    assert (late["end"] < pd.Timestamp("2023-05-01", tz="UTC")).all()


def test_row_inputs_of_open_ranges_and_all_data():
    row = {"parameters": '{"a":1,"b":null,"c":2.0,"d":"x","e":true}', "range": "all", "range_start": None,
           "range_end": None, "symbol": None}
    inputs = row_inputs(row)
    assert inputs.parameters == {"a": 1, "b": None, "c": 2.0, "d": "x", "e": True}
    assert type(inputs.parameters["c"]) is float and inputs.date_range is None and inputs.symbol is None
    open_end = row_inputs({**row, "range": "from 2023", "range_start": pd.Timestamp("2023-01-01", tz="UTC"),
                           "range_end": pd.NaT, "symbol": "A"})
    assert open_end.date_range == raybt.DateRange("2023-01-01", None, name="from 2023") and open_end.symbol == "A"


def test_an_open_range_named_all_is_the_whole_data_and_its_rows_replay():
    # A stored row with range "all" and no bounds reads back as date_range=None, so a DateRange(None, None,
    # name="all") must be planned as the whole data too: keyed like None, its rows replay.
    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-02-01", "1h", seed=2)
    named = raybt.run_backtests(GRID[:2], data, raybt.DateRange(None, None, name="all"), show_progress=False)
    whole = raybt.run_backtests(GRID[:2], data, None, show_progress=False)
    assert list(named.df["key"]) == list(whole.df["key"])
    for _, row in named.df.iterrows():
        _same_metrics(row, named.backtest(row, data).metrics)


# ----------------------------------------------------------------------------------------- ranges the user meant

def test_ranges_with_the_same_instants_but_other_names_give_a_row_each(tmp_path):
    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-03-01", "1h", seed=2)
    q = raybt.DateRange("2023-01-01", "2023-02-01", name="q")
    january = raybt.DateRange("2023-01-01", "2023-02-01", name="january")
    results = raybt.run_backtests(GRID[:2], data, [q, january], show_progress=False, checkpoint_dir=tmp_path)
    assert len(results) == len(results.df) == 4
    assert sorted(results.df["range"]) == ["january", "january", "q", "q"]
    renamed = raybt.DateRange("2023-01-01", "2023-02-01", name="jan-23")
    again = raybt.run_backtests(GRID[:2], data, [renamed], show_progress=False, checkpoint_dir=tmp_path)
    assert again.n_computed == 2 and set(again.df["range"]) == {"jan-23"}


def test_a_range_past_the_data_is_reported_once_naming_the_bars_it_covers():
    data = raybt.synthetic_ohlcv(["A"], "2023-01-01", "2023-03-01", "1h", seed=2)
    past = raybt.DateRange("2022-12-01", "2023-02-01", name="past")
    with pytest.warns(DateRangeWarning) as caught:
        raybt.run_backtests(GRID[:3], data, [past, RANGES[0]], show_progress=False)
    texts = [str(w.message) for w in caught]
    assert len([t for t in texts if "'past'" in t]) == 1
    assert ("date range 'past' (2022-12-01 .. 2023-02-01) reaches past the data (2023-01-01 00:00:00+00:00 .. "
            "2023-02-28 23:00:00+00:00): it covers the 744 bar(s) 2023-01-01 00:00:00+00:00 .. "
            "2023-01-31 23:00:00+00:00") in texts
    assert not any("'early'" in t for t in texts)  # 2023-01-01 .. 2023-03-01: exactly the data
    with pytest.warns(DateRangeWarning, match="'past'"):
        raybt.run_backtest(GRID[0], data, past)


def test_a_range_starting_on_a_market_holiday_is_not_past_the_data():
    # Daily bars on weekdays from Tuesday 2023-01-03: a range from 2023-01-01 misses two days, no longer than a
    # weekend inside the data, so nothing is reported.
    days = pd.bdate_range("2023-01-03", "2023-03-31", tz="UTC")
    close = np.linspace(100, 110, len(days))
    frame = pd.DataFrame({"open": close, "high": close + 1, "low": close - 1, "close": close}, index=days)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DateRangeWarning)
        raybt.run_backtest(GRID[0], frame, raybt.DateRange("2023-01-01", "2023-04-01"))
