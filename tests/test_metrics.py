"""Tests of raybt.metrics against independent references computed here with plain pandas/numpy."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from llvmlite import binding as llvm_binding
from numba import njit

from raybt import _records as rec
from raybt._accel import llvm
from raybt import metrics as m
from raybt.metrics import scan as metrics_scan

# Any numpy/pandas warning (division by zero, empty mean, ...) is a failure.
pytestmark = pytest.mark.filterwarnings("error")

HOURS_PER_YEAR = 8760.0
NS_PER_DAY = 86_400 * 10**9


def ns(times: pd.DatetimeIndex) -> np.ndarray:
    """int64 nanoseconds (pandas 3 indexes may hold microseconds: asi8 alone is not enough)."""
    return times.as_unit("ns").asi8


# ---------------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------------


def ref_returns(equity: np.ndarray, initial: float) -> pd.Series:
    """pandas pct_change over [initial, *equity], first (NaN) element dropped."""
    return pd.Series(np.r_[initial, equity]).pct_change().iloc[1:].reset_index(drop=True)


def ref_drawdown(equity: np.ndarray, initial: float, times: pd.DatetimeIndex) -> tuple[float, float]:
    """(max drawdown, longest duration in days): cummax for the peak, an explicit walk over underwater spells."""
    values = pd.Series(np.r_[initial, equity])
    peak = values.cummax()
    worst = float((values / peak - 1.0).min())
    stamps = np.r_[ns(times)[0], ns(times)]  # the initial amount is dated at the first bar
    underwater = (values < peak).to_numpy()
    longest, peak_at = 0, None
    for i, under in enumerate(underwater):
        if under and peak_at is None:
            peak_at = i - 1  # the previous point was at the peak
        elif not under and peak_at is not None:
            longest = max(longest, stamps[i] - stamps[peak_at])
            peak_at = None
    if peak_at is not None:
        longest = max(longest, stamps[-1] - stamps[peak_at])
    return worst, longest / NS_PER_DAY


def ref_longest_underwater(values: np.ndarray, stamps: np.ndarray) -> float:
    """Longest peak-to-recovery time in days over values dated by stamps, by brute force over every peak."""
    peak = np.maximum.accumulate(values)
    longest = 0
    for i in np.flatnonzero(values == peak):  # each bar at its running peak
        after = np.flatnonzero(values[i + 1 :] >= values[i])
        end = stamps[i + 1 + after[0]] if after.size else stamps[-1]
        longest = max(longest, end - stamps[i])
    return longest / NS_PER_DAY


def ref_period_returns(equity: np.ndarray, initial: float, times: pd.DatetimeIndex, rule: str) -> np.ndarray:
    """resample(rule).last() of the equity, returns against the previous period (the first against initial)."""
    ends = pd.Series(equity, index=times).resample(rule).last().dropna().to_numpy()
    values = np.r_[initial, ends]
    return values[1:] / values[:-1] - 1.0


def longest_run(flags: list[bool]) -> int:
    best = run = 0
    for flag in flags:
        run = run + 1 if flag else 0
        best = max(best, run)
    return best


def ref_equity_metrics(
    equity: np.ndarray, bars_in_market: int, initial: float, times: pd.DatetimeIndex, ppy: float, rf: float = 0.0
) -> dict[str, float]:
    """The equity-curve metrics of the spec, written out with pandas."""
    r = ref_returns(equity, initial)
    rf_bar = (1.0 + rf) ** (1.0 / ppy) - 1.0
    excess = r - rf_bar
    years = len(equity) / ppy
    final = equity[-1]
    cagr = (final / initial) ** (1.0 / years) - 1.0
    worst_dd, dd_days = ref_drawdown(equity, initial, times)
    var = np.percentile(r.to_numpy(), 5)
    monthly = ref_period_returns(equity, initial, times, "ME")
    yearly = ref_period_returns(equity, initial, times, "YE")
    return {
        "final_value": final,
        "total_return": final / initial - 1.0,
        "cagr": cagr,
        "volatility": r.std() * math.sqrt(ppy),
        "sharpe": excess.mean() / r.std() * math.sqrt(ppy),
        "sortino": excess.mean() / math.sqrt((excess.clip(upper=0.0) ** 2).mean()) * math.sqrt(ppy),
        "calmar": cagr / abs(worst_dd),
        "max_drawdown": worst_dd,
        "max_drawdown_duration": dd_days,
        "var_95": var,
        "cvar_95": r[r <= var].mean(),
        "best_month": monthly.max(),
        "worst_month": monthly.min(),
        "pct_winning_months": (monthly > 0).mean(),
        "best_year": yearly.max(),
        "worst_year": yearly.min(),
        "exposure": bars_in_market / len(equity),
    }


def ref_trade_metrics(trades: np.ndarray, times: pd.DatetimeIndex, ppy: float) -> dict[str, float]:
    """The trade metrics of the spec (for trades with both winners and losers), written out with pandas."""
    t = pd.DataFrame(trades)
    pnl, ret = t[rec.PNL], t[rec.RETURN]
    wins, losses = ret[pnl > 0], ret[pnl < 0]
    durations = times[t[rec.EXIT_BAR].to_numpy(int)] - times[t[rec.ENTRY_BAR].to_numpy(int)]
    return {
        "n_trades": len(t),
        "n_winning_trades": len(wins),
        "n_losing_trades": len(losses),
        "win_rate": len(wins) / len(t),
        "profit_factor": pnl[pnl > 0].sum() / -pnl[pnl < 0].sum(),
        "avg_trade_return": ret.mean(),
        "best_trade": ret.max(),
        "worst_trade": ret.min(),
        "avg_win": wins.mean(),
        "avg_loss": losses.mean(),
        "win_loss_ratio": wins.mean() / abs(losses.mean()),
        "max_consecutive_wins": longest_run(list(pnl > 0)),
        "max_consecutive_losses": longest_run(list(pnl < 0)),
        "avg_trade_duration": (durations / pd.Timedelta(days=1)).to_numpy().mean(),
        "trades_per_year": len(t) / (len(times) / ppy),
        "total_fees": t[rec.FEES].sum(),
    }


def make_trades(rows: list[tuple[int, int, float, float]], fees: float = 1.0) -> np.ndarray:
    """Trade records from (entry bar, exit bar, pnl, return) rows."""
    trades = np.zeros((len(rows), rec.N_TRADE_FIELDS))
    for i, (entry, exit_, pnl, ret) in enumerate(rows):
        trades[i, [rec.ENTRY_BAR, rec.EXIT_BAR, rec.PNL, rec.RETURN, rec.FEES]] = entry, exit_, pnl, ret, fees
        trades[i, rec.DIRECTION] = 1.0
    return trades


def no_trades() -> np.ndarray:
    return np.empty((0, rec.N_TRADE_FIELDS))


def calendar_for(times: pd.DatetimeIndex, periods_per_year: float | None = None) -> m.RangeCalendar:
    return m.RangeCalendar.build(ns(times), np.ones(len(times)), periods_per_year)


def assert_metrics_equal(got: dict[str, float], expected: dict[str, float], rel: float = 1e-9) -> None:
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=rel, abs=1e-12, nan_ok=True), name


# ---------------------------------------------------------------------------------------------------------------------
# Hand-worked small cases
# ---------------------------------------------------------------------------------------------------------------------

# Five daily bars over a month end; initial amount 100.
HAND_TIMES = pd.date_range("2022-01-30", periods=5, freq="D", tz="UTC")  # Jan 30, Jan 31, Feb 1, Feb 2, Feb 3
HAND_EQUITY = np.array([110.0, 99.0, 121.0, 121.0, 108.9])
# returns: 110/100-1 = 0.1, 99/110-1 = -0.1, 121/99-1 = 0.2222.., 121/121-1 = 0, 108.9/121-1 = -0.1


def test_hand_equity_metrics() -> None:
    calendar = calendar_for(HAND_TIMES, periods_per_year=365.0)
    got = m.compute_metrics(HAND_EQUITY, no_trades(), 3, initial_amount=100.0, calendar=calendar)
    r = np.array([0.1, -0.1, 121 / 99 - 1, 0.0, -0.1])
    assert got["final_value"] == 108.9
    assert got["total_return"] == pytest.approx(0.089)  # 108.9 / 100 - 1
    assert got["cagr"] == pytest.approx(1.089 ** (365 / 5) - 1)  # years = 5 bars / 365
    mean = r.sum() / 5  # 0.12222.. / 5 = 0.024444..
    std = math.sqrt(((r - mean) ** 2).sum() / 4)
    assert got["volatility"] == pytest.approx(std * math.sqrt(365))
    assert got["sharpe"] == pytest.approx(mean / std * math.sqrt(365))
    downside = math.sqrt((0.01 + 0.01) / 5)  # two bars at -0.1, squares averaged over all 5
    assert got["sortino"] == pytest.approx(mean / downside * math.sqrt(365))
    # peaks: 100 -> 110 (bar 0) -> 99 is -10 %; 121 (bar 2, again bar 3) -> 108.9 is -10 % too
    assert got["max_drawdown"] == pytest.approx(-0.1)
    # 110 on Jan 30 regained on Feb 1: 2 days; 121 on Feb 2 still not regained at the end, Feb 3: 1 day
    assert got["max_drawdown_duration"] == pytest.approx(2.0)
    assert got["calmar"] == pytest.approx(got["cagr"] / 0.1)
    # sorted returns -0.1, -0.1, 0, 0.1, 0.222; position 0.05 * 4 = 0.2 lies between two -0.1
    assert got["var_95"] == pytest.approx(-0.1)
    assert got["cvar_95"] == pytest.approx(-0.1)
    # January ends at 99 (99/100 - 1 = -1 %), February at 108.9 (108.9/99 - 1 = +10 %)
    assert got["best_month"] == pytest.approx(0.1)
    assert got["worst_month"] == pytest.approx(-0.01)
    assert got["pct_winning_months"] == 0.5
    assert got["best_year"] == got["worst_year"] == pytest.approx(0.089)
    assert got["exposure"] == pytest.approx(3 / 5)
    assert_metrics_equal(got, ref_equity_metrics(HAND_EQUITY, 3, 100.0, HAND_TIMES, 365.0))


def test_hand_trade_metrics() -> None:
    times = pd.date_range("2022-01-01", periods=10, freq="6h", tz="UTC")
    trades = make_trades(
        [
            (0, 1, 50.0, 0.05),  # win   6 h
            (1, 3, 30.0, 0.03),  # win  12 h
            (3, 4, -20.0, -0.02),  # loss  6 h
            (4, 5, 0.0, 0.0),  # flat: ends both runs, 6 h
            (5, 6, -10.0, -0.01),  # loss  6 h
            (6, 7, -5.0, -0.005),  # loss  6 h
            (7, 9, 40.0, 0.04),  # win, still open at the end: counts, 12 h
        ]
    )
    trades[-1, rec.REASON] = rec.EXIT_OPEN_AT_END
    trades[-1, rec.FEES] = 0.5  # entry fee only
    calendar = calendar_for(times)  # 6h bars: 1460 per year
    got = m.compute_metrics(np.full(10, 1000.0), trades, 8, initial_amount=1000.0, calendar=calendar)
    assert got["n_trades"] == 7.0
    assert got["n_winning_trades"] == 3.0
    assert got["n_losing_trades"] == 3.0
    assert got["win_rate"] == pytest.approx(3 / 7)
    assert got["profit_factor"] == pytest.approx(120 / 35)  # (50 + 30 + 40) / (20 + 10 + 5)
    assert got["avg_trade_return"] == pytest.approx(0.085 / 7)  # 0.05 + 0.03 - 0.02 + 0 - 0.01 - 0.005 + 0.04
    assert got["best_trade"] == 0.05
    assert got["worst_trade"] == -0.02
    assert got["avg_win"] == pytest.approx(0.04)  # (0.05 + 0.03 + 0.04) / 3
    assert got["avg_loss"] == pytest.approx(-0.035 / 3)
    assert got["win_loss_ratio"] == pytest.approx(0.04 / (0.035 / 3))
    assert got["max_consecutive_wins"] == 2.0  # the first two
    assert got["max_consecutive_losses"] == 2.0  # -10, -5 (the flat trade broke -20 from them)
    assert got["avg_trade_duration"] == pytest.approx((6 * 5 + 12 * 2) / 7 / 24)  # hours -> days
    assert got["trades_per_year"] == pytest.approx(7 / (10 / 1460))
    assert got["total_fees"] == 6.5
    assert_metrics_equal(got, ref_trade_metrics(trades, times, 1460.0))


def test_metric_names_are_the_keys_in_order() -> None:
    calendar = calendar_for(HAND_TIMES)
    got = m.compute_metrics(HAND_EQUITY, make_trades([(0, 2, 1.0, 0.01)]), 2, initial_amount=100.0, calendar=calendar,
                            unfunded_entries=3)
    assert got["n_unfunded_entries"] == 3.0
    assert tuple(got) == m.METRIC_NAMES
    assert len(set(m.METRIC_NAMES)) == len(m.METRIC_NAMES)
    assert all(type(value) is float for value in got.values())


def test_risk_free_rate() -> None:
    calendar = calendar_for(HAND_TIMES, periods_per_year=365.0)
    got = m.compute_metrics(HAND_EQUITY, no_trades(), 0, initial_amount=100.0, calendar=calendar, risk_free_rate=0.05)
    expected = ref_equity_metrics(HAND_EQUITY, 0, 100.0, HAND_TIMES, 365.0, rf=0.05)
    assert got["sharpe"] == pytest.approx(expected["sharpe"])
    assert got["sortino"] == pytest.approx(expected["sortino"])
    assert got["volatility"] == pytest.approx(expected["volatility"])  # unaffected by rf


# ---------------------------------------------------------------------------------------------------------------------
# Degenerate cases: defined values, no exception, no warning
# ---------------------------------------------------------------------------------------------------------------------


def test_no_trades() -> None:
    got = m.compute_metrics(HAND_EQUITY, no_trades(), 0, initial_amount=100.0, calendar=calendar_for(HAND_TIMES))
    for name in ("n_trades", "n_winning_trades", "n_losing_trades", "max_consecutive_wins", "max_consecutive_losses",
                 "total_fees", "trades_per_year"):
        assert got[name] == 0.0, name
    for name in ("win_rate", "profit_factor", "avg_trade_return", "best_trade", "worst_trade", "avg_win", "avg_loss",
                 "win_loss_ratio", "avg_trade_duration"):
        assert math.isnan(got[name]), name
    assert got["exposure"] == 0.0
    # an empty 1-D array is accepted as "no trades" too
    assert m.compute_metrics(HAND_EQUITY, np.array([]), 0, initial_amount=100.0,
                             calendar=calendar_for(HAND_TIMES))["n_trades"] == 0.0


def test_flat_equity() -> None:
    times = pd.date_range("2022-01-01", periods=24 * 70, freq="h", tz="UTC")
    got = m.compute_metrics(np.full(len(times), 500.0), no_trades(), 0, initial_amount=500.0,
                            calendar=calendar_for(times))
    assert got["volatility"] == 0.0
    assert math.isnan(got["sharpe"]) and math.isnan(got["sortino"]) and math.isnan(got["calmar"])
    assert got["max_drawdown"] == 0.0 and got["max_drawdown_duration"] == 0.0
    assert got["total_return"] == 0.0 and got["cagr"] == 0.0
    assert got["var_95"] == 0.0 and got["cvar_95"] == 0.0
    assert got["best_month"] == got["worst_month"] == 0.0 and got["pct_winning_months"] == 0.0


def test_constant_positive_returns_have_no_risk() -> None:
    """Identical returns: std is exactly 0 (sharpe NaN), no bar below rf (sortino NaN), no drawdown (calmar NaN)."""
    times = pd.date_range("2022-01-01", periods=50, freq="D", tz="UTC")
    equity = 100.0 * 2.0 ** np.arange(1, 51)  # doubling is exact in binary: every return is exactly 1.0
    got = m.compute_metrics(equity, no_trades(), 50, initial_amount=100.0, calendar=calendar_for(times))
    assert got["volatility"] == 0.0
    assert math.isnan(got["sharpe"]) and math.isnan(got["sortino"]) and math.isnan(got["calmar"])
    assert got["max_drawdown"] == 0.0 and got["max_drawdown_duration"] == 0.0
    assert got["var_95"] == 1.0 and got["cvar_95"] == 1.0


def test_single_bar() -> None:
    times = pd.date_range("2022-03-01", periods=1, freq="h", tz="UTC")
    trades = make_trades([(0, 0, -2.0, -0.02)])
    # periods_per_year cannot be inferred from one bar: NaN, so everything annualised is NaN
    got = m.compute_metrics(np.array([98.0]), trades, 1, initial_amount=100.0, calendar=calendar_for(times))
    assert math.isnan(m.infer_periods_per_year(ns(times)))
    for name in ("cagr", "volatility", "sharpe", "sortino", "calmar", "trades_per_year"):
        assert math.isnan(got[name]), name
    assert got["total_return"] == pytest.approx(-0.02)
    assert got["max_drawdown"] == pytest.approx(-0.02)
    assert got["max_drawdown_duration"] == 0.0  # the initial amount and the bar share the first timestamp
    assert got["var_95"] == got["cvar_95"] == pytest.approx(-0.02)
    assert got["best_month"] == got["worst_year"] == pytest.approx(-0.02)
    assert got["avg_trade_duration"] == 0.0 and got["n_losing_trades"] == 1.0
    # with an explicit periods_per_year only the std-based ratios stay NaN
    got = m.compute_metrics(np.array([98.0]), trades, 1, initial_amount=100.0,
                            calendar=calendar_for(times, periods_per_year=HOURS_PER_YEAR))
    assert got["cagr"] == pytest.approx(0.98**HOURS_PER_YEAR - 1)
    assert math.isnan(got["volatility"]) and math.isnan(got["sharpe"]) and math.isnan(got["sortino"])
    assert got["trades_per_year"] == pytest.approx(HOURS_PER_YEAR)


def test_no_bars() -> None:
    times = pd.DatetimeIndex([], tz="UTC")
    calendar = m.RangeCalendar.build(ns(times), np.empty((0, 2)))
    got = m.compute_metrics(np.array([]), no_trades(), 0, initial_amount=100.0, calendar=calendar)
    assert math.isnan(calendar.buy_and_hold_return)
    for name, value in got.items():
        if name in ("n_trades", "n_winning_trades", "n_losing_trades", "max_consecutive_wins",
                    "max_consecutive_losses", "total_fees", "n_unfunded_entries"):
            assert value == 0.0, name
        else:
            assert math.isnan(value), name


def test_all_winning_trades() -> None:
    trades = make_trades([(0, 1, 5.0, 0.05), (1, 3, 2.0, 0.02), (3, 4, 1.0, 0.01)])
    got = m.compute_metrics(HAND_EQUITY, trades, 4, initial_amount=100.0, calendar=calendar_for(HAND_TIMES))
    assert got["profit_factor"] == math.inf
    assert math.isnan(got["avg_loss"]) and math.isnan(got["win_loss_ratio"])
    assert got["win_rate"] == 1.0 and got["max_consecutive_wins"] == 3.0 and got["max_consecutive_losses"] == 0.0


def test_all_losing_and_break_even_trades() -> None:
    losing = make_trades([(0, 1, -5.0, -0.05), (1, 3, -2.0, -0.02)])
    got = m.compute_metrics(HAND_EQUITY, losing, 4, initial_amount=100.0, calendar=calendar_for(HAND_TIMES))
    assert got["profit_factor"] == 0.0 and got["win_rate"] == 0.0
    assert math.isnan(got["avg_win"]) and math.isnan(got["win_loss_ratio"])
    even = make_trades([(0, 1, 0.0, 0.0)])
    got = m.compute_metrics(HAND_EQUITY, even, 4, initial_amount=100.0, calendar=calendar_for(HAND_TIMES))
    assert math.isnan(got["profit_factor"])
    assert got["n_winning_trades"] == got["n_losing_trades"] == 0.0 and got["win_rate"] == 0.0


def test_zero_drawdown() -> None:
    times = pd.date_range("2022-01-01", periods=200, freq="h", tz="UTC")
    equity = np.linspace(101.0, 150.0, 200)  # rises every bar
    got = m.compute_metrics(equity, no_trades(), 200, initial_amount=100.0, calendar=calendar_for(times))
    assert got["max_drawdown"] == 0.0 and got["max_drawdown_duration"] == 0.0
    assert math.isnan(got["calmar"])
    assert got["sharpe"] > 0 and math.isnan(got["sortino"])  # no bar below rf: downside deviation 0


def test_equity_wiped_out() -> None:
    """Equity at 0: later returns are undefined (0/0), return-based metrics NaN, no exception or warning."""
    times = pd.date_range("2022-01-01", periods=4, freq="D", tz="UTC")
    got = m.compute_metrics(np.array([50.0, 0.0, 0.0, 0.0]), no_trades(), 4, initial_amount=100.0,
                            calendar=calendar_for(times))
    assert got["total_return"] == -1.0 and got["cagr"] == -1.0 and got["max_drawdown"] == -1.0
    assert math.isnan(got["sharpe"]) and math.isnan(got["var_95"]) and math.isnan(got["cvar_95"])
    assert got["max_drawdown_duration"] == 3.0


def test_read_only_and_series_inputs() -> None:
    equity = HAND_EQUITY.copy()
    trades = make_trades([(0, 2, 3.0, 0.03)])
    equity.flags.writeable = False
    trades.flags.writeable = False
    calendar = calendar_for(HAND_TIMES)
    got = m.compute_metrics(equity, trades, 2, initial_amount=100.0, calendar=calendar)
    again = m.compute_metrics(pd.Series(HAND_EQUITY, index=HAND_TIMES), trades.copy(), 2, initial_amount=100,
                              calendar=calendar)
    assert_metrics_equal(again, got, rel=0)


def test_invalid_inputs() -> None:
    calendar = calendar_for(HAND_TIMES)
    with pytest.raises(ValueError, match="bars"):
        m.compute_metrics(HAND_EQUITY[:3], no_trades(), 0, initial_amount=100.0, calendar=calendar)
    with pytest.raises(ValueError, match="initial_amount"):
        m.compute_metrics(HAND_EQUITY, no_trades(), 0, initial_amount=0.0, calendar=calendar)
    with pytest.raises(ValueError, match="risk_free_rate"):
        m.compute_metrics(HAND_EQUITY, no_trades(), 0, initial_amount=1.0, calendar=calendar, risk_free_rate=-1.0)
    with pytest.raises(ValueError, match="trades"):
        m.compute_metrics(HAND_EQUITY, np.zeros((2, 3)), 0, initial_amount=1.0, calendar=calendar)
    with pytest.raises(ValueError, match="outside"):
        m.compute_metrics(HAND_EQUITY, make_trades([(0, 5, 1.0, 0.1)]), 0, initial_amount=1.0, calendar=calendar)


# ---------------------------------------------------------------------------------------------------------------------
# Real-shaped case: two years of hourly bars, ~200 trades
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hourly_case() -> dict:
    rng = np.random.default_rng(42)
    n = 2 * 8760
    times = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    in_market = np.repeat(rng.random(n // 24) < 0.6, 24)  # in or out of the market by whole days
    returns = rng.normal(0.00005, 0.004, n) * in_market
    equity = 10_000.0 * np.cumprod(1.0 + returns)
    entries = np.sort(rng.choice(n - 50, size=200, replace=False))
    rows = [(int(e), int(e + rng.integers(0, 50)), float(p), float(p) / 1000.0)
            for e, p in zip(entries, rng.normal(2.0, 40.0, 200))]
    trades = make_trades(rows, fees=1.5)
    trades[[5, 6, 70], rec.PNL] = trades[[5, 6, 70], rec.RETURN] = 0.0  # break-even trades: neither win nor loss
    close = np.column_stack([100.0 * np.cumprod(1.0 + rng.normal(0, 0.003, n)),
                             50.0 * np.cumprod(1.0 + rng.normal(0, 0.003, n))])
    close[:1000, 1] = np.nan  # second symbol listed later
    return {"times": times, "equity": equity, "trades": trades, "bars": int(in_market.sum()), "close": close}


@pytest.mark.parametrize("rf", [0.0, 0.03])
def test_real_shaped_case(hourly_case: dict, rf: float) -> None:
    c = hourly_case
    calendar = m.RangeCalendar.build(ns(c["times"]), c["close"])
    assert calendar.periods_per_year == HOURS_PER_YEAR
    got = m.compute_metrics(c["equity"], c["trades"], c["bars"], initial_amount=10_000.0, calendar=calendar,
                            risk_free_rate=rf)
    expected = ref_equity_metrics(c["equity"], c["bars"], 10_000.0, c["times"], HOURS_PER_YEAR, rf)
    expected |= ref_trade_metrics(c["trades"], c["times"], HOURS_PER_YEAR)
    close = c["close"]
    expected["buy_and_hold_return"] = ((close[-1, 0] / close[0, 0] - 1) + (close[-1, 1] / close[1000, 1] - 1)) / 2
    expected["n_unfunded_entries"] = 0.0  # a count the simulation hands over, 0 for a curve from elsewhere
    assert set(expected) == set(m.METRIC_NAMES)
    assert_metrics_equal(got, expected)
    assert 0 < got["n_losing_trades"] + got["n_winning_trades"] < got["n_trades"]  # some pnl == 0 trades
    assert got["max_drawdown"] < 0 and got["var_95"] < 0 < got["max_drawdown_duration"]


def test_public_functions_match_compute_metrics(hourly_case: dict) -> None:
    c = hourly_case
    equity, times = c["equity"], c["times"]
    got = m.compute_metrics(equity, c["trades"], c["bars"], initial_amount=10_000.0,
                            calendar=m.RangeCalendar.build(ns(times), c["close"]), risk_free_rate=0.02)
    kw = {"initial_amount": 10_000.0}
    ppy = HOURS_PER_YEAR
    assert m.total_return(equity, **kw) == got["total_return"]
    assert m.cagr(equity, ppy, **kw) == got["cagr"]
    assert m.volatility(equity, ppy, **kw) == got["volatility"]
    assert m.sharpe_ratio(equity, ppy, 0.02, **kw) == got["sharpe"]
    assert m.sortino_ratio(equity, ppy, 0.02, **kw) == got["sortino"]
    assert m.calmar_ratio(equity, ppy, **kw) == got["calmar"]
    assert m.max_drawdown(equity, **kw) == got["max_drawdown"]
    assert m.max_drawdown_duration(equity, times, **kw) == got["max_drawdown_duration"]
    assert m.value_at_risk(equity, **kw) == got["var_95"]
    assert m.conditional_value_at_risk(equity, **kw) == got["cvar_95"]
    assert m.monthly_returns(equity, times, **kw).max() == got["best_month"]
    assert m.yearly_returns(equity, times, **kw).min() == got["worst_year"]


def test_metric_values_are_compute_metrics_in_column_order(hourly_case: dict) -> None:
    """The tuple the sweeps store row by row holds the dict's values in METRIC_NAMES order."""
    c = hourly_case
    kw = {"initial_amount": 10_000.0, "calendar": m.RangeCalendar.build(ns(c["times"]), c["close"]),
          "risk_free_rate": 0.01}
    as_dict = m.compute_metrics(c["equity"], c["trades"], c["bars"], **kw)
    values = m.metric_values(c["equity"], c["trades"], c["bars"], **kw)
    assert len(values) == len(m.METRIC_NAMES) == len(as_dict)
    for name, value in zip(m.METRIC_NAMES, values):
        assert value == as_dict[name] or (math.isnan(value) and math.isnan(as_dict[name])), name


def test_public_functions_on_a_series_without_initial_amount(hourly_case: dict) -> None:
    """Without initial_amount the first value is the start: pandas pct_change().dropna() returns."""
    series = pd.Series(hourly_case["equity"][:5000], index=hourly_case["times"][:5000])
    r = series.pct_change().dropna()
    ppy = HOURS_PER_YEAR
    np.testing.assert_allclose(m.bar_returns(series), r.to_numpy(), rtol=1e-12)
    assert m.total_return(series) == pytest.approx(series.iloc[-1] / series.iloc[0] - 1, rel=1e-12)
    assert m.cagr(series, ppy) == pytest.approx((series.iloc[-1] / series.iloc[0]) ** (ppy / 4999) - 1, rel=1e-9)
    assert m.volatility(series, ppy) == pytest.approx(r.std() * math.sqrt(ppy), rel=1e-9)
    assert m.sharpe_ratio(series, ppy) == pytest.approx(r.mean() / r.std() * math.sqrt(ppy), rel=1e-9)
    downside = math.sqrt((r.clip(upper=0) ** 2).mean())
    assert m.sortino_ratio(series, ppy) == pytest.approx(r.mean() / downside * math.sqrt(ppy), rel=1e-9)
    assert m.max_drawdown(series) == pytest.approx((series / series.cummax() - 1).min(), rel=1e-12)
    assert m.max_drawdown_duration(series) == pytest.approx(ref_longest_underwater(series.to_numpy(), ns(series.index)))
    var = np.percentile(r.to_numpy(), 5)
    assert m.value_at_risk(series) == pytest.approx(var, rel=1e-12)
    assert m.conditional_value_at_risk(series) == pytest.approx(r[r <= var].mean(), rel=1e-9)
    monthly = series.resample("ME").last()
    expected = (monthly / monthly.shift(1, fill_value=series.iloc[0]) - 1).to_numpy()
    np.testing.assert_allclose(m.monthly_returns(series), expected, rtol=1e-12)


def test_public_functions_need_times_for_durations() -> None:
    with pytest.raises(ValueError, match="times"):
        m.max_drawdown_duration(HAND_EQUITY)
    assert m.max_drawdown_duration(HAND_EQUITY, HAND_TIMES, initial_amount=100.0) == pytest.approx(2.0)
    assert math.isnan(m.max_drawdown(np.array([])))
    assert math.isnan(m.sharpe_ratio(np.array([1.0, 1.0]), 365.0))


# ---------------------------------------------------------------------------------------------------------------------
# Tail quantile: the sampled band, ties and the fallback against np.percentile
# ---------------------------------------------------------------------------------------------------------------------


def _tail_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    n = 20_000
    mostly_flat = np.where(rng.random(n) < 0.03, rng.normal(-0.01, 0.005, n), 0.0)  # 5 % quantile is a tie at 0
    few_down = np.where(rng.random(n) < 0.08, rng.normal(-0.01, 0.005, n), 0.0)  # quantile among the few losses
    adversarial = rng.normal(0, 0.01, n)
    adversarial[:: n // 1024] = 0.5  # every sampled position is a huge gain: the sample misleads
    misled_low = rng.normal(0, 0.01, n)
    misled_low[:: n // 1024] = -0.5  # every sampled position is a huge loss: too few returns below the limit
    return [
        ("normal", rng.normal(0, 0.01, n)),
        ("student", rng.standard_t(2, n) * 0.01),
        ("mostly_flat", mostly_flat),
        ("few_down", few_down),
        ("trend_sorted", np.sort(rng.normal(0, 0.01, n))[::-1]),
        ("adversarial", adversarial),
        ("misled_low", misled_low),
        ("short", rng.normal(0, 0.01, 300)),
    ]


@pytest.mark.parametrize(("label", "returns"), _tail_cases(), ids=[label for label, _ in _tail_cases()])
@pytest.mark.parametrize("quantile", [0.05, 0.01, 0.5])
def test_tail_matches_numpy(label: str, returns: np.ndarray, quantile: float) -> None:
    equity = 100.0 * np.cumprod(1.0 + returns)
    r = ref_returns(equity, 100.0).to_numpy()
    var = np.percentile(r, quantile * 100)
    assert m.value_at_risk(equity, quantile, initial_amount=100.0) == pytest.approx(var, rel=1e-12, abs=1e-15)
    cvar = m.conditional_value_at_risk(equity, quantile, initial_amount=100.0)
    assert cvar == pytest.approx(r[r <= var].mean(), rel=1e-9, abs=1e-15)
    if quantile == 0.05:  # compute_metrics: the tail collected during the curve scan, or its fallback
        times = pd.date_range("2022-01-01", periods=equity.size, freq="h", tz="UTC")
        got = m.compute_metrics(equity, no_trades(), 0, initial_amount=100.0, calendar=calendar_for(times))
        assert got["var_95"] == pytest.approx(var, rel=1e-12, abs=1e-15)
        assert got["cvar_95"] == pytest.approx(r[r <= var].mean(), rel=1e-9, abs=1e-15)


# ---------------------------------------------------------------------------------------------------------------------
# Periods per year and the range calendar
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("freq", "expected"), [("h", 8760.0), ("D", 365.0), ("5min", 105_120.0), ("4h", 2190.0)])
def test_infer_periods_per_year(freq: str, expected: float) -> None:
    times = pd.date_range("2023-01-01", periods=500, freq=freq, tz="UTC")
    assert m.infer_periods_per_year(ns(times)) == expected
    assert m.infer_periods_per_year(times) == expected  # a DatetimeIndex is accepted too


def test_infer_periods_per_year_uses_the_median_spacing() -> None:
    business_days = pd.bdate_range("2023-01-02", periods=300, tz="UTC")  # weekend gaps are the minority
    assert m.infer_periods_per_year(ns(business_days)) == 365.0
    assert math.isnan(m.infer_periods_per_year(np.array([], dtype=np.int64)))
    with pytest.raises(ValueError, match="increasing"):
        m.infer_periods_per_year(np.array([5, 5, 5], dtype=np.int64))


def test_calendar_boundaries_match_pandas() -> None:
    times = pd.date_range("2021-11-15 07:00", "2024-02-10", freq="3h", tz="UTC")
    times = times[(times.month != 3) | (times.year != 2023)]  # a month without bars
    calendar = m.RangeCalendar.build(ns(times), np.ones((len(times), 1)))
    positions = pd.Series(np.arange(len(times)), index=times)
    assert np.array_equal(calendar.month_last_bar, positions.resample("ME").last().dropna().to_numpy())
    assert np.array_equal(calendar.year_last_bar, positions.resample("YE").last().dropna().to_numpy())
    assert calendar.periods_per_year == 2920.0
    assert not calendar.times_ns.flags.writeable and not calendar.month_last_bar.flags.writeable


def test_calendar_months_are_utc() -> None:
    local = pd.date_range("2022-01-31 22:30", periods=4, freq="h", tz="Europe/Berlin")  # 21:30 .. 00:30 UTC
    calendar = m.RangeCalendar.build(local, np.ones(4))
    # Berlin Feb 1 00:30 is Jan 31 23:30 UTC: January's last bar is position 2, not 1
    assert calendar.month_last_bar.tolist() == [2, 3]
    assert np.array_equal(calendar.times_ns, ns(local.tz_convert("UTC")))


def test_buy_and_hold_return() -> None:
    times = pd.date_range("2022-01-01", periods=5, freq="D", tz="UTC")
    close = np.array(
        [
            [100.0, np.nan, np.nan],
            [110.0, np.nan, np.nan],
            [105.0, 20.0, np.nan],  # second symbol starts trading here
            [120.0, 25.0, np.nan],
            [130.0, 30.0, np.nan],  # third symbol never trades: left out
        ]
    )
    calendar = m.RangeCalendar.build(ns(times), close)
    assert calendar.buy_and_hold_return == pytest.approx(((130 / 100 - 1) + (30 / 20 - 1)) / 2)  # (0.3 + 0.5) / 2
    single = m.RangeCalendar.build(ns(times), close[:, 0])  # one symbol as a 1-D array
    assert single.buy_and_hold_return == pytest.approx(0.3)


def test_calendar_invalid_inputs() -> None:
    times = ns(pd.date_range("2022-01-01", periods=5, freq="D", tz="UTC"))
    with pytest.raises(ValueError, match="increasing"):
        m.RangeCalendar.build(times[::-1], np.ones(5))
    with pytest.raises(ValueError, match="row per bar"):
        m.RangeCalendar.build(times, np.ones((4, 2)))
    with pytest.raises(ValueError, match="periods_per_year"):
        m.RangeCalendar.build(times, np.ones(5), periods_per_year=0)


# ---------------------------------------------------------------------------------------------------------------------
# Kernels of the fast path: compress intrinsics, selection, the block-wise curve scan, the per-thread scratch
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["memory", "register", "lanes"])
def test_compress_kinds_collect_and_split(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Every way of storing the selected lanes (chosen per CPU and LLVM version) collects the same values in order."""
    if kind == "register" and llvm_binding.llvm_version_info < (19,):
        pytest.skip("llvm.experimental.vector.compress needs LLVM 19")
    monkeypatch.setattr(llvm, "_COMPRESS", kind)
    append = njit(cache=False, error_model="numpy")(metrics_scan._append_below.py_func)  # compiled afresh with this kind
    split = njit(cache=False, error_model="numpy")(m._split.py_func)
    rng = np.random.default_rng(11)
    for n in (0, 1, 7, 8, 9, 63, 1000, 4099):
        x = rng.normal(size=n)
        x[::5] = 0.0
        x[::7] = np.inf
        out = np.full(n + 8, np.nan)
        count = append(x, np.uint64(n), 0.1, out, np.uint64(0))
        assert np.array_equal(out[:count], x[x < 0.1])
        below, above = np.empty(n + 8), np.empty(n + 8)
        n_below, n_above = split(x, np.uint64(n), 0.0, below, above)
        assert np.array_equal(below[:n_below], x[x < 0]) and np.array_equal(above[:n_above], x[x > 0])
        in_place = np.r_[x, np.zeros(8)]  # the part below may overwrite its own source
        n_below, n_above = split(in_place, np.uint64(n), 0.0, in_place, above)
        assert np.array_equal(in_place[:n_below], x[x < 0]) and np.array_equal(above[:n_above], x[x > 0])


def test_select_pair_matches_sorting() -> None:
    rng = np.random.default_rng(12)
    for trial in range(400):
        n = int(rng.integers(1, 3000))
        values = [
            rng.normal(size=n),
            np.round(rng.normal(size=n), 1),  # many ties
            np.where(rng.random(n) < 0.7, 0.0, rng.normal(size=n)),  # mostly one value
            np.full(n, 2.5),
            np.where(rng.random(n) < 0.1, np.inf, rng.normal(size=n)),
        ][trial % 5]
        k = int(rng.integers(0, n)) if trial % 3 else int(rng.choice([0, n - 1]))
        k_next = min(k + 1, n - 1)
        before = values.copy()
        ordered = np.sort(values)
        assert m._select_pair(values, k, k_next) == (ordered[k], ordered[k_next])
        assert m._select_pair(values, k, k) == (ordered[k], ordered[k])
        assert np.array_equal(values, before)  # left unchanged


def test_drawdown_blocks_match_the_reference() -> None:
    """Curves over many scan blocks: new peaks at and across block edges, stretches flat at the peak for whole
    blocks, recoveries exactly to the peak, blocks that only deepen the drawdown, equity below zero."""
    rng = np.random.default_rng(13)
    block = m._CURVE_BLOCK_BARS
    n = 16 * block
    times = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    base = 100.0 * np.cumprod(1.0 + rng.normal(0.0, 0.01, n))
    flat = base.copy()
    peak_at = 2 * block + 299
    flat[peak_at] = flat[:peak_at].max() + 1.0  # a new peak...
    flat[peak_at + 1 : peak_at + 1 + 3 * block] = flat[peak_at]  # ... kept for three whole blocks and more
    rest = n - (peak_at + 1 + 3 * block)
    flat[n - rest :] = flat[peak_at] - np.abs(rng.normal(0, 1.0, rest)).cumsum() / 10  # then only falling
    flat[n - rest // 2] = flat[peak_at]  # back exactly at the peak
    rising = 100.0 + np.arange(n) * 0.5 + rng.normal(0, 0.3, n)  # a new peak in every block
    edges = 100.0 + np.repeat(np.arange(16.0), block)  # new peaks exactly at block starts, flat in between...
    edges[block // 2 :: block] -= 0.5  # ... but for a one-bar dip
    to_edge = base.copy()  # a peak held to the end of a block, then a fall from the next block's first bar on
    to_edge[5 * block - 10 : 8 * block] = to_edge[: 5 * block].max() + 1.0
    to_edge[8 * block : 12 * block] = to_edge[8 * block - 1] - 1.0 - np.arange(4 * block) * 1e-4
    to_edge[12 * block :] = to_edge[8 * block - 1] + 1.0
    negative = base - 150.0 * (np.arange(n) > n // 2)
    for equity in (base, flat, rising, edges, to_edge, negative):
        got = m.compute_metrics(equity, no_trades(), 0, initial_amount=100.0, calendar=calendar_for(times))
        worst, days = ref_drawdown(equity, 100.0, times)
        assert got["max_drawdown"] == pytest.approx(worst, rel=1e-12)
        assert got["max_drawdown_duration"] == pytest.approx(days, rel=1e-12)
        stamps = np.r_[ns(times)[0], ns(times)]
        assert got["max_drawdown_duration"] == pytest.approx(ref_longest_underwater(np.r_[100.0, equity], stamps))


def test_infinite_returns_match_numpy() -> None:
    """An equity of 0 followed by a positive one gives an infinite return: the top quantiles are inf (or NaN where
    numpy's interpolation gives NaN), as np.percentile has them."""
    rng = np.random.default_rng(14)
    equity = 100.0 * np.cumprod(1.0 + rng.normal(0, 0.01, 10_000))
    equity[[3000, 7000]] = 0.0
    r = ref_returns(equity, 100.0).to_numpy()
    assert np.isinf(r).sum() == 2 and not np.isnan(r).any()
    with np.errstate(invalid="ignore"):
        for q in (0.05, 0.5, 0.9999, 1.0):
            var = np.percentile(r, q * 100)
            assert m.value_at_risk(equity, q, initial_amount=100.0) == pytest.approx(var, rel=1e-12, nan_ok=True)
            expected = r[r <= var].mean() if (r <= var).any() else np.nan
            cvar = m.conditional_value_at_risk(equity, q, initial_amount=100.0)
            assert cvar == pytest.approx(expected, rel=1e-9, nan_ok=True)
        times = pd.date_range("2022-01-01", periods=equity.size, freq="h", tz="UTC")
        got = m.compute_metrics(equity, no_trades(), 0, initial_amount=100.0, calendar=calendar_for(times))
        var = np.percentile(r, 5)
        assert got["var_95"] == pytest.approx(var, rel=1e-12)
        assert got["cvar_95"] == pytest.approx(r[r <= var].mean(), rel=1e-9)


def test_scratch_is_reused_without_leaking_between_calls() -> None:
    """compute_metrics keeps one work array per thread: a shorter curve in between, or other threads, change
    nothing."""
    rng = np.random.default_rng(15)
    long_times = pd.date_range("2022-01-01", periods=30_000, freq="h", tz="UTC")
    curves = [10_000.0 * np.cumprod(1.0 + rng.normal(0, 0.004, size)) for size in (30_000, 9_000, 30_000)]

    def metrics(equity: np.ndarray) -> dict[str, float]:
        return m.compute_metrics(equity, no_trades(), 0, initial_amount=10_000.0,
                                 calendar=calendar_for(long_times[: equity.size]))

    first = [metrics(equity) for equity in curves]
    again = [metrics(equity) for equity in reversed(curves)][::-1]
    with ThreadPoolExecutor(max_workers=3) as pool:
        threaded = list(pool.map(metrics, curves))
    for a, b, c in zip(first, again, threaded):
        assert_metrics_equal(b, a, rel=0)
        assert_metrics_equal(c, a, rel=0)


def test_month_with_nan_equity() -> None:
    """A NaN equity at a month end makes best/worst month NaN (as numpy's max/min); the other months still count."""
    times = pd.date_range("2022-01-01", periods=24 * 100, freq="h", tz="UTC")
    equity = 100.0 + np.arange(times.size) * 0.01
    calendar = calendar_for(times)
    equity[calendar.month_last_bar[1]] = np.nan
    got = m.compute_metrics(equity, no_trades(), 0, initial_amount=100.0, calendar=calendar)
    assert math.isnan(got["best_month"]) and math.isnan(got["worst_month"])
    assert got["pct_winning_months"] == pytest.approx(2 / 4)  # Jan and Apr rise; Feb and Mar are NaN returns


# ---------------------------------------------------------------------------------------------------------------------
# CurveScan: the scan the simulation kernel feeds in runs of bars at one equity
# ---------------------------------------------------------------------------------------------------------------------


def feed_runs(scan: m.CurveScan, n_bars: int, starts: np.ndarray, values: np.ndarray, cuts: list[int]) -> None:
    """Hand runs (equity ``values[j]`` from bar ``starts[j]`` to the next start) to a begun scan as the kernel does:
    a block ends after each run index in ``cuts`` or when full; the bars of a run after its first are counted as
    zero returns."""
    arrays = scan.take(n_bars)
    times, month_last, months, year_last, years, stats, counts, returns, tail = arrays
    ends = np.r_[starts[1:], n_bars]
    buffered = 0
    for j, (start, end, value) in enumerate(zip(starts, ends, values)):
        scan.values[buffered + 1] = value
        scan.slots[buffered] = start
        counts[m.COUNT.flat] += end - start - 1
        buffered += 1
        if buffered == m._BLOCK_BARS or j in cuts or j == len(starts) - 1:
            m._scan_block(scan.values, scan.slots, buffered, end, times, stats, counts, returns, tail, month_last,
                          months, year_last, years)
            scan.values[0] = scan.values[buffered]
            buffered = 0


def random_runs(rng: np.random.Generator, n_bars: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of 1..300 bars (most of 1 bar) with a random walk of equity: new peaks, runs at the peak, falls."""
    starts = [0]
    while True:
        step = int(rng.choice([1, 1, 1, 1, rng.integers(2, 300)]))
        if starts[-1] + step >= n_bars:
            break
        starts.append(starts[-1] + step)
    values = 10_000.0 * np.cumprod(1.0 + rng.normal(0.0002, 0.01, len(starts)))
    values[len(values) // 3 : len(values) // 3 + 5] = values[: len(values) // 3].max()  # back at the peak, held
    return np.array(starts), values


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("limit_from", ["first", "tight", "exact"])
def test_scan_of_runs_matches_the_expanded_curve(seed: int, limit_from: str) -> None:
    """A scan fed runs in blocks of random sizes gives the metrics of the curve the runs expand to, computed with
    the pandas references (each run's bars after the first repeat its equity). Limits: none yet (the first backtest
    of a range), one learnt from a previous backtest (tight: only the tail), and exact."""
    rng = np.random.default_rng(seed)
    n = 5000
    times = pd.date_range("2021-12-30", periods=n, freq="h", tz="UTC")
    calendar = calendar_for(times)
    starts, values = random_runs(rng, n)
    equity = np.repeat(values, np.diff(np.r_[starts, n]))
    cuts = sorted(rng.choice(len(starts), size=len(starts) // 20, replace=False).tolist())
    scan = m.CurveScan()
    if limit_from == "tight":  # a previous backtest on the range with the same tail teaches the limit
        scan.begin(calendar, 10_000.0)
        feed_runs(scan, n, starts, values, cuts)
        assert scan.row(no_trades(), 0) is not None
    scan.begin(calendar, 10_000.0, 0.02, exact=limit_from == "exact")
    feed_runs(scan, n, starts, values, cuts)
    row = scan.row(no_trades(), 123)
    assert row is not None
    got = dict(zip(m.METRIC_NAMES, row))
    expected = ref_equity_metrics(equity, 123, 10_000.0, times, HOURS_PER_YEAR, 0.02)
    assert_metrics_equal(got, expected, rel=1e-12)
    assert got["max_drawdown_duration"] == pytest.approx(
        ref_longest_underwater(np.r_[10_000.0, equity], np.r_[ns(times)[0], ns(times)]), rel=1e-12)
    if limit_from == "tight":
        assert scan._counts[m.COUNT.tail] < 0.2 * n  # only a tail was kept


@pytest.mark.parametrize("cut", [None, 10, 11])
def test_scan_drawdown_starts_after_a_run_at_the_peak(cut: int | None) -> None:
    """A new peak held for 200 bars (one run), then a fall: the drawdown starts at the run's last bar (and a run at
    the peak that ends a block, or starts one, moves the peak bar as well)."""
    n = 1000
    times = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    starts = np.r_[np.arange(11), 211 + np.arange(n - 211)]  # run 10: bars 10..210
    values = np.r_[100.0 + np.arange(10), 120.0, 119.0 - np.arange(n - 211) * 0.01]
    values[-1] = 121.0  # recovered at the end
    equity = np.repeat(values, np.diff(np.r_[starts, n]))
    scan = m.CurveScan()
    scan.begin(calendar_for(times), 100.0)
    feed_runs(scan, n, starts, values, [] if cut is None else [cut])
    got = dict(zip(m.METRIC_NAMES, scan.row(no_trades(), 0)))
    worst, days = ref_drawdown(equity, 100.0, times)
    assert days == pytest.approx((n - 1 - 210) / 24)
    assert got["max_drawdown_duration"] == pytest.approx(days, rel=1e-12)
    assert got["max_drawdown"] == pytest.approx(worst, rel=1e-12)


def test_scan_tail_among_zero_returns() -> None:
    """Mostly out of the market: the 5 % quantile falls between the few losses and the many zero returns of flat
    runs (counted, not stored), or on the zeros; as np.percentile has it."""
    n = 4000
    times = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    calendar = calendar_for(times)
    for n_losses in (150, 199, 200, 260):  # k = floor(0.05 * 3999) = 199: below, at and above the zeros
        starts = np.r_[np.arange(n_losses + 1) * 10, np.arange(n_losses * 10 + 10, n)]
        values = 10_000.0 * np.cumprod(np.r_[1.0, np.full(n_losses, 0.999), np.ones(starts.size - n_losses - 1)])
        values[n_losses + 1 :] *= 1.0 + 1e-4 * np.arange(1, starts.size - n_losses)  # gains after
        equity = np.repeat(values, np.diff(np.r_[starts, n]))
        r = ref_returns(equity, 10_000.0).to_numpy()
        for exact in (False, True):
            scan = m.CurveScan()
            scan.begin(calendar, 10_000.0)
            feed_runs(scan, n, starts, values, [])  # first backtest: no limit yet
            scan.begin(calendar, 10_000.0, exact=exact)  # again, with the limit it left (var 0: none)
            feed_runs(scan, n, starts, values, [])
            got = dict(zip(m.METRIC_NAMES, scan.row(no_trades(), 0)))
            var = np.percentile(r, 5)
            assert got["var_95"] == pytest.approx(var, rel=1e-12, abs=0), n_losses
            assert got["cvar_95"] == pytest.approx(r[r <= var].mean(), rel=1e-12), n_losses


def test_scan_limit_too_tight_asks_for_an_exact_run() -> None:
    """A limit learnt from a backtest with a fat tail misses a thin-tailed one: row() says so (None), and the exact
    run gives the reference values. The limit scales with the position size."""
    n = 6000
    times = pd.date_range("2022-01-01", periods=n, freq="h", tz="UTC")
    calendar = calendar_for(times)
    rng = np.random.default_rng(5)
    bars = np.arange(n)
    fat = 10_000.0 * np.cumprod(1.0 + rng.normal(0, 0.01, n))
    thin = 10_000.0 * np.cumprod(1.0 + rng.normal(0, 0.001, n))
    scan = m.CurveScan()
    scan.begin(calendar, 10_000.0)
    feed_runs(scan, n, bars, fat, [])
    scan.row(no_trades(), n)
    scan.begin(calendar, 10_000.0)
    feed_runs(scan, n, bars, thin, [])
    assert scan.row(no_trades(), n) is None
    scan.begin(calendar, 10_000.0, exact=True)
    feed_runs(scan, n, bars, thin, [])
    got = dict(zip(m.METRIC_NAMES, scan.row(no_trades(), n)))
    assert_metrics_equal(got, ref_equity_metrics(thin, n, 10_000.0, times, HOURS_PER_YEAR), rel=1e-12)
    # the same thin tail at a tenth of the size, after the fat one at full size: the limit shrinks with it
    scan.begin(calendar, 10_000.0)
    feed_runs(scan, n, bars, fat, [])
    scan.row(no_trades(), n)
    scan.begin(calendar, 10_000.0, size=0.1)
    fat_returns = np.diff(np.r_[10_000.0, fat]) / np.r_[10_000.0, fat[:-1]]
    feed_runs(scan, n, bars, 10_000.0 * np.cumprod(1.0 + fat_returns / 10), [])
    assert scan.row(no_trades(), n) is not None


def test_exact_scan_counts_infinite_returns() -> None:
    """The one return an exact scan does not store is +inf (an equity of 0 before): with two bars the quantile needs
    it, and comes out as np.percentile has it."""
    times = pd.date_range("2022-01-01", periods=2, freq="h", tz="UTC")
    scan = m.CurveScan()
    scan.begin(calendar_for(times), 100.0, exact=True)
    feed_runs(scan, 2, np.array([0, 1]), np.array([0.0, 100.0]), [])
    got = dict(zip(m.METRIC_NAMES, scan.row(no_trades(), 0)))
    r = ref_returns(np.array([0.0, 100.0]), 100.0).to_numpy()
    assert np.isinf(r[1])
    var = np.percentile(r, 5)
    assert got["var_95"] == var
    assert got["cvar_95"] == r[r <= var].mean()


def test_scan_is_taken_once_per_begin() -> None:
    times = pd.date_range("2022-01-01", periods=10, freq="h", tz="UTC")
    scan = m.CurveScan()
    with pytest.raises(ValueError, match="begun"):
        scan.take(10)
    scan.begin(calendar_for(times), 100.0)
    with pytest.raises(ValueError, match="begun for 10 bars"):
        scan.take(9)
    scan.take(10)
    with pytest.raises(ValueError, match="begun"):
        scan.take(10)
    with pytest.raises(ValueError, match="size"):
        scan.begin(calendar_for(times), 100.0, size=0.0)
