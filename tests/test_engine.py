"""Accounting tests of the simulation kernel (``raybt.engine``).

Every rule of the engine's docstring has a hand-worked example here: the expected numbers are written out as
plain Python arithmetic on the inputs (never computed with raybt code), and every equity value and trade field is
checked to 1e-9 relative. A plain-Python reference loop then checks ``run_backtest`` on two years of hourly data for
50 SMA-crossover parameter sets.

Unless a test says otherwise the examples use one symbol, 1,000 of initial cash and these five bars::

    bar      0     1     2     3     4
    open   10.0  10.2  10.9  11.5  11.0
    high   10.5  11.0  11.6  12.0  11.4
    low     9.8  10.0  10.6  10.9  10.5
    close  10.1  10.8  11.4  11.2  11.1
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numba import njit

import raybt
from raybt import _records as rec
from raybt import _accel, _jit, engine, metrics
from raybt._accel import llvm
from raybt._kernel import stretches
from raybt.engine import CostModel, simulate

NAN = float("nan")
RTOL = 1e-9
ATOL = 1e-9  # only matters where the expected value is 0 (e.g. no fees); cash left after an all-in order is ~1e-13

O = [10.0, 10.2, 10.9, 11.5, 11.0]
H = [10.5, 11.0, 11.6, 12.0, 11.4]
L = [9.8, 10.0, 10.6, 10.9, 10.5]
C = [10.1, 10.8, 11.4, 11.2, 11.1]
STANDARD = (O, H, L, C)

SIGNAL = rec.EXIT_REASONS.index("signal")
STOP_LOSS = rec.EXIT_REASONS.index("stop_loss")
TAKE_PROFIT = rec.EXIT_REASONS.index("take_profit")
TRAILING_STOP = rec.EXIT_REASONS.index("trailing_stop")
OPEN_AT_END = rec.EXIT_REASONS.index("open_at_end")
LONG, SHORT = 1.0, -1.0


# ----------------------------------------------------------------------------------------------------- helpers

def _rows(series) -> np.ndarray:
    """One symbol's list, or a list of per-symbol lists, as a float64 ``(n_symbols, n_bars)`` array."""
    a = np.array(series, dtype=np.float64)
    return a.reshape(1, -1) if a.ndim == 1 else a


def _signal(n_bars: int, *bars_per_symbol) -> np.ndarray:
    """Boolean ``(n_symbols, n_bars)``; each argument lists the bars with a signal for one symbol."""
    out = np.zeros((len(bars_per_symbol), n_bars), dtype=np.bool_)
    for s, bars in enumerate(bars_per_symbol):
        out[s, list(bars)] = True
    return out


def run(prices=STANDARD, entries=(), exits=(), *, initial=1000.0, fees=0.0, fixed_fee=0.0, slippage=0.0,
        fill="close", **rules):
    """Simulate one symbol: ``prices`` = (open, high, low, close) lists; ``entries``/``exits`` = signal bars."""
    o, h, l, c = (_rows(p) for p in prices)
    n = c.shape[1]
    return simulate(o, h, l, c, _signal(n, entries), _signal(n, exits),
                    CostModel(initial, fees, fixed_fee, slippage, fill), **rules)


def assert_close(actual, expected) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=RTOL,
                               atol=ATOL)


def assert_trades(trades: np.ndarray, expected: list[dict]) -> None:
    """Every field of every trade record, in record order."""
    assert trades.shape == (len(expected), rec.N_TRADE_FIELDS), trades
    for row, want in zip(trades, expected):
        assert row[rec.SYMBOL] == want.get("symbol", 0)
        assert row[rec.DIRECTION] == want.get("direction", LONG)
        assert row[rec.ENTRY_BAR] == want["entry_bar"]
        assert row[rec.EXIT_BAR] == want["exit_bar"]
        assert row[rec.REASON] == want["reason"], rec.EXIT_REASONS[int(row[rec.REASON])]
        for field in ("entry_price", "exit_price", "units", "fees", "pnl", "ret"):
            column = rec.RETURN if field == "ret" else getattr(rec, field.upper())
            np.testing.assert_allclose(row[column], want[field], rtol=RTOL, atol=ATOL, err_msg=field)


# ------------------------------------------------------------------------------------------- fills and costs

def test_fill_close_no_costs():
    # Entry on bar 1 fills at bar 1's close (10.8, not bar 2's open 10.9); exit on bar 3 at its close 11.2.
    sim = run(entries=[1], exits=[3])
    units = 1000 / 10.8
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, units * 11.2, units * 11.2])
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=units,
                                    fees=0.0, pnl=units * 11.2 - 1000, ret=(units * 11.2 - 1000) / 1000,
                                    reason=SIGNAL)])
    assert sim.bars_in_market == 2  # position open at the close of bars 1 and 2


def test_fees():
    # All-in with fees: units = cash / (price × (1 + fees)); the exit receives units × price × (1 − fees).
    sim = run(entries=[1], exits=[3], fees=0.001)
    units = 1000 / (10.8 * 1.001)
    proceeds = units * 11.2 * 0.999
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, proceeds, proceeds])
    pnl = proceeds - 1000
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=units,
                                    fees=units * 10.8 * 0.001 + units * 11.2 * 0.001, pnl=pnl, ret=pnl / 1000,
                                    reason=SIGNAL)])


def test_fixed_fee():
    # The fixed fee comes out of the amount invested: units = (1000 − 2) / (10.8 × 1.001); the exit pays it again.
    sim = run(entries=[1], exits=[3], fees=0.001, fixed_fee=2.0)
    units = (1000 - 2) / (10.8 * 1.001)
    proceeds = units * 11.2 * 0.999 - 2
    # After the entry the cash is 1000 − units × 10.8 × 1.001 − 2 = 0.
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, proceeds, proceeds])
    pnl = proceeds - 1000  # committed = units × 10.8 × 1.001 + 2 = 1000
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=units,
                                    fees=units * 10.8 * 0.001 + 2 + units * 11.2 * 0.001 + 2, pnl=pnl,
                                    ret=pnl / 1000, reason=SIGNAL)])


def test_fixed_fee_larger_than_cash_skips_the_order():
    sim = run(entries=[1], exits=[3], fixed_fee=1000.0)  # units = (1000 − 1000) / 10.8 = 0 → skipped
    assert_close(sim.equity, [1000] * 5)
    assert sim.trades.shape == (0, rec.N_TRADE_FIELDS)
    assert sim.bars_in_market == 0


def test_slippage():
    # Buys fill at close × 1.01, sells at close × 0.99; equity is still valued at the raw close.
    sim = run(entries=[1], exits=[3], slippage=0.01)
    buy, sell = 10.8 * 1.01, 11.2 * 0.99
    units = 1000 / buy
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, units * sell, units * sell])
    pnl = units * sell - 1000
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=buy, exit_price=sell, units=units,
                                    fees=0.0, pnl=pnl, ret=pnl / 1000, reason=SIGNAL)])


def test_fill_next_open():
    # Entry signal on bar 1 fills at bar 2's open (10.9); exit signal on bar 3 at bar 4's open (11.0); the entry
    # signal on bar 4 (the last bar) has no next bar and is dropped.
    sim = run(entries=[1, 4], exits=[3], fees=0.001, fill="next_open")
    units = 1000 / (10.9 * 1.001)
    proceeds = units * 11.0 * 0.999
    assert_close(sim.equity, [1000, 1000, units * 11.4, units * 11.2, proceeds])
    pnl = proceeds - 1000
    assert_trades(sim.trades, [dict(entry_bar=2, exit_bar=4, entry_price=10.9, exit_price=11.0, units=units,
                                    fees=units * 10.9 * 0.001 + units * 11.0 * 0.001, pnl=pnl, ret=pnl / 1000,
                                    reason=SIGNAL)])
    assert sim.bars_in_market == 2


def test_fill_next_open_signal_on_last_bar_is_dropped():
    sim = run(entries=[4], fill="next_open")
    assert_close(sim.equity, [1000] * 5)
    assert sim.trades.shape == (0, rec.N_TRADE_FIELDS)


def test_fill_next_open_waits_for_the_symbol_s_next_bar():
    # Bar 1 has no bar for the symbol (NaN open; close carried forward): the entry signal of bar 0 fills at the
    # open of bar 2, the next bar on which the symbol trades.
    prices = ([10.0, NAN, 10.9, 11.5, 11.0], [10.5, NAN, 11.6, 12.0, 11.4], [9.8, NAN, 10.6, 10.9, 10.5],
              [10.1, 10.1, 11.4, 11.2, 11.1])
    sim = run(prices, entries=[0], fill="next_open")
    units = 1000 / 10.9
    assert_close(sim.equity, [1000, 1000, units * 11.4, units * 11.2, units * 11.1])
    assert_trades(sim.trades, [dict(entry_bar=2, exit_bar=4, entry_price=10.9, exit_price=11.1, units=units,
                                    fees=0.0, pnl=units * 11.1 - 1000, ret=(units * 11.1 - 1000) / 1000,
                                    reason=OPEN_AT_END)])


def test_range_and_signal_offset():
    # The fees example run as bars 1..5 of six price bars, with signals computed over two extra leading bars:
    # bar positions in the records are relative to the simulated range.
    o, h, l, c = ([9.0] + O, [9.5] + H, [8.5] + L, [9.2] + C)
    entries, exits = _signal(7, [0, 3]), _signal(7, [1, 5])  # columns 0 and 1 are before the range
    sim = simulate(_rows(o), _rows(h), _rows(l), _rows(c), entries, exits, CostModel(1000, 0.001), first_bar=1,
                   signal_offset=2)
    units = 1000 / (10.8 * 1.001)
    proceeds = units * 11.2 * 0.999
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, proceeds, proceeds])
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=units,
                                    fees=units * 10.8 * 0.001 + units * 11.2 * 0.001, pnl=proceeds - 1000,
                                    ret=(proceeds - 1000) / 1000, reason=SIGNAL)])


# --------------------------------------------------------------------------------------------------- stops

STOP_PRICES = (
    [10.0, 10.1, 9.9, 9.7, 9.6],    # open
    [10.2, 10.3, 10.0, 9.8, 9.9],   # high
    [9.0, 9.95, 9.65, 9.2, 9.4],    # low: bar 0's 9.0 is below the stop but comes before the entry at its close
    [10.0, 10.1, 9.7, 9.6, 9.7],    # close
)


@pytest.mark.parametrize("slippage", [0.0, 0.01])
def test_stop_loss(slippage):
    # Entry at bar 0's close; stop 5 % under the entry fill price. Checked from bar 1 on: bar 0's low (9.0) does
    # not trigger it. Bar 3 opens above the stop (9.7) and its low (9.2) reaches it: fill at the stop price,
    # less slippage (a sell).
    sim = run(STOP_PRICES, entries=[0], exits=[4], slippage=slippage, stop_loss=0.05)
    entry = 10.0 * (1 + slippage)
    units = 1000 / entry
    level = entry * (1 - 0.05)          # 9.5 or 9.595, both below bar 2's low 9.65
    exit_ = level * (1 - slippage)
    assert_close(sim.equity, [units * 10.0, units * 10.1, units * 9.7, units * exit_, units * exit_])
    pnl = units * exit_ - 1000
    # The exit signal on bar 4 comes when flat and is ignored.
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=3, entry_price=entry, exit_price=exit_, units=units,
                                    fees=0.0, pnl=pnl, ret=pnl / 1000, reason=STOP_LOSS)])


def test_stop_loss_with_next_open_fill_is_checked_on_the_fill_bar():
    # Signal on bar 0, fill at bar 1's open 10.0; bar 1's low (9.4) comes after its open and reaches the stop 9.5.
    prices = ([10.0, 10.0, 9.6, 9.7, 9.8], [10.2, 10.1, 9.8, 9.9, 9.9], [9.9, 9.4, 9.5, 9.6, 9.7],
              [10.0, 9.6, 9.7, 9.8, 9.8])
    sim = run(prices, entries=[0], fill="next_open", stop_loss=0.05)
    units = 1000 / 10.0
    assert_close(sim.equity, [1000, units * 9.5, units * 9.5, units * 9.5, units * 9.5])
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=1, entry_price=10.0, exit_price=9.5, units=units,
                                    fees=0.0, pnl=units * 9.5 - 1000, ret=(units * 9.5 - 1000) / 1000,
                                    reason=STOP_LOSS)])


def test_take_profit():
    # Entry at bar 0's close 10.0, target 10 % above: 11.0. Bar 0's high (11.5) is before the entry; bar 1's high
    # (10.8) stays below; bar 2 opens under the target (10.9) and its high (11.3) reaches it: fill at 11.0.
    prices = ([10.0, 10.2, 10.9, 11.2, 11.1], [11.5, 10.8, 11.3, 11.4, 11.3], [9.9, 10.0, 10.7, 11.0, 10.9],
              [10.0, 10.6, 11.1, 11.2, 11.0])
    sim = run(prices, entries=[0], fees=0.001, take_profit=0.1)
    units = 1000 / (10.0 * 1.001)
    proceeds = units * 11.0 * 0.999
    assert_close(sim.equity, [units * 10.0, units * 10.6, proceeds, proceeds, proceeds])
    pnl = proceeds - 1000
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=2, entry_price=10.0, exit_price=11.0, units=units,
                                    fees=units * 10.0 * 0.001 + units * 11.0 * 0.001, pnl=pnl, ret=pnl / 1000,
                                    reason=TAKE_PROFIT)])


def test_stop_loss_comes_before_take_profit_on_the_same_bar():
    # Bar 1 reaches both the stop (9.5) and the target (11.0): the stop is assumed first.
    prices = ([10.0, 10.0, 9.6, 9.7, 9.8], [10.1, 11.2, 9.8, 9.9, 9.9], [9.9, 9.3, 9.5, 9.6, 9.7],
              [10.0, 9.6, 9.7, 9.8, 9.8])
    sim = run(prices, entries=[0], stop_loss=0.05, take_profit=0.1)
    units = 1000 / 10.0
    assert_close(sim.equity, [1000, units * 9.5, units * 9.5, units * 9.5, units * 9.5])
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=1, entry_price=10.0, exit_price=9.5, units=units,
                                    fees=0.0, pnl=units * 9.5 - 1000, ret=(units * 9.5 - 1000) / 1000,
                                    reason=STOP_LOSS)])


def test_trailing_stop():
    # 10 % trailing stop from the highest high since the entry (bar 0's close 10.0), updated after each bar's check:
    #   bar 1: level = 10.0 × 0.9 = 9.0, low 9.5: no;  best high → 10.5
    #   bar 2: level = 10.5 × 0.9 = 9.45, low 9.6: no; best high → 11.5 (bar 2's own high does not count yet,
    #          else the level would be 10.35 and the low 9.6 would trigger)
    #   bar 3: level = 11.5 × 0.9 = 10.35, open 11.3 above it, low 10.2 reaches it: fill at 10.35.
    # Bar 0's high (12.0) comes before the entry at its close and is not part of the best price.
    prices = ([10.0, 10.1, 10.6, 11.3, 10.4], [12.0, 10.5, 11.5, 11.4, 10.6], [9.8, 9.5, 9.6, 10.2, 10.1],
              [10.0, 10.4, 11.2, 10.5, 10.5])
    sim = run(prices, entries=[0], trailing_stop=0.1)
    units = 1000 / 10.0
    exit_ = 11.5 * 0.9
    assert_close(sim.equity, [1000, units * 10.4, units * 11.2, units * exit_, units * exit_])
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=3, entry_price=10.0, exit_price=exit_, units=units,
                                    fees=0.0, pnl=units * exit_ - 1000, ret=(units * exit_ - 1000) / 1000,
                                    reason=TRAILING_STOP)])


def test_gap_through_stop_loss_fills_at_the_open():
    # Stop at 9.5; bar 2 opens at 9.3, already through it: fill at the open, not at the stop price.
    prices = ([10.0, 10.0, 9.3, 9.4, 9.5], [10.1, 10.2, 9.5, 9.6, 9.6], [9.9, 9.8, 9.1, 9.3, 9.4],
              [10.0, 9.9, 9.4, 9.5, 9.5])
    sim = run(prices, entries=[0], stop_loss=0.05)
    units = 1000 / 10.0
    assert_close(sim.equity, [1000, units * 9.9, units * 9.3, units * 9.3, units * 9.3])
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=2, entry_price=10.0, exit_price=9.3, units=units,
                                    fees=0.0, pnl=units * 9.3 - 1000, ret=(units * 9.3 - 1000) / 1000,
                                    reason=STOP_LOSS)])


def test_gap_through_take_profit_fills_at_the_open():
    # Target 11.0; bar 2 opens at 11.4, above it: fill at the open 11.4.
    prices = ([10.0, 10.2, 11.4, 11.3, 11.2], [10.1, 10.9, 11.6, 11.5, 11.3], [9.9, 10.1, 11.2, 11.1, 11.0],
              [10.0, 10.8, 11.3, 11.2, 11.1])
    sim = run(prices, entries=[0], take_profit=0.1)
    units = 1000 / 10.0
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, units * 11.4, units * 11.4])
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=2, entry_price=10.0, exit_price=11.4, units=units,
                                    fees=0.0, pnl=units * 11.4 - 1000, ret=(units * 11.4 - 1000) / 1000,
                                    reason=TAKE_PROFIT)])


def test_short_gap_through_stop_loss_fills_at_the_open():
    # Short at 10.0, stop 5 % above: 10.5. Bar 2 opens at 10.8: buy back at the open.
    # Short-sale equity: 1000 + units × (entry − price).
    prices = ([10.0, 10.0, 10.8, 10.7, 10.6], [10.1, 10.3, 11.0, 10.9, 10.8], [9.9, 9.8, 10.6, 10.5, 10.4],
              [10.0, 10.2, 10.7, 10.6, 10.5])
    sim = run(prices, entries=[0], direction="short", stop_loss=0.05)
    units = 1000 / 10.0
    final = 1000 + units * (10.0 - 10.8)
    assert_close(sim.equity, [1000, 1000 + units * (10.0 - 10.2), final, final, final])
    assert_trades(sim.trades, [dict(direction=SHORT, entry_bar=0, exit_bar=2, entry_price=10.0, exit_price=10.8,
                                    units=units, fees=0.0, pnl=final - 1000, ret=(final - 1000) / 1000,
                                    reason=STOP_LOSS)])


# ---------------------------------------------------------------------------------------------------- short

def test_short_equals_short_sale_accounting():
    # Short entry on bar 1, exit on bar 3, with fees 0.1 %, slippage 0.2 % and a fixed fee of 1. Expected values
    # use the classic short-sale accounting: the sale proceeds go to cash, the position is a liability of
    # units × price, equity = cash − units × close.
    f, s, ff = 0.001, 0.002, 1.0
    sim = run(entries=[1], exits=[3], fees=f, slippage=s, fixed_fee=ff, direction="short")
    sell = 10.8 * (1 - s)                          # a sale fills below the close
    units = (1000 - ff) / (sell * (1 + f))         # sized like any entry
    cash = 1000 + units * sell - units * sell * f - ff
    buy = 11.2 * (1 + s)                           # the buy-back fills above the close
    final_cash = cash - units * buy - units * buy * f - ff
    assert_close(sim.equity, [1000, cash - units * 10.8, cash - units * 11.4, final_cash, final_cash])
    fees = units * sell * f + ff + units * buy * f + ff
    pnl = units * (sell - buy) - fees
    assert pnl == pytest.approx(final_cash - 1000, rel=1e-12)
    committed = units * sell * (1 + f) + ff        # entry value + entry fees
    assert_trades(sim.trades, [dict(direction=SHORT, entry_bar=1, exit_bar=3, entry_price=sell, exit_price=buy,
                                    units=units, fees=fees, pnl=pnl, ret=pnl / committed, reason=SIGNAL)])


# ---------------------------------------------------------------------------------------------- open at end

def test_open_at_end():
    # Entry on bar 2 (buy at 11.4 × 1.01), never exited: marked at the last close 11.1, no exit fee and no slippage,
    # recorded as a trade with reason open_at_end and exit bar = the last bar.
    sim = run(entries=[2], fees=0.001, slippage=0.01)
    buy = 11.4 * 1.01
    units = 1000 / (buy * 1.001)
    assert_close(sim.equity, [1000, 1000, units * 11.4, units * 11.2, units * 11.1])
    pnl = units * 11.1 - 1000
    assert_trades(sim.trades, [dict(entry_bar=2, exit_bar=4, entry_price=buy, exit_price=11.1, units=units,
                                    fees=units * buy * 0.001, pnl=pnl, ret=pnl / 1000, reason=OPEN_AT_END)])
    assert sim.bars_in_market == 3


class FixedSignals(raybt.Strategy):
    """Signals from the module table ``FIXED[case]``: (entries, exits) as bool ``(n_symbols, n_bars)``."""

    case: str = "open_at_end"
    size: float = 1.0

    def signals(self, data):
        entries, exits = FIXED[self.case]
        return entries.T, exits.T  # 2-D signals are (bars, symbols)


FIXED = {
    "open_at_end": (_signal(5, [2]), _signal(5, [])),
    "leading_nan": (_signal(5, [0], [0, 1, 2]), _signal(5, [], [])),
}


def _market(symbols, o, h, l, c) -> raybt.MarketData:
    index = pd.date_range("2024-01-01", periods=len(c[0]), freq="1D", tz="UTC", name="timestamp")
    return raybt.MarketData(index=index, symbols=tuple(symbols), open=_rows(o), high=_rows(h), low=_rows(l),
                            close=_rows(c), volume=np.ones((len(symbols), len(c[0]))))


def test_open_at_end_counts_as_a_trade_in_run_backtest():
    market = _market(["X"], [O], [H], [L], [C])
    bt = raybt.run_backtest(FixedSignals(case="open_at_end"), market, initial_amount=1000, fees=0.001,
                            slippage=0.01)
    units = 1000 / (11.4 * 1.01 * 1.001)
    assert_close(bt.equity.to_numpy(), [1000, 1000, units * 11.4, units * 11.2, units * 11.1])
    assert bt.metrics["n_trades"] == 1
    assert bt.metrics["final_value"] == pytest.approx(units * 11.1, rel=RTOL)
    assert list(bt.trades["exit_reason"]) == ["open_at_end"]
    assert bt.trades["exit_time"].iloc[0] == market.index[4]
    assert bt.trades["exit_price"].iloc[0] == pytest.approx(11.1, rel=RTOL)


# ------------------------------------------------------------------------------------------------ signals

def test_direction_both_reverses():
    # entries on bars 1, 2, 4; exits on bars 2, 3 (bar 2: entry and exit cancel out). Fees 0.1 %.
    #   bar 1: entry → long at 10.8
    #   bar 3: exit  → close the long at 11.2 and go short at 11.2 with all the cash
    #   bar 4: entry → buy back the short at 11.1 and go long at 11.1; still open at the end
    f = 0.001
    sim = run(entries=[1, 2, 4], exits=[2, 3], fees=f, direction="both")
    u1 = 1000 / (10.8 * (1 + f))
    cash3 = u1 * 11.2 * (1 - f)                    # all cash after closing the long
    u2 = cash3 / (11.2 * (1 + f))
    equity3 = cash3 - u2 * 11.2 * f                # short-sale accounting: only the entry fee is lost at 11.2
    pnl2 = u2 * (11.2 - 11.1) - u2 * 11.2 * f - u2 * 11.1 * f
    cash4 = cash3 + pnl2
    u3 = cash4 / (11.1 * (1 + f))
    equity4 = cash4 - u3 * 11.1 * f
    assert_close(sim.equity, [1000, u1 * 10.8, u1 * 11.4, equity3, equity4])
    pnl1 = u1 * 11.2 * (1 - f) - 1000
    assert_trades(sim.trades, [
        dict(direction=LONG, entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=u1,
             fees=u1 * 10.8 * f + u1 * 11.2 * f, pnl=pnl1, ret=pnl1 / 1000, reason=SIGNAL),
        dict(direction=SHORT, entry_bar=3, exit_bar=4, entry_price=11.2, exit_price=11.1, units=u2,
             fees=u2 * 11.2 * f + u2 * 11.1 * f, pnl=pnl2, ret=pnl2 / cash3, reason=SIGNAL),
        dict(direction=LONG, entry_bar=4, exit_bar=4, entry_price=11.1, exit_price=11.1, units=u3,
             fees=u3 * 11.1 * f, pnl=-u3 * 11.1 * f, ret=-u3 * 11.1 * f / cash4, reason=OPEN_AT_END),
    ])


def test_direction_both_reverses_with_next_open():
    # Same signals, filled at the next open: long at bar 2's open 10.9, reversed to short at bar 4's open 11.0
    # (exit signal on bar 3); the entry on bar 4 is on the last bar and is dropped.
    sim = run(entries=[1, 2, 4], exits=[2, 3], direction="both", fill="next_open")
    u1 = 1000 / 10.9
    cash4 = u1 * 11.0
    u2 = cash4 / 11.0
    final = cash4 + u2 * (11.0 - 11.1)
    assert_close(sim.equity, [1000, 1000, u1 * 11.4, u1 * 11.2, final])
    assert_trades(sim.trades, [
        dict(direction=LONG, entry_bar=2, exit_bar=4, entry_price=10.9, exit_price=11.0, units=u1, fees=0.0,
             pnl=cash4 - 1000, ret=(cash4 - 1000) / 1000, reason=SIGNAL),
        dict(direction=SHORT, entry_bar=4, exit_bar=4, entry_price=11.0, exit_price=11.1, units=u2, fees=0.0,
             pnl=final - cash4, ret=(final - cash4) / cash4, reason=OPEN_AT_END),
    ])


def test_ignored_signals_long():
    # exit on bar 0 (flat: ignored), entry on bar 1, entry on bar 2 (already long: ignored), exit on bar 3,
    # exit on bar 4 (flat: ignored).
    sim = run(entries=[1, 2], exits=[0, 3, 4])
    units = 1000 / 10.8
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, units * 11.2, units * 11.2])
    assert_trades(sim.trades, [dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=units,
                                    fees=0.0, pnl=units * 11.2 - 1000, ret=(units * 11.2 - 1000) / 1000,
                                    reason=SIGNAL)])


def test_ignored_signals_short():
    # Same signals with direction "short": exits while flat and the entry while already short are ignored.
    sim = run(entries=[1, 2], exits=[0, 3, 4], direction="short")
    units = 1000 / 10.8
    final = 1000 + units * (10.8 - 11.2)
    assert_close(sim.equity, [1000, 1000, 1000 + units * (10.8 - 11.4), final, final])
    assert_trades(sim.trades, [dict(direction=SHORT, entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2,
                                    units=units, fees=0.0, pnl=final - 1000, ret=(final - 1000) / 1000,
                                    reason=SIGNAL)])


def test_size_fraction_of_equity():
    # size 0.4: invest 40 % of equity (valued at the fill), the rest stays in cash. Fees 0.1 %.
    f = 0.001
    sim = run(entries=[1, 4], exits=[3], fees=f, size=0.4)
    invest1 = 0.4 * 1000
    u1 = invest1 / (10.8 * (1 + f))
    cash1 = 1000 - invest1
    equity3 = cash1 + u1 * 11.2 * (1 - f)
    invest2 = 0.4 * equity3                        # the second entry sizes on the equity after the first trade
    u2 = invest2 / (11.1 * (1 + f))
    cash4 = equity3 - invest2
    assert_close(sim.equity, [1000, cash1 + u1 * 10.8, cash1 + u1 * 11.4, equity3, cash4 + u2 * 11.1])
    pnl1 = u1 * 11.2 * (1 - f) - invest1
    pnl2 = u2 * 11.1 - invest2
    assert_trades(sim.trades, [
        dict(entry_bar=1, exit_bar=3, entry_price=10.8, exit_price=11.2, units=u1,
             fees=u1 * 10.8 * f + u1 * 11.2 * f, pnl=pnl1, ret=pnl1 / invest1, reason=SIGNAL),
        dict(entry_bar=4, exit_bar=4, entry_price=11.1, exit_price=11.1, units=u2, fees=u2 * 11.1 * f,
             pnl=pnl2, ret=pnl2 / invest2, reason=OPEN_AT_END),
    ])


def test_missing_bar_does_not_trade():
    # Bars 1 and 3 do not exist for the symbol (NaN open/high/low, close carried forward): the entry on bar 1 and
    # the exit on bar 3 are ignored; the entry on bar 2 fills at its close and stays open to the end.
    prices = ([10.0, NAN, 10.9, NAN, 11.0], [10.5, NAN, 11.6, NAN, 11.4], [9.8, NAN, 10.6, NAN, 10.5],
              [10.1, 10.1, 11.4, 11.4, 11.1])
    sim = run(prices, entries=[1, 2], exits=[3])
    units = 1000 / 11.4
    assert_close(sim.equity, [1000, 1000, 1000, units * 11.4, units * 11.1])
    assert_trades(sim.trades, [dict(entry_bar=2, exit_bar=4, entry_price=11.4, exit_price=11.1, units=units,
                                    fees=0.0, pnl=units * 11.1 - 1000, ret=(units * 11.1 - 1000) / 1000,
                                    reason=OPEN_AT_END)])


def test_missing_bar_does_not_check_stops():
    # Bar 2 has no bar (its NaN low cannot trigger anything); the stop fills on bar 3 at the stop price.
    prices = ([10.0, 10.0, NAN, 9.7, 9.6], [10.1, 10.2, NAN, 9.8, 9.8], [9.9, 9.8, NAN, 9.2, 9.5],
              [10.0, 9.9, 9.9, 9.6, 9.7])
    sim = run(prices, entries=[0], stop_loss=0.05)
    units = 1000 / 10.0
    assert_close(sim.equity, [1000, units * 9.9, units * 9.9, units * 9.5, units * 9.5])
    assert_trades(sim.trades, [dict(entry_bar=0, exit_bar=3, entry_price=10.0, exit_price=9.5, units=units,
                                    fees=0.0, pnl=units * 9.5 - 1000, ret=(units * 9.5 - 1000) / 1000,
                                    reason=STOP_LOSS)])


# ------------------------------------------------------------------------------------------- several symbols

TWO_SYMBOLS = (
    [[10.0, 10.1, 9.6, 9.9, 10.3], [20.0, 20.5, 21.2, 21.0, 22.2]],   # open
    [[10.2, 10.2, 9.8, 10.1, 10.5], [20.6, 21.3, 21.5, 22.1, 22.6]],  # high
    [[9.9, 9.5, 9.4, 9.7, 10.0], [19.8, 20.3, 20.8, 20.9, 21.9]],     # low
    [[10.0, 9.6, 9.7, 10.1, 10.4], [20.4, 21.0, 21.3, 22.0, 22.5]],   # close
)


def test_two_symbols_share_one_cash_account():
    # size 0.5, fees 0.1 %. A: entry bar 0, exit bar 3, entry again bar 4. B: entry bar 1, open to the end.
    f = 0.001
    o, h, l, c = (_rows(p) for p in TWO_SYMBOLS)
    sim = simulate(o, h, l, c, _signal(5, [0, 4], [1]), _signal(5, [3], []), CostModel(1000, f), size=0.5)
    # bar 0: A gets half of the equity (all cash).
    ua = 500 / (10.0 * (1 + f))
    cash0 = 1000 - 500
    # bar 1: equity at B's fill = cash + A at 9.6; half of it is less than the cash.
    equity_fill1 = cash0 + ua * 9.6
    invest_b = 0.5 * equity_fill1
    assert invest_b < cash0
    ub = invest_b / (21.0 * (1 + f))
    cash1 = cash0 - invest_b
    # bar 3: A exits at 10.1.
    cash3 = cash1 + ua * 10.1 * (1 - f)
    # bar 4: equity at A's second fill = cash + B at 22.5; half of it is more than the cash: invest all the cash.
    equity_fill4 = cash3 + ub * 22.5
    assert 0.5 * equity_fill4 > cash3
    invest_a2 = cash3
    ua2 = invest_a2 / (10.4 * (1 + f))
    cash4 = cash3 - invest_a2
    assert_close(sim.equity, [
        cash0 + ua * 10.0,
        cash1 + ua * 9.6 + ub * 21.0,
        cash1 + ua * 9.7 + ub * 21.3,
        cash3 + ub * 22.0,
        cash4 + ua2 * 10.4 + ub * 22.5,
    ])
    pnl_a = ua * 10.1 * (1 - f) - 500
    pnl_b = ub * 22.5 - invest_b
    pnl_a2 = ua2 * 10.4 - invest_a2
    # Closed trades in the order they close, then the open ones by symbol.
    assert_trades(sim.trades, [
        dict(symbol=0, entry_bar=0, exit_bar=3, entry_price=10.0, exit_price=10.1, units=ua,
             fees=ua * 10.0 * f + ua * 10.1 * f, pnl=pnl_a, ret=pnl_a / 500, reason=SIGNAL),
        dict(symbol=0, entry_bar=4, exit_bar=4, entry_price=10.4, exit_price=10.4, units=ua2,
             fees=ua2 * 10.4 * f, pnl=pnl_a2, ret=pnl_a2 / invest_a2, reason=OPEN_AT_END),
        dict(symbol=1, entry_bar=1, exit_bar=4, entry_price=21.0, exit_price=22.5, units=ub,
             fees=ub * 21.0 * f, pnl=pnl_b, ret=pnl_b / invest_b, reason=OPEN_AT_END),
    ])
    assert sim.bars_in_market == 5


def test_two_symbols_next_open_size_on_equity_at_the_open():
    # fill="next_open", size 0.5, fees 0.1 %. An entry is sized on the equity at the fill moment: other positions
    # valued at this bar's open, or at their last close when their symbol has no bar (A has none at bar 2).
    f = 0.001
    o = [[10.0, 10.1, NAN, 9.9, 9.7], [20.0, 20.5, 21.2, 21.0, 22.2]]
    h = [[10.2, 10.2, NAN, 10.1, 10.0], [20.6, 21.3, 21.5, 22.1, 22.6]]
    l = [[9.9, 9.5, NAN, 9.7, 9.6], [19.8, 20.3, 20.8, 20.9, 21.9]]
    c = [[10.0, 9.6, 9.6, 9.8, 9.9], [20.4, 21.0, 21.3, 22.0, 22.5]]
    # A: entry bar 0 → fills at bar 1's open. B: entry bar 1 → bar 2's open, exit bar 2 → bar 3's open,
    # entry bar 3 → bar 4's open.
    sim = simulate(_rows(o), _rows(h), _rows(l), _rows(c), _signal(5, [0], [1, 3]), _signal(5, [], [2]),
                   CostModel(1000, f, fill="next_open"), size=0.5)
    ua = 0.5 * 1000 / (10.1 * (1 + f))
    cash1 = 1000 - 0.5 * 1000
    equity_fill2 = cash1 + ua * 9.6                 # A has no bar 2: valued at its last close
    invest_b = min(0.5 * equity_fill2, cash1)
    ub = invest_b / (21.2 * (1 + f))
    cash2 = cash1 - invest_b
    cash3 = cash2 + ub * 21.0 * (1 - f)             # B sold at bar 3's open
    equity_fill4 = cash3 + ua * 9.7                 # A valued at bar 4's open (its bar 3 close is 9.8)
    invest_b2 = min(0.5 * equity_fill4, cash3)
    assert invest_b2 < cash3                        # so the valuation of A matters
    ub2 = invest_b2 / (22.2 * (1 + f))
    cash4 = cash3 - invest_b2
    assert_close(sim.equity, [1000, cash1 + ua * 9.6, cash2 + ua * 9.6 + ub * 21.3, cash3 + ua * 9.8,
                              cash4 + ua * 9.9 + ub2 * 22.5])
    pnl_b = ub * 21.0 * (1 - f) - invest_b
    pnl_a = ua * 9.9 - 500
    pnl_b2 = ub2 * 22.5 - invest_b2
    assert_trades(sim.trades, [
        dict(symbol=1, entry_bar=2, exit_bar=3, entry_price=21.2, exit_price=21.0, units=ub,
             fees=ub * 21.2 * f + ub * 21.0 * f, pnl=pnl_b, ret=pnl_b / invest_b, reason=SIGNAL),
        dict(symbol=0, entry_bar=1, exit_bar=4, entry_price=10.1, exit_price=9.9, units=ua, fees=ua * 10.1 * f,
             pnl=pnl_a, ret=pnl_a / 500, reason=OPEN_AT_END),
        dict(symbol=1, entry_bar=4, exit_bar=4, entry_price=22.2, exit_price=22.5, units=ub2,
             fees=ub2 * 22.2 * f, pnl=pnl_b2, ret=pnl_b2 / invest_b2, reason=OPEN_AT_END),
    ])
    assert sim.bars_in_market == 4


# ---------------------------------------------------------------------- exits before entries (shared cash)

def _flat_bars(closes, opens=None) -> list[list[float]]:
    """One symbol's [open, high, low, close] lists: opens default to the closes; high/low 1 % beyond the body."""
    opens = closes if opens is None else opens
    return [list(opens), [max(o, c) * 1.01 for o, c in zip(opens, closes)],
            [min(o, c) * 0.99 for o, c in zip(opens, closes)], list(closes)]


def _simulate_symbols(symbols, entries, exits, costs, **rules):
    """``symbols``: per-symbol [open, high, low, close] lists; ``entries``/``exits``: per-symbol signal bars."""
    o, h, l, c = (_rows([sym[i] for sym in symbols]) for i in range(4))
    n = c.shape[1]
    return simulate(o, h, l, c, _signal(n, *entries), _signal(n, *exits), costs, **rules)


ROTATION_A = _flat_bars([10.0, 11.0, 12.0, 11.0, 10.0, 10.5], opens=[10.0, 10.6, 11.4, 11.8, 10.3, 10.2])
ROTATION_B = _flat_bars([20.0, 19.0, 21.0, 22.0, 23.0, 22.5], opens=[20.0, 19.5, 20.2, 21.5, 22.6, 23.4])


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("a_first", [True, False])
def test_same_bar_rotation_between_two_symbols(fill, a_first):
    # size 1, fees 0.1 %. A: entries on bars 0 and 4, exit on bar 2; B: entry on bar 2, exit on bar 4. On bars 2
    # and 4 one symbol is sold and the other bought with the proceeds, whichever comes first in the data: every
    # exit of a bar fills before any entry. (Before this rule, the entry of the lower-indexed symbol found no cash.)
    f = 0.001
    a, b = (0, 1) if a_first else (1, 0)
    symbols = [ROTATION_A, ROTATION_B] if a_first else [ROTATION_B, ROTATION_A]
    entries = {a: [0, 4], b: [2]}
    exits = {a: [2], b: [4]}
    sim = _simulate_symbols(symbols, [entries[0], entries[1]], [exits[0], exits[1]], CostModel(1000, f, fill=fill))
    if fill == "close":  # at the closes of bars 0, 2 and 4
        pa1, xa1, pb, xb, pa2 = 10.0, 12.0, 21.0, 23.0, 10.0
        ua = 1000 / (pa1 * (1 + f))
        ub = ua * xa1 * (1 - f) / (pb * (1 + f))
        ua2 = ub * xb * (1 - f) / (pa2 * (1 + f))
        equity = [ua * 10.0, ua * 11.0, ub * 21.0, ub * 22.0, ua2 * 10.0, ua2 * 10.5]
        bars = (0, 2, 2, 4, 4)
    else:  # at the opens of bars 1, 3 and 5
        pa1, xa1, pb, xb, pa2 = 10.6, 11.8, 21.5, 23.4, 10.2
        ua = 1000 / (pa1 * (1 + f))
        ub = ua * xa1 * (1 - f) / (pb * (1 + f))
        ua2 = ub * xb * (1 - f) / (pa2 * (1 + f))
        equity = [1000, ua * 11.0, ua * 12.0, ub * 22.0, ub * 23.0, ua2 * 10.5]
        bars = (1, 3, 3, 5, 5)
    assert_close(sim.equity, equity)
    committed_b = ua * xa1 * (1 - f)
    committed_a2 = ub * xb * (1 - f)
    pnl_a, pnl_b, pnl_a2 = committed_b - 1000, committed_a2 - committed_b, ua2 * 10.5 - committed_a2
    assert_trades(sim.trades, [
        dict(symbol=a, entry_bar=bars[0], exit_bar=bars[1], entry_price=pa1, exit_price=xa1, units=ua,
             fees=ua * (pa1 + xa1) * f, pnl=pnl_a, ret=pnl_a / 1000, reason=SIGNAL),
        dict(symbol=b, entry_bar=bars[2], exit_bar=bars[3], entry_price=pb, exit_price=xb, units=ub,
             fees=ub * (pb + xb) * f, pnl=pnl_b, ret=pnl_b / committed_b, reason=SIGNAL),
        dict(symbol=a, entry_bar=bars[4], exit_bar=5, entry_price=pa2, exit_price=10.5, units=ua2,
             fees=ua2 * pa2 * f, pnl=pnl_a2, ret=pnl_a2 / committed_a2, reason=OPEN_AT_END),
    ])
    assert sim.unfunded_entries == 0


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_two_exits_fund_one_entry(fill):
    # size 0.6, fees 0.1 %, three symbols: C (first in the data), A, B. A and B are bought on bar 0 (A gets 60 % of
    # the equity, B the 40 % of cash left); on bar 2 both are sold and C is bought with 60 % of the equity, more
    # than either sale brought in: C's entry needs the cash of both exits of its bar.
    f = 0.001
    c_bars = _flat_bars([5.0, 5.0, 5.0, 5.5], opens=[5.0, 5.0, 5.2, 5.4])
    a_bars = _flat_bars([10.0, 10.0, 9.0, 9.0], opens=[10.0, 10.0, 9.5, 9.0])
    b_bars = _flat_bars([20.0, 20.0, 22.0, 22.0], opens=[20.0, 20.0, 21.0, 22.0])
    sim = _simulate_symbols([c_bars, a_bars, b_bars], [[2], [0], [0]], [[], [2], [2]],
                            CostModel(1000, f, fill=fill), size=0.6)
    if fill == "close":
        pa, pb, xa, xb, pc, t0 = 10.0, 20.0, 9.0, 22.0, 5.0, 0
    else:  # signals of bar 0 fill at bar 1's open, those of bar 2 at bar 3's open
        pa, pb, xa, xb, pc, t0 = 10.0, 20.0, 9.0, 22.0, 5.4, 1
    ua = 600 / (pa * (1 + f))
    cash = 1000 - 600
    equity_at_b = cash + ua * pa
    assert 0.6 * equity_at_b > cash  # B gets all the cash left
    ub = cash / (pb * (1 + f))
    proceeds_a, proceeds_b = ua * xa * (1 - f), ub * xb * (1 - f)
    equity_at_c = proceeds_a + proceeds_b
    invest_c = 0.6 * equity_at_c
    assert invest_c > max(proceeds_a, proceeds_b)  # neither exit alone could fund it
    uc = invest_c / (pc * (1 + f))
    cash_after = equity_at_c - invest_c
    assert_close(sim.trades[:, rec.SYMBOL], [1, 2, 0])
    assert_close(sim.trades[:, rec.UNITS], [ua, ub, uc])
    assert_close(sim.trades[:, rec.ENTRY_BAR], [t0, t0, t0 + 2])
    assert_close(sim.equity[-1], cash_after + uc * 5.5)
    assert sim.unfunded_entries == 0


@pytest.mark.parametrize("fill", ["close", "next_open"])
def test_stop_exit_funds_a_same_bar_entry(fill):
    # size 1, fees 0.1 %. Y (second in the data) is bought at 20 under a 5 % stop loss, which bar 2 reaches within
    # the bar (low 18.5): sold at 19. X (first) has an entry that fills on bar 2, at its close (signal on bar 2) or
    # at its open (signal on bar 1, fill="next_open"), bought with the stop's proceeds.
    f = 0.001
    x = [[10.0, 10.0, 10.2, 10.5], [10.1, 10.1, 10.5, 10.7], [9.9, 9.9, 10.1, 10.4], [10.0, 10.0, 10.4, 10.6]]
    y = [[20.0, 20.0, 20.0, 19.0], [20.1, 20.1, 20.2, 19.2], [19.9, 19.9, 18.5, 18.8], [20.0, 20.0, 19.0, 19.0]]
    x_signal = 2 if fill == "close" else 1
    sim = _simulate_symbols([x, y], [[x_signal], [0]], [[], []], CostModel(1000, f, fill=fill), stop_loss=0.05)
    uy = 1000 / (20.0 * (1 + f))
    proceeds = uy * 19.0 * (1 - f)
    px = 10.4 if fill == "close" else 10.2
    ux = proceeds / (px * (1 + f))
    y_entry = 0 if fill == "close" else 1
    assert_close(sim.equity, [uy * 20.0 if fill == "close" else 1000, uy * 20.0, ux * 10.4, ux * 10.6])
    assert_trades(sim.trades, [
        dict(symbol=1, entry_bar=y_entry, exit_bar=2, entry_price=20.0, exit_price=19.0, units=uy,
             fees=uy * 20.0 * f + uy * 19.0 * f, pnl=proceeds - 1000, ret=(proceeds - 1000) / 1000,
             reason=STOP_LOSS),
        dict(symbol=0, entry_bar=2, exit_bar=3, entry_price=px, exit_price=10.6, units=ux, fees=ux * px * f,
             pnl=ux * 10.6 - proceeds, ret=(ux * 10.6 - proceeds) / proceeds, reason=OPEN_AT_END),
    ])
    assert sim.unfunded_entries == 0


def test_entries_are_funded_in_symbol_order_and_the_rest_counted_as_unfunded():
    # size 1, no costs, three symbols flat at 10, 20 and 40, entry signals for all three on bar 1: the first symbol
    # of the data takes all the cash; the other two entries find none and are counted, not dropped silently. A
    # fixed fee larger than the cash makes a single-symbol entry unfunded too.
    prices = _rows([[10.0] * 3, [20.0] * 3, [40.0] * 3])
    entries = _signal(3, [1], [1], [1])
    sim = simulate(prices, prices, prices, prices, entries, np.zeros_like(entries), CostModel(1000))
    assert list(sim.trades[:, rec.SYMBOL]) == [0.0]
    assert_close(sim.trades[:, rec.UNITS], [100.0])
    assert sim.unfunded_entries == 2
    assert run(entries=[1, 3], exits=[2], fixed_fee=1000.0).unfunded_entries == 2
    assert run(entries=[1, 2], exits=[3]).unfunded_entries == 0  # an entry while positioned is ignored, not unfunded


@pytest.mark.parametrize("price", [10.0, 1.199, 6.174, 8.761])
@pytest.mark.parametrize("direction", ["long", "short"])
def test_all_in_position_leaves_nothing_for_another_symbol(price, direction):
    # size 1: A takes all the cash at bar 0 (a short locks it as collateral), so B's entry at bar 1 has nothing to
    # invest and is skipped (no leverage). At 1.199, 6.174 and 8.761 with fees 0.1 %, 1000 − units × price × 1.001
    # is ~1e-13 in floating point, not 0: that residue must not fund a dust order in B.
    f = 0.001
    units = 1000 / (price * (1 + f))
    if price != 10.0:
        assert 1000 - units * price * (1 + f) > 0  # the rounding residue this case is about
    prices = _rows([[price] * 5, [20.0] * 5])  # A flat at `price`, B flat at 20 (open = high = low = close)
    sim = simulate(prices, prices, prices, prices, _signal(5, [0], [1]), _signal(5, [], []), CostModel(1000, f),
                   direction=direction)
    assert_close(sim.equity, [units * price] * 5)  # = 1000 − the entry fee, long or short
    assert sim.trades.shape == (1, rec.N_TRADE_FIELDS), sim.trades
    assert_trades(sim.trades, [dict(direction=LONG if direction == "long" else SHORT, entry_bar=0, exit_bar=4,
                                    entry_price=price, exit_price=price, units=units, fees=units * price * f,
                                    pnl=-units * price * f, ret=-units * price * f / 1000, reason=OPEN_AT_END)])


LEADING_NAN = (
    [O, [NAN, NAN, 20.0, 20.6, 21.0]],
    [H, [NAN, NAN, 20.8, 21.2, 21.5]],
    [L, [NAN, NAN, 19.7, 20.4, 20.7]],
    [C, [NAN, NAN, 20.5, 21.0, 21.3]],
)


def _leading_nan_expected():
    # size 0.5, no costs. A: entry bar 0 at 10.1. B has no bar before bar 2: its entries on bars 0 and 1 are
    # ignored, the one on bar 2 fills at 20.5. Before its first bar B is not valued (no NaN in the equity).
    ua = 500 / 10.1
    cash0 = 500.0
    equity_fill2 = cash0 + ua * 11.4
    invest_b = min(0.5 * equity_fill2, cash0)      # = the cash: A has risen
    ub = invest_b / 20.5
    cash2 = cash0 - invest_b
    equity = [cash0 + ua * 10.1, cash0 + ua * 10.8, cash2 + ua * 11.4 + ub * 20.5, cash2 + ua * 11.2 + ub * 21.0,
              cash2 + ua * 11.1 + ub * 21.3]
    trades = [
        dict(symbol=0, entry_bar=0, exit_bar=4, entry_price=10.1, exit_price=11.1, units=ua, fees=0.0,
             pnl=ua * 11.1 - 500, ret=(ua * 11.1 - 500) / 500, reason=OPEN_AT_END),
        dict(symbol=1, entry_bar=2, exit_bar=4, entry_price=20.5, exit_price=21.3, units=ub, fees=0.0,
             pnl=ub * 21.3 - invest_b, ret=(ub * 21.3 - invest_b) / invest_b, reason=OPEN_AT_END),
    ]
    return equity, trades


def test_rounding_residue_of_cash_funds_no_dust_order():
    """Size 0.5 of 1,000 in three symbols: symbol 0 leaves 500.00000000000006 of cash (rounding), symbol 1 invests
    0.5 × 1,000 = 500 of it, and the 6e-14 left must not buy a position in symbol 2 (below 1e-9 of equity)."""
    prices = [243.43184405706276, 444.8544293401511, 467.0877144621686]
    x = np.repeat(np.array(prices)[:, None], 3, axis=1)
    entries = _signal(3, [0], [0], [0])
    sim = simulate(x, x, x, x, entries, np.zeros_like(entries), CostModel(1_000.0), size=0.5)
    assert list(sim.trades[:, rec.SYMBOL]) == [0.0, 1.0]  # two open-at-end trades, none for symbol 2
    assert_close(sim.trades[:, rec.UNITS], [500 / prices[0], 500 / prices[1]])
    assert_close(sim.equity, [1_000.0] * 3)


def test_symbol_cannot_trade_before_its_first_bar():
    o, h, l, c = (_rows(p) for p in LEADING_NAN)
    entries, exits = FIXED["leading_nan"]
    sim = simulate(o, h, l, c, entries, exits, CostModel(1000), size=0.5)
    equity, trades = _leading_nan_expected()
    assert_close(sim.equity, equity)
    assert_trades(sim.trades, trades)


def test_symbol_cannot_trade_before_its_first_bar_via_load_ohlcv():
    # The same through load_ohlcv's alignment (B's frame starts two bars later) and run_backtest.
    index = pd.date_range("2024-01-01", periods=5, freq="1D", tz="UTC")
    frames = {
        "A": pd.DataFrame({"open": O, "high": H, "low": L, "close": C}, index=index),
        "B": pd.DataFrame({f: v[1][2:] for f, v in zip(("open", "high", "low", "close"), LEADING_NAN)},
                          index=index[2:]),
    }
    market = raybt.load_ohlcv(frames)
    assert np.isnan(market.close[1, :2]).all() and np.isnan(market.open[1, :2]).all()
    bt = raybt.run_backtest(FixedSignals(case="leading_nan", size=0.5), market, initial_amount=1000)
    equity, trades = _leading_nan_expected()
    assert_close(bt.equity.to_numpy(), equity)
    assert list(bt.trades["symbol"]) == ["A", "B"]
    assert list(bt.trades["entry_time"]) == [index[0], index[2]]
    assert_close(bt.trades["pnl"].to_numpy(), [t["pnl"] for t in trades])


# ------------------------------------------------------------------------------------------------ read-only

def test_read_only_arrays():
    market = _market(["X"], [O], [H], [L], [C])
    assert not market.close.flags.writeable
    entries, exits = _signal(5, [1]), _signal(5, [3])
    entries.setflags(write=False)
    exits.setflags(write=False)
    sim = simulate(market.open, market.high, market.low, market.close, entries, exits, CostModel(1000, 0.001),
                   stop_loss=0.5)
    units = 1000 / (10.8 * 1.001)
    proceeds = units * 11.2 * 0.999
    assert_close(sim.equity, [1000, units * 10.8, units * 11.4, proceeds, proceeds])
    assert sim.trades.shape == (1, rec.N_TRADE_FIELDS)
    # Two read-only symbols (the multi-symbol kernel) give the same as writable copies.
    market2 = _market(["A", "B"], *TWO_SYMBOLS)
    args = (_signal(5, [0, 4], [1]), _signal(5, [3], []), CostModel(1000, 0.001))
    ro = simulate(market2.open, market2.high, market2.low, market2.close, *args, size=0.5)
    rw = simulate(*(np.array(a) for a in (market2.open, market2.high, market2.low, market2.close)), *args, size=0.5)
    np.testing.assert_array_equal(ro.equity, rw.equity)
    np.testing.assert_array_equal(ro.trades, rw.trades)


# ------------------------------------------------------------------------------ reference loop on real sizes

class SmaCross(raybt.Strategy):
    fast: int = 10
    slow: int = 50

    def signals(self, data):
        f = raybt.indicators.sma(data.close, self.fast)
        s = raybt.indicators.sma(data.close, self.slow)
        return raybt.indicators.crossed_above(f, s), raybt.indicators.crossed_below(f, s)


def reference_equity(close, entries, exits, initial, fees, slippage):
    """Long only, all in, fills at the close: the equity at each close, in plain Python."""
    cash, units, equity = initial, 0.0, []
    for price, entry, exit_ in zip(close, entries, exits):
        if units == 0.0 and entry:
            buy = price * (1 + slippage)
            units = cash / (buy * (1 + fees))
            cash -= units * buy * (1 + fees)
        elif units > 0.0 and exit_:
            cash += units * price * (1 - slippage) * (1 - fees)
            units = 0.0
        equity.append(cash + units * price)
    return np.array(equity)


@pytest.fixture(scope="module")
def hourly():
    return raybt.synthetic_ohlcv(["BTC"], "2022-01-01", "2024-01-01", "1h", seed=1)


PARAMS = [(fast, slow) for fast in range(5, 55, 5) for slow in range(60, 210, 30)]


def test_run_backtest_matches_reference_loop(hourly):
    assert len(PARAMS) == 50
    close = hourly["BTC"]["close"]
    assert len(close) == 2 * 365 * 24
    fees, slippage = 0.001, 0.0005
    prices = close.to_list()
    n_with_trades = 0
    for fast, slow in PARAMS:
        f, s = close.rolling(fast).mean(), close.rolling(slow).mean()
        entries = ((f > s) & (f.shift(1) <= s.shift(1))).to_list()
        exits = ((f < s) & (f.shift(1) >= s.shift(1))).to_list()
        expected = reference_equity(prices, entries, exits, 10_000.0, fees, slippage)
        bt = raybt.run_backtest(SmaCross(fast=fast, slow=slow), hourly, initial_amount=10_000, fees=fees,
                                slippage=slippage)
        np.testing.assert_allclose(bt.equity.to_numpy(), expected, rtol=RTOL, atol=0,
                                   err_msg=f"fast={fast} slow={slow}")
        assert bt.metrics["final_value"] == pytest.approx(expected[-1], rel=RTOL, abs=0)
        n_with_trades += len(bt.trades) > 0
    assert n_with_trades == len(PARAMS)


# ----------------------------------------------------------------------------------------------------- workspace

@pytest.mark.parametrize("n_symbols", [1, 3])
def test_workspace_buffers_give_the_same_results_call_after_call(n_symbols):
    """Reused buffers (as sweeps use them) change nothing: a long run, then shorter and busier ones, each equal to
    a run with fresh arrays. The busiest case (a signal on every bar, both directions, tight stops) opens a
    position on nearly every bar, the most the trade buffer is sized for."""
    rng = np.random.default_rng(7)
    n = 400
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (n_symbols, n)), axis=1))
    open_ = close * (1 + rng.normal(0, 0.002, close.shape))
    high = np.maximum(open_, close) * 1.004
    low = np.minimum(open_, close) * 0.996
    workspace = engine.Workspace()
    runs = [
        (n, 0.05, dict()),
        (n // 2, 0.3, dict(direction="both", stop_loss=0.001, take_profit=0.002)),
        (n // 3, 0.6, dict(direction="both", stop_loss=0.0005, trailing_stop=0.001)),
        (n, 0.2, dict(direction="short", take_profit=0.01)),
    ]
    for fill in ("close", "next_open"):
        costs = CostModel(1_000, fees=0.001, fixed_fee=0.01, fill=fill)
        for n_bars, density, rules in runs:
            entries = rng.random((n_symbols, n_bars)) < density
            exits = rng.random((n_symbols, n_bars)) < density
            args = (open_[:, :n_bars], high[:, :n_bars], low[:, :n_bars], close[:, :n_bars], entries, exits, costs)
            fresh = simulate(*args, size=0.5, **rules)
            reused = simulate(*args, size=0.5, workspace=workspace, **rules)
            np.testing.assert_array_equal(reused.equity, fresh.equity)
            np.testing.assert_array_equal(reused.trades, fresh.trades)
            assert reused.bars_in_market == fresh.bars_in_market
            assert len(fresh.trades) > 0


def test_kernel_cache_names_follow_the_compiled_sources(tmp_path):
    """numba invalidates a cached function only when its own file changes; the bar loop takes in the kernel's
    helpers, the metrics scan, the trade record layout and the accelerations from other files, so the names of
    raybt's compiled functions carry a digest of all of them (and of the acceleration mode): editing any gives new
    names, hence a fresh compilation instead of a stale cached kernel."""
    root = Path(raybt.__file__).parent
    compiled = {Path(path).relative_to(root).as_posix() for path in _jit.COMPILED_SOURCES}
    assert {"engine.py", "_kernel/loop.py", "_kernel/stops.py", "metrics/scan.py", "metrics/_base.py",
            "indicators/_columns.py", "_records.py", "_accel/llvm.py", "_accel/__init__.py"} <= compiled
    for kernel in (engine._simulate_one_symbol, engine._simulate_any, metrics._scan_block):
        assert kernel.py_func.__qualname__.endswith("_" + _jit.DIGEST)
    copies = []
    for source in _jit.COMPILED_SOURCES:
        copies.append(tmp_path / str(len(copies)))
        copies[-1].write_bytes(Path(source).read_bytes())
    assert _jit.sources_digest(tuple(map(str, copies)), _accel.MODE) == _jit.DIGEST
    assert _jit.sources_digest(tuple(map(str, copies)), "other mode") != _jit.DIGEST
    copies[0].write_bytes(copies[0].read_bytes() + b"\n")
    assert _jit.sources_digest(tuple(map(str, copies)), _accel.MODE) != _jit.DIGEST


def test_every_caller_shares_one_compiled_bar_loop_per_variant_and_one_metrics_row():
    """A sweep's batch (read-only market data, stacked signals), a replay and a user's own arrays (writable,
    read-only, a non-contiguous slice, float32, a list) all reach the compiled kernels as the same array types: each
    bar-loop variant and the stored-curve metrics row is compiled once, not once per writability or layout (each
    bar loop takes seconds to compile)."""
    market = raybt.synthetic_ohlcv(["A", "B"], "2023-01-01", "2023-01-20", "1h", seed=3)
    for data in (market.symbol_data("A"), market):
        raybt.run_backtests([_Alternate(every=3), _Alternate(every=4)], data, show_progress=False)
    prices = np.linspace(10.0, 12.0, 2 * 60).reshape(2, 60)
    signals = np.zeros((2, 60), dtype=bool)
    signals[:, ::7] = True
    frozen = prices.copy()
    frozen.setflags(write=False)
    costs = CostModel(fees=0.001)
    for p, e in ((prices, signals), (frozen, signals), (prices[:, 5:], signals[:, 5:]), (prices.astype(np.float32),
                                                                                        signals)):
        for rows in (slice(0, 1), slice(0, 2)):
            sim = simulate(p[rows], p[rows], p[rows], p[rows], e[rows], ~e[rows], costs)
            calendar = metrics.RangeCalendar.build(np.arange(sim.equity.size, dtype=np.int64) * 3_600_000_000_000,
                                                   np.asarray(p[0, -sim.equity.size:], dtype=np.float64))
            metrics.compute_metrics(sim.equity, sim.trades, sim.bars_in_market, initial_amount=1000.0,
                                    calendar=calendar)
            metrics.compute_metrics(list(sim.equity), sim.trades.copy(), sim.bars_in_market, initial_amount=1000.0,
                                    calendar=calendar)
    for kernel in (engine._simulate_one_symbol, engine._simulate_any, metrics.compute._metrics_row):
        assert len(kernel.signatures) == 1, (kernel.py_func.__name__, kernel.signatures)


class _Alternate(raybt.Strategy):
    every: int = 3

    def signals(self, data):
        bar = pd.Series(np.arange(len(data.close)), index=data.close.index)
        return (pd.DataFrame({c: bar % self.every == 0 for c in data.close.columns}),
                pd.DataFrame({c: bar % self.every == 1 for c in data.close.columns}))


def _first_signal_reference(entries: np.ndarray, exits: np.ndarray, q: int, stop: int) -> int:
    hits = np.flatnonzero((entries[:, q:stop] | exits[:, q:stop]).any(axis=0))
    return q + int(hits[0]) if hits.size else stop


@pytest.mark.parametrize("n_symbols", [1, 3])
def test_signal_scan_finds_the_first_signal_from_any_start(n_symbols):
    """The bar loop's signal scan tests _SIGNAL_LANES (32) columns per vector compare and the last few one by one:
    from every start and to several stops, it finds the first column with an entry or exit of any symbol, as
    numpy's flatnonzero does; signals on lane boundaries (31, 32, 63, 64), in the last column and in the last symbol
    only included."""
    lanes = llvm.SIGNAL_LANES
    scan = njit(stretches._next_signal)  # the module's generic version (_N_SYMBOLS = 0: the count from the arrays)
    rng = np.random.default_rng(7)
    for n in (0, 1, lanes - 1, lanes, lanes + 1, 2 * lanes, 2 * lanes + 1, 4 * lanes + 2):
        for density in (0.0, 0.02, 0.3):
            entries = rng.random((n_symbols, n)) < density
            exits = rng.random((n_symbols, n)) < density
            for column in (lanes - 1, lanes, 2 * lanes - 1, 2 * lanes, n - 1):
                if 0 <= column < n:
                    (entries if column % 2 else exits)[n_symbols - 1, column] = True
            for q in range(n + 1):
                for stop in {q, min(n, q + 1), min(n, q + lanes), min(n, q + lanes + 1), n}:
                    assert scan(entries, exits, q, stop) == _first_signal_reference(entries, exits, q, stop), \
                        (n, density, q, stop)


def test_signals_on_lane_boundaries_and_the_last_bar_trade_there():
    """Entries and exits on the columns around the signal scan's 32-bar vectors trade on exactly those bars."""
    n = 100
    close = [100.0 + i for i in range(n)]
    prices = (close, close, close, close)
    entries, exits = (0, 31, 63, 96), (30, 32, 64, 99)
    sim = run(prices, entries, exits)
    assert sim.trades[:, rec.ENTRY_BAR].tolist() == list(entries)
    assert sim.trades[:, rec.EXIT_BAR].tolist() == list(exits)
