"""Stops: levels, intrabar fills, and the watch over the bars on which nothing else happens (see
:mod:`raybt.engine`)."""

from __future__ import annotations

import numpy as np

from raybt import _records as rec
from raybt._kernel.orders import _close
from raybt._kernel.state import POS, _N_SYMBOLS, _helper
from raybt._kernel.stretches import _next_signal


@_helper
def _check_stop(s, p, r, cash, state, open_, high, low, stop_loss, take_profit, trailing_stop, fees, fixed_fee,
                slippage, trades, n_trades):
    """Check symbol ``s``'s open position against its stops on price bar ``p`` (simulated bar ``r``): close it
    at the stop's fill if one triggers, else move its extreme (for the trailing stop). Returns ``(cash, closed)``."""
    side = state[POS.side, s]
    level, reason, target = _stop_levels(side, state[POS.entry, s], state[POS.extreme, s], stop_loss, take_profit,
                                         trailing_stop)
    fill, why = _stop_fill(side, open_[s, p], high[s, p], low[s, p], level, reason, target)
    if not np.isnan(fill):
        return _close(s, fill, r, why, cash, state, fees, fixed_fee, slippage, trades, n_trades), True
    if side > 0:
        state[POS.extreme, s] = max(state[POS.extreme, s], high[s, p])
    else:
        state[POS.extreme, s] = min(state[POS.extreme, s], low[s, p])
    return cash, False


@_helper
def _stop_levels(side, entry, extreme, stop_loss, take_profit, trailing_stop):
    """The adverse stop level in force (stop loss or trailing stop, whichever is nearer), its reason code, and the
    take-profit level (NaN when off)."""
    level = np.nan
    reason = rec.EXIT_STOP_LOSS
    if not np.isnan(stop_loss):
        level = entry * (1.0 - stop_loss) if side > 0 else entry * (1.0 + stop_loss)
    if not np.isnan(trailing_stop):
        trail = extreme * (1.0 - trailing_stop) if side > 0 else extreme * (1.0 + trailing_stop)
        if np.isnan(level) or (side > 0 and trail > level) or (side < 0 and trail < level):
            level = trail
            reason = rec.EXIT_TRAILING_STOP
    target = np.nan
    if not np.isnan(take_profit):
        target = entry * (1.0 + take_profit) if side > 0 else entry * (1.0 - take_profit)
    return level, reason, target


@_helper
def _stop_fill(side, open_, high, low, level, reason, target):
    """Raw fill price (before slippage) and reason if a stop triggers on this bar, else ``(nan, 0)``."""
    if side > 0:
        if open_ <= level:
            return open_, reason
        if open_ >= target:
            return open_, rec.EXIT_TAKE_PROFIT
        if low <= level:
            return level, reason
        if high >= target:
            return target, rec.EXIT_TAKE_PROFIT
    else:
        if open_ >= level:
            return open_, reason
        if open_ <= target:
            return open_, rec.EXIT_TAKE_PROFIT
        if high >= level:
            return level, reason
        if low <= target:
            return target, rec.EXIT_TAKE_PROFIT
    return np.nan, 0


@_helper
def _stop_scan(open_, high, low, state, s, p0, p1, stop_loss, take_profit, trailing_stop, keep_extreme):
    """The first price bar in ``p0:p1`` on which a stop of symbol ``s``'s open position triggers (``p1`` if none);
    with ``keep_extreme`` the position's extreme (for trailing stops) moves over the bars before it, as the bar loop
    would move it. The same levels and tests as :func:`_stop_levels` and :func:`_stop_fill` (identical arithmetic),
    in a tight loop: an absent stop is an infinite level; missing bars (NaN open) are skipped."""
    side = state[POS.side, s]
    entry = state[POS.entry, s]
    extreme = state[POS.extreme, s]
    if side > 0:
        fixed = entry * (1.0 - stop_loss) if not np.isnan(stop_loss) else -np.inf
        target = entry * (1.0 + take_profit)
        for p in range(p0, p1):
            trail = extreme * (1.0 - trailing_stop)
            level = trail if trail > fixed else fixed
            price = open_[s, p]
            if price <= level or price >= target or low[s, p] <= level or high[s, p] >= target:
                p1 = p
                break
            if high[s, p] > extreme and not np.isnan(price):
                extreme = high[s, p]
    else:
        fixed = entry * (1.0 + stop_loss) if not np.isnan(stop_loss) else np.inf
        target = entry * (1.0 - take_profit)
        for p in range(p0, p1):
            trail = extreme * (1.0 + trailing_stop)
            level = trail if trail < fixed else fixed
            price = open_[s, p]
            if price >= level or price <= target or high[s, p] >= level or low[s, p] <= target:
                p1 = p
                break
            if low[s, p] < extreme and not np.isnan(price):
                extreme = low[s, p]
    if keep_extreme:
        state[POS.extreme, s] = extreme
    return p1


def _next_stop_watch(entries, exits, open_, high, low, state, bar0, sig0, r, n_bars, stop_loss, take_profit,
                     trailing_stop):
    """With positions open under stops and no order queued: the first bar from ``r`` that the bar loop must see, the
    next bar with a signal or an earlier one on which a stop triggers. The positions' extremes move over the bars
    passed, as the bar loop would move them (with several symbols a second scan, once the first bar is known)."""
    n_symbols = state.shape[1] if _N_SYMBOLS == 0 else _N_SYMBOLS
    first = _next_signal(entries, exits, sig0 + r, sig0 + n_bars) - sig0
    for s in range(n_symbols):
        if state[POS.units, s] > 0.0:
            first = _stop_scan(open_, high, low, state, s, bar0 + r, bar0 + first, stop_loss, take_profit,
                               trailing_stop, n_symbols == 1) - bar0
    if n_symbols > 1:
        for s in range(n_symbols):
            if state[POS.units, s] > 0.0:
                _stop_scan(open_, high, low, state, s, bar0 + r, bar0 + first, stop_loss, take_profit, trailing_stop,
                           True)
    return first
