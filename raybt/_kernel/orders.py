"""Opening and closing positions and recording trades: the order arithmetic of :mod:`raybt.engine`."""

from __future__ import annotations

import numpy as np

from raybt import _records as rec
from raybt._kernel.state import POS, _DUST, _LONG_ONLY, _SHORT_ONLY, _helper


@_helper
def _position_value(units: float, side: float, entry: float, price: float) -> float:
    """Value at ``price`` of ``units`` held long (``side`` > 0) or short (entry collateral plus the short's gain)."""
    if side > 0:
        return units * price
    return 2.0 * units * entry - units * price


@_helper
def _equity_at(cash, state, open_, close, p, at_open):
    """Cash plus every position valued at price bar ``p``: at its open for fills at the open (the previous close
    if the symbol has no bar there), else at its close."""
    equity = cash
    for s in range(state.shape[1]):
        if state[POS.units, s] > 0.0:
            price = close[s, p]
            if at_open:
                price = open_[s, p] if not np.isnan(open_[s, p]) else close[s, p - 1]
            equity += _position_value(state[POS.units, s], state[POS.side, s], state[POS.entry, s], price)
    return equity


@_helper
def _open(s, side, p, r, at_open, open_, close, cash, state, size, fees, fixed_fee, slippage):
    """Open a position in symbol ``s`` at price bar ``p`` (simulated bar ``r``), its open or close; returns cash."""
    raw_price = open_[s, p] if at_open else close[s, p]
    price = raw_price * (1.0 + slippage) if side > 0 else raw_price * (1.0 - slippage)
    equity = _equity_at(cash, state, open_, close, p, at_open)
    invest = min(size * equity, cash)
    n = (invest - fixed_fee) / (price * (1.0 + fees))
    if not n > 0.0 or invest < _DUST * equity:
        return cash
    cost = n * price * (1.0 + fees) + fixed_fee
    state[POS.units, s] = n
    state[POS.side, s] = side
    state[POS.entry, s] = price
    state[POS.entry_bar, s] = r
    state[POS.committed, s] = cost
    state[POS.entry_fees, s] = n * price * fees + fixed_fee
    state[POS.extreme, s] = price
    state[POS.stops_from, s] = r if at_open else r + 1
    if invest == cash:
        return 0.0  # all the cash is spent: no rounding residue (~1e-13) left to fund a dust order elsewhere
    return cash - cost


@_helper
def _close(s, raw_price, r, reason, cash, state, fees, fixed_fee, slippage, trades, n_trades):
    """Close symbol ``s``'s position at ``raw_price`` (before slippage) on simulated bar ``r``, record the trade;
    returns the new cash."""
    side = state[POS.side, s]
    price = raw_price * (1.0 - slippage) if side > 0 else raw_price * (1.0 + slippage)
    n = state[POS.units, s]
    exit_fees = n * price * fees + fixed_fee
    proceeds = _position_value(n, side, state[POS.entry, s], price) - exit_fees
    pnl = proceeds - state[POS.committed, s]
    _record(trades, n_trades, s, side, state[POS.entry_bar, s], r, state[POS.entry, s], price, n,
            state[POS.entry_fees, s] + exit_fees, pnl, pnl / state[POS.committed, s], reason)
    state[POS.units, s] = 0.0
    return cash + proceeds


@_helper
def _record(trades, i, s, side, entry_bar, exit_bar, entry, exit_, units, fees, pnl, ret, reason):
    trades[i, rec.SYMBOL] = s
    trades[i, rec.DIRECTION] = side
    trades[i, rec.ENTRY_BAR] = entry_bar
    trades[i, rec.EXIT_BAR] = exit_bar
    trades[i, rec.ENTRY_PRICE] = entry
    trades[i, rec.EXIT_PRICE] = exit_
    trades[i, rec.UNITS] = units
    trades[i, rec.FEES] = fees
    trades[i, rec.PNL] = pnl
    trades[i, rec.RETURN] = ret
    trades[i, rec.REASON] = reason


@_helper
def _signal_order(is_entry: bool, is_exit: bool, side: float, direction: int) -> tuple:
    """Decide ``(close_position, open_side)`` for one symbol's signals given its current side (0 = flat).
    ``open_side`` is +1 / -1 to open a long / short, 0 for nothing."""
    if direction == _LONG_ONLY:
        if side > 0:
            return is_exit, 0.0
        return False, 1.0 if is_entry else 0.0
    if direction == _SHORT_ONLY:
        if side < 0:
            return is_exit, 0.0
        return False, -1.0 if is_entry else 0.0
    if is_entry == is_exit:
        return False, 0.0
    if is_entry:
        return side < 0, 0.0 if side > 0 else 1.0
    return side > 0, 0.0 if side < 0 else -1.0


@_helper
def _fill_entries(n_symbols, p, r, at_open, open_, close, cash, state, size, fees, fixed_fee, slippage):
    """The entry pass of a bar: open every entry the exit pass decided (``state[POS.order]``), in symbol order (the
    column order of the data), each sized on the equity at that moment. Returns ``(cash, opened, unfunded)``:
    positions opened, and entries skipped because the cash left could not fund them."""
    opened = 0
    unfunded = 0
    for s in range(n_symbols):
        side = state[POS.order, s]
        if side != 0.0:
            state[POS.order, s] = 0.0
            cash = _open(s, side, p, r, at_open, open_, close, cash, state, size, fees, fixed_fee, slippage)
            if state[POS.units, s] > 0.0:
                opened += 1
            else:
                unfunded += 1
    return cash, opened, unfunded
