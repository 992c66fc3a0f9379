"""Loading, validation, alignment, slicing, fingerprints and synthetic data."""

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt.data import FIELDS, DataError, DateRange, load_ohlcv, synthetic_ohlcv


def frame(n=5, start="2024-01-01", freq="1h", base=100.0):
    index = pd.date_range(start, periods=n, freq=freq)
    close = base + np.arange(n, dtype=float)
    return pd.DataFrame({"Open": close - 0.5, "High": close + 1, "Low": close - 1, "Close": close,
                         "Volume": np.full(n, 10.0)}, index=index)


# ------------------------------------------------------------------------------------------- accepted inputs

def test_single_frame_case_insensitive_columns_naive_index_is_utc():
    md = load_ohlcv(frame())
    assert md.symbols == ("asset",)
    assert str(md.index.tz) == "UTC"
    assert md.index[0] == pd.Timestamp("2024-01-01", tz="UTC")
    np.testing.assert_array_equal(md.close[0], 100.0 + np.arange(5))
    assert md.close.shape == (1, 5) and md.close.dtype == np.float64
    assert not md.close.flags.writeable


def test_timestamp_column_and_aware_timezone_converted_to_utc():
    df = frame().reset_index(names="Date")
    df["Date"] = df["Date"].dt.tz_localize("Europe/Berlin")
    md = load_ohlcv(df, symbol="X")
    assert md.symbols == ("X",)
    assert md.index[0] == pd.Timestamp("2023-12-31 23:00", tz="UTC")


def test_csv_and_parquet_paths(tmp_path):
    df = frame().reset_index(names="timestamp")
    df.to_csv(tmp_path / "d.csv", index=False)
    df.to_parquet(tmp_path / "d.parquet")
    a, b = load_ohlcv(tmp_path / "d.csv"), load_ohlcv(str(tmp_path / "d.parquet"))
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.high, b.high)


def test_missing_file_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_ohlcv(tmp_path / "nope.csv")
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        load_ohlcv(tmp_path / "d.json")


def test_volume_optional_and_unsorted_input_sorted():
    df = frame().drop(columns="Volume").iloc[::-1]
    md = load_ohlcv(df)
    assert md.index.is_monotonic_increasing
    np.testing.assert_array_equal(md.volume, 0.0)
    np.testing.assert_array_equal(md.close[0], 100.0 + np.arange(5))


def test_dict_and_long_frame_give_identical_data():
    a, b = frame(base=100), frame(base=50)
    from_dict = load_ohlcv({"A": a, "B": b})
    long = pd.concat([a.assign(symbol="A"), b.assign(symbol="B")]).reset_index(names="timestamp")
    from_long = load_ohlcv(long)
    assert from_dict.symbols == from_long.symbols == ("A", "B")
    assert from_dict.fingerprint == from_long.fingerprint


def test_alignment_on_union_of_timestamps():
    a = frame(5)
    b = frame(5).iloc[[2, 4]]  # starts two bars later and has a gap at bar 3
    md = load_ohlcv({"A": a, "B": b})
    assert md.n_bars == 5
    b_row = md.symbols.index("B")
    # Before B's first bar: no bar at all (NaN everywhere, volume NaN), so it cannot be traded or valued.
    assert np.isnan(md.close[b_row, :2]).all() and np.isnan(md.open[b_row, :2]).all()
    # The gap at bar 3: no trading (open/high/low NaN), close carried forward, volume 0.
    assert np.isnan(md.open[b_row, 3]) and np.isnan(md.high[b_row, 3]) and np.isnan(md.low[b_row, 3])
    assert md.close[b_row, 3] == md.close[b_row, 2] == 102.0
    assert md.volume[b_row, 3] == 0.0
    roundtrip = md.to_frame()
    assert len(roundtrip) == 5 + 2


def test_market_data_passthrough_and_getitem():
    md = synthetic_ohlcv(["A", "B"], "2024-01-01", "2024-01-03", "1h", seed=3)
    assert load_ohlcv(md) is md
    one = md["B"]
    assert list(one.columns) == ["open", "high", "low", "close", "volume"]
    np.testing.assert_array_equal(one["close"].to_numpy(), md.close[1])
    with pytest.raises(KeyError, match="unknown symbol 'C'"):
        md["C"]


# ------------------------------------------------------------------------------------------------ bad input

def bad(df, column, row, value):
    df = df.copy()
    df.iloc[row, df.columns.get_loc(column)] = value
    return df


@pytest.mark.parametrize("drop", ["Open", "High", "Low", "Close"])
def test_missing_ohlc_column_named(drop):
    with pytest.raises(DataError, match=rf"symbol 'S': missing column\(s\) \['{drop.lower()}'\]"):
        load_ohlcv(frame().drop(columns=drop), symbol="S")


def test_non_numeric_value_named_with_timestamp():
    df = frame().astype({"Close": object})
    df.iloc[2, df.columns.get_loc("Close")] = "abc"
    with pytest.raises(DataError, match=r"symbol 'asset': column 'close' has a non-numeric value 'abc' at "
                                        r"2024-01-01 02:00:00\+00:00"):
        load_ohlcv(df)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_named(value):
    with pytest.raises(DataError, match=r"column 'open' is NaN or infinite at 2024-01-01 03:00:00\+00:00"):
        load_ohlcv(bad(frame(), "Open", 3, value))


def test_duplicate_timestamp_named():
    df = pd.concat([frame(), frame().iloc[[1]]])
    with pytest.raises(DataError, match=r"duplicate timestamp 2024-01-01 01:00:00\+00:00"):
        load_ohlcv(df)


def test_non_positive_price_named():
    df = bad(bad(frame(), "Low", 1, 0.0), "Open", 1, 0.5)
    with pytest.raises(DataError, match=r"column 'low' is not positive at 2024-01-01 01:00:00\+00:00"):
        load_ohlcv(df)


def test_high_below_body_named():
    with pytest.raises(DataError, match=r"'high' is below max\(open, close\) at 2024-01-01 04:00:00\+00:00"):
        load_ohlcv(bad(frame(), "High", 4, 103.9))


def test_low_above_body_named():
    with pytest.raises(DataError, match=r"'low' is above min\(open, close\) at 2024-01-01 00:00:00\+00:00"):
        load_ohlcv(bad(frame(), "Low", 0, 99.6))


def test_error_names_the_symbol_in_multi_symbol_input():
    with pytest.raises(DataError, match=r"symbol 'ETH': column 'close' is NaN"):
        load_ohlcv({"BTC": frame(), "ETH": bad(frame(), "Close", 1, np.nan)})


def test_no_timestamps_and_numeric_epochs_rejected():
    with pytest.raises(DataError, match="no timestamps"):
        load_ohlcv(frame().reset_index(drop=True))
    df = frame().reset_index(drop=True).assign(timestamp=np.arange(5) * 3600)
    with pytest.raises(DataError, match="holds numbers, not timestamps"):
        load_ohlcv(df)


def test_unsupported_source_type():
    with pytest.raises(TypeError, match="cannot load OHLCV from list"):
        load_ohlcv([1, 2, 3])


def test_date_range_selecting_no_bars():
    md = load_ohlcv(frame())
    with pytest.raises(DataError, match=r"date range 'empty' selects no bars \(data spans 2024-01-01"):
        md.bounds(DateRange("2025-01-01", "2025-02-01", name="empty"))


# --------------------------------------------------------------------------------------------- date ranges

def test_date_range_bounds_start_inclusive_end_exclusive_with_warmup():
    md = load_ohlcv(frame(10))
    r = DateRange("2024-01-01 03:00", "2024-01-01 07:00")
    assert md.bounds(r) == (3, 3, 7)
    assert md.bounds(r, warmup=2) == (1, 3, 7)
    assert md.bounds(r, warmup=50) == (0, 3, 7)
    assert md.bounds(None) == (0, 0, 10)
    assert r.name == "2024-01-01T03:00:00+00:00..2024-01-01T07:00:00+00:00"
    assert DateRange("2023-01-01", "2024-01-01").name == "2023-01-01..2024-01-01"
    with pytest.raises(ValueError, match="must be after start"):
        DateRange("2024-01-02", "2024-01-01")


def test_view_frames_are_zero_copy_read_only_and_reused():
    md = synthetic_ohlcv(["A", "B"], "2024-01-01", "2024-01-05", "1h", seed=1)
    view = md.view(10, 40)
    close = view.close
    assert close is view.close  # built once per view
    assert close.shape == (30, 2) and list(close.columns) == ["A", "B"]
    assert np.shares_memory(close.to_numpy(), md.close)
    np.testing.assert_array_equal(close["B"].to_numpy(), md.close[1, 10:40])
    with pytest.raises(ValueError, match="read-only"):
        close.iloc[0, 0] = 1.0
    assert view["A"]["high"].iloc[0] == md.high[0, 10]


@pytest.mark.parametrize("edit", ["add column", "replace column", "relabel columns", "relabel index", "delete column"])
@pytest.mark.parametrize("which", ["close", "symbol"])
def test_a_strategy_editing_a_view_frame_does_not_change_it_for_the_next(edit, which):
    """Frames are shared by every strategy on a view; one that edits its frame keeps its edits to itself."""
    md = synthetic_ohlcv(["A", "B"], "2024-01-01", "2024-01-05", "1h", seed=1)
    view = md.view(10, 40)
    get = (lambda: view.close) if which == "close" else (lambda: view["A"])
    first = get()
    assert get() is first  # untouched: the same object (indicator cache hits)
    expected = first.copy()
    column = first.columns[0]
    if edit == "add column":
        first["extra"] = 1.0
    elif edit == "replace column":
        first[column] = 0.0
    elif edit == "relabel columns":
        first.columns = [f"x{i}" for i in range(first.shape[1])]
    elif edit == "relabel index":
        first.index = first.index + pd.Timedelta(hours=1)
    else:
        del first[column]
    fresh = get()
    assert fresh is not first
    pd.testing.assert_frame_equal(fresh, expected)
    assert fresh.index is view.index
    assert get() is fresh


def test_view_arrays_are_the_frames_values_zero_copy_read_only_and_reused():
    md = synthetic_ohlcv(["A", "B"], "2024-01-01", "2024-01-05", "1h", seed=1)
    view = md.view(10, 40)
    arrays = view.arrays
    assert arrays is view.arrays and arrays.close is view.arrays.close  # the same objects: indicator cache hits
    for field in FIELDS:
        values = getattr(arrays, field)
        assert values.shape == (30, 2) and values.dtype == np.float64
        np.testing.assert_array_equal(values, getattr(view, field).to_numpy())
        np.testing.assert_array_equal(values[:, 1], getattr(md, field)[1, 10:40])
        assert np.shares_memory(values, getattr(md, field))
        with pytest.raises(ValueError, match="read-only"):
            values[0, 0] = 1.0


# ----------------------------------------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_and_realistic():
    a = synthetic_ohlcv(["X", "Y"], "2022-01-01", "2024-01-01", "1h", seed=7)
    b = synthetic_ohlcv(["X", "Y"], "2022-01-01", "2024-01-01", "1h", seed=7)
    c = synthetic_ohlcv(["X", "Y"], "2022-01-01", "2024-01-01", "1h", seed=8)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert a.n_bars == 2 * 365 * 24
    assert (a.high >= np.maximum(a.open, a.close)).all() and (a.low <= np.minimum(a.open, a.close)).all()
    assert (a.low > 0).all() and (a.volume > 0).all()
    # open near the previous close (a small gap only)
    gap = np.abs(a.open[:, 1:] / a.close[:, :-1] - 1)
    assert gap.max() < 0.01
    # re-validating the synthetic data through the loader accepts it unchanged
    assert load_ohlcv(a.to_frame()).fingerprint == a.fingerprint


def test_arrays_own_their_memory_so_they_are_immutable():
    close = np.full((1, 5), 100.0)
    md = raybt.MarketData(index=pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC"), symbols=("A",),
                          open=close, high=close, low=close, close=close.T.T, volume=close)
    close[0, 0] = 1.0  # the caller's array changes; the market data must not
    assert md.close[0, 0] == 100.0 and md.close.base is None and not md.close.flags.writeable
    synthetic = synthetic_ohlcv(["A"], "2024-01-01", "2024-01-02", "1h")
    assert all(getattr(synthetic, f).base is None for f in ("open", "high", "low", "close", "volume"))


def test_market_data_index_must_be_utc_sorted_unique():
    close = np.full((1, 3), 100.0)
    arrays = dict(open=close, high=close, low=close, close=close, volume=close)
    with pytest.raises(DataError, match="must be a UTC DatetimeIndex"):
        raybt.MarketData(index=pd.date_range("2024-01-01", periods=3, freq="h"), symbols=("A",), **arrays)
    unsorted = pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 01:00", "2024-01-01 03:00"], tz="UTC")
    with pytest.raises(DataError, match="sorted and free of duplicates"):
        raybt.MarketData(index=unsorted, symbols=("A",), **arrays)
    micro = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC").as_unit("us")
    md = raybt.MarketData(index=micro, symbols=["A"], **arrays)
    assert md.times_ns[1] - md.times_ns[0] == 3_600 * 10**9  # nanoseconds whatever the index's unit


def test_fingerprint_changes_with_any_value():
    df = frame()
    base = load_ohlcv(df).fingerprint
    assert load_ohlcv(bad(df, "Volume", 2, 11.0)).fingerprint != base
    assert load_ohlcv(df, symbol="other").fingerprint != base
    assert load_ohlcv(df.copy()).fingerprint == base


def test_public_names():
    assert raybt.load_ohlcv is load_ohlcv and raybt.DateRange is DateRange
