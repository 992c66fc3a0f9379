"""The bar loop of the simulation kernel (rules in :mod:`raybt.engine`; compiled by :func:`raybt.engine._compile`)."""

from __future__ import annotations

import numpy as np

from raybt import _records as rec
from raybt._kernel.orders import _close, _fill_entries, _position_value, _record, _signal_order
from raybt._kernel.state import POS, _N_SYMBOLS
from raybt._kernel.stops import _check_stop, _next_stop_watch
from raybt._kernel.stretches import _buffer_run, _buffer_stretch, _flush, _next_signal, _value_stretch


def _bar_loop(open_, high, low, close, entries, exits, bar0, n_bars, sig0, initial_cash, size, direction, fees,
              fixed_fee, slippage, next_open, stop_loss, take_profit, trailing_stop, curve, trades, state, pending,
              values, slots, scan):
    """Simulate one backtest: the bar loop (compiled by :func:`raybt.engine._compile`, with the helpers it calls).

    On simulated bar ``r``: (1) the exits queued by the previous bar's signals fill at the open, (2) stops are checked
    intrabar, (3) the entries queued by the previous bar's signals fill at the open (their stops checked on this bar
    too), (4) this bar's signal exits fill at the close, then its entries, or they are queued; then (5) equity is
    valued at the close of ``r`` and of every following bar on which nothing can happen (no signal, no queued order,
    no stop triggering), and the loop jumps to the next bar that needs attention (found by the signal scan or the
    stop watch, the stretch valued in one vectorised pass). With a metrics scan the equity goes to a buffer of runs (a
    stretch with nothing open is one run, its equity being the cash), handed to the scan block by block, and to
    ``curve`` unless it is empty; without, the equity is stored to ``curve`` directly. Nothing is allocated here.

    Args:
        open_, high, low, close: float64 ``(n_symbols, n_price_bars)`` prices (NaN open: no bar for that symbol).
        entries, exits: C-contiguous bool ``(n_symbols, n_signal_bars)`` signals.
        bar0, n_bars, sig0: simulated bar ``r`` reads prices at ``bar0 + r`` and signals at ``sig0 + r``.
        initial_cash, size, direction: cash to start with; fraction of equity per entry; direction code
            (``raybt._kernel.state._LONG_ONLY`` ...).
        fees, fixed_fee, slippage, next_open: costs (a fraction of traded value, quote currency per order, a
            fraction of the price) and fill timing.
        stop_loss, take_profit, trailing_stop: fractions of the entry price, NaN when off.
        curve: float64 equity per bar, written; empty to keep none (then ``scan`` must be a real one).
        trades: float64 ``(rows, N_TRADE_FIELDS)`` records (:mod:`raybt._records`), room for one per symbol and bar.
        state: float64 ``(len(POS), n_symbols)``, rows :class:`~raybt._kernel.state.PositionRows`, zeroed.
        pending: bool ``(2, n_symbols)``, entry and exit queued for the next open, zeroed.
        values, slots: the run buffer: equity of each run (``values[0]`` the previous one) and its first bar.
        scan: a :class:`~raybt.metrics.ScanArrays` (from a :class:`~raybt.metrics.CurveScan`), or one with empty
            ``stats`` for no scan.

    Returns:
        ``(n_trades, bars_in_market, n_unfunded)``: trade rows written, bars with a position open at the close,
        entries skipped for want of cash.
    """
    n_symbols = close.shape[0] if _N_SYMBOLS == 0 else _N_SYMBOLS
    has_stops = not (np.isnan(stop_loss) and np.isnan(take_profit) and np.isnan(trailing_stop))
    cash = initial_cash
    n_pending = 0
    n_open = 0
    n_trades = 0
    n_unfunded = 0
    bars_in_market = 0
    scanning = scan.stats.size > 0  # else the curve is stored directly
    n_buffered = 0  # runs of bars at one equity each in values[1:] / slots, not yet handed to the scan
    r = 0
    while r < n_bars:
        p = bar0 + r
        q = sig0 + r
        # Exits before entries (sells before buys): every exit of every symbol on this bar (queued signal exits and
        # reversals at the open, stops, signal exits at the close) fills before any entry, so the entries can spend
        # the cash those exits free; the exit pass records the entries it decides in state[POS.order].
        n_orders = 0
        if n_pending > 0:
            for s in range(n_symbols):
                if (pending[0, s] or pending[1, s]) and not np.isnan(open_[s, p]):
                    side = state[POS.side, s] if state[POS.units, s] > 0.0 else 0.0
                    close_it, open_side = _signal_order(pending[0, s], pending[1, s], side, direction)
                    if close_it:
                        cash = _close(s, open_[s, p], r, rec.EXIT_SIGNAL, cash, state, fees, fixed_fee, slippage,
                                      trades, n_trades)
                        n_trades += 1
                        n_open -= 1
                    if open_side != 0.0:
                        state[POS.order, s] = open_side
                        n_orders += 1
                    pending[0, s] = False
                    pending[1, s] = False
                    n_pending -= 1
        if has_stops and n_open > 0:
            for s in range(n_symbols):
                if state[POS.units, s] > 0.0 and r >= state[POS.stops_from, s] and not np.isnan(open_[s, p]):
                    cash, closed = _check_stop(s, p, r, cash, state, open_, high, low, stop_loss, take_profit,
                                               trailing_stop, fees, fixed_fee, slippage, trades, n_trades)
                    if closed:
                        n_trades += 1
                        n_open -= 1
        if n_orders > 0:  # queued entries fill at the open ...
            cash, opened, unfunded = _fill_entries(n_symbols, p, r, True, open_, close, cash, state, size, fees,
                                                   fixed_fee, slippage)
            n_open += opened
            n_unfunded += unfunded
            if has_stops and opened > 0:  # ... and their stops are watched from the fill bar on (its high/low
                for s in range(n_symbols):  # come after its open)
                    if state[POS.units, s] > 0.0 and state[POS.entry_bar, s] == r:
                        cash, closed = _check_stop(s, p, r, cash, state, open_, high, low, stop_loss, take_profit,
                                                   trailing_stop, fees, fixed_fee, slippage, trades, n_trades)
                        if closed:
                            n_trades += 1
                            n_open -= 1
            n_orders = 0
        for s in range(n_symbols):
            if not (entries[s, q] or exits[s, q]) or np.isnan(open_[s, p]):
                continue
            if next_open:
                if r + 1 < n_bars:
                    n_pending += not (pending[0, s] or pending[1, s])
                    pending[0, s] = entries[s, q]
                    pending[1, s] = exits[s, q]
                continue
            side = state[POS.side, s] if state[POS.units, s] > 0.0 else 0.0
            close_it, open_side = _signal_order(entries[s, q], exits[s, q], side, direction)
            if close_it:
                cash = _close(s, close[s, p], r, rec.EXIT_SIGNAL, cash, state, fees, fixed_fee, slippage, trades,
                              n_trades)
                n_trades += 1
                n_open -= 1
            if open_side != 0.0:
                state[POS.order, s] = open_side
                n_orders += 1
        if n_orders > 0:
            cash, opened, unfunded = _fill_entries(n_symbols, p, r, False, open_, close, cash, state, size, fees,
                                                   fixed_fee, slippage)
            n_open += opened
            n_unfunded += unfunded
        # The next bar that needs attention: the next one if an order is queued or a stop is watched, else the
        # next bar with a signal.
        following = r + 1
        if n_pending == 0 and following < n_bars:
            if has_stops and n_open > 0:
                following = _next_stop_watch(entries, exits, open_, high, low, state, bar0, sig0, following, n_bars,
                                             stop_loss, take_profit, trailing_stop)
            else:
                following = _next_signal(entries, exits, sig0 + following, sig0 + n_bars) - sig0
        if n_open > 0:
            bars_in_market += following - r
        if following == r + 1:
            value = cash
            if n_open > 0:
                for s in range(n_symbols):
                    if state[POS.units, s] > 0.0:
                        value += _position_value(state[POS.units, s], state[POS.side, s], state[POS.entry, s],
                                                 close[s, p])
            if scanning:
                n_buffered = _buffer_run(value, r, following, n_buffered, values, slots, curve, scan)
            else:
                curve[r] = value
        elif not scanning:
            _value_stretch(curve, r, r, following, bar0, cash, close, state, slots[:0])
        elif n_open == 0:  # a stretch with nothing open: one run
            n_buffered = _buffer_run(cash, r, following, n_buffered, values, slots, curve, scan)
        else:
            n_buffered = _buffer_stretch(r, following, n_buffered, bar0, cash, close, state, values, slots, curve,
                                         scan)
        r = following
    if n_buffered > 0:
        _flush(values, slots, n_buffered, n_bars, scan)
    # Positions still open: marked to market at the last close, no exit fee.
    last = bar0 + n_bars - 1
    for s in range(n_symbols):
        units = state[POS.units, s]
        if units > 0.0:
            marked = _position_value(units, state[POS.side, s], state[POS.entry, s], close[s, last])
            pnl = marked - state[POS.committed, s]
            _record(trades, n_trades, s, state[POS.side, s], state[POS.entry_bar, s], n_bars - 1, state[POS.entry, s],
                    close[s, last], units, state[POS.entry_fees, s], pnl, pnl / state[POS.committed, s],
                    rec.EXIT_OPEN_AT_END)
            n_trades += 1
    return n_trades, bars_in_market, n_unfunded
