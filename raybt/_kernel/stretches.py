"""The signal scan, and the valuation of stretches of bars on which positions stay unchanged (see
:mod:`raybt.engine`)."""

from __future__ import annotations

import numpy as np

from raybt._accel.llvm import SIGNAL_LANES, lowest_set_bit, signal_mask
from raybt._kernel.state import POS, _N_SYMBOLS, _helper
from raybt.metrics import COUNT, _BLOCK_BARS, _scan_block


def _next_signal(entries, exits, q, stop):
    """First signal column in ``q:stop`` with an entry or exit for any symbol (``stop`` if none), SIGNAL_LANES columns
    at a time (:func:`~raybt._accel.llvm.signal_mask`, the first hit by :func:`~raybt._accel.llvm.lowest_set_bit`); the
    last columns, fewer than that, one by one. ``entries``/``exits``: C-contiguous (``simulate`` makes them so)."""
    n_symbols = entries.shape[0] if _N_SYMBOLS == 0 else _N_SYMBOLS
    while q + SIGNAL_LANES <= stop:
        column = np.uint64(q)
        mask = signal_mask(entries, exits, 0, column)
        for s in range(1, n_symbols):
            mask |= signal_mask(entries, exits, s, column)
        if mask != 0:
            return q + np.int64(lowest_set_bit(mask))
        q += SIGNAL_LANES
    while q < stop:
        for s in range(n_symbols):
            if entries[s, q] or exits[s, q]:
                return q
        q += 1
    return stop


def _value_stretch(out, j0, r0, r1, bar0, cash, close, state, slots):
    """Equity at the close of simulated bars ``r0:r1``, while positions stay unchanged, to ``out[j0:]``, and the bars
    themselves to ``slots[j0 - 1:]`` unless ``slots`` is empty (one-bar runs of a buffer, see :func:`_bar_loop`).
    Row-wise and vectorised, in one pass with one symbol; the same arithmetic as :func:`_position_value`. Indices
    are unsigned so numba emits no negative-index wraparound, which would block vectorisation."""
    shift = np.uint64(j0) - np.uint64(r0)
    prices = np.uint64(bar0)
    if _N_SYMBOLS == 1 and state[POS.units, 0] > 0.0:
        units = state[POS.units, 0]
        offset = 0.0 if state[POS.side, 0] > 0 else 2.0 * units * state[POS.entry, 0]
        slope = units if state[POS.side, 0] > 0 else -units
        if slots.size > 0:
            for r in range(np.uint64(r0), np.uint64(r1)):
                out[r + shift] = cash + (offset + slope * close[0, r + prices])
                slots[r + shift - np.uint64(1)] = r
        else:
            for r in range(np.uint64(r0), np.uint64(r1)):
                out[r + shift] = cash + (offset + slope * close[0, r + prices])
        return
    for r in range(np.uint64(r0), np.uint64(r1)):
        out[r + shift] = cash
    if slots.size > 0:
        for r in range(np.uint64(r0), np.uint64(r1)):
            slots[r + shift - np.uint64(1)] = r
    for s in range(state.shape[1] if _N_SYMBOLS == 0 else _N_SYMBOLS):
        units = state[POS.units, s]
        if units > 0.0:
            offset = 0.0 if state[POS.side, s] > 0 else 2.0 * units * state[POS.entry, s]
            slope = units if state[POS.side, s] > 0 else -units
            for r in range(np.uint64(r0), np.uint64(r1)):
                out[r + shift] += offset + slope * close[s, r + prices]


@_helper
def _flush(values, slots, size, block_end, scan):
    """Hand the ``size`` buffered runs (equity ``values[1:size+1]`` from bars ``slots[:size]`` on, the last one up to
    ``block_end``) to the metrics scan; the last equity moves to ``values[0]``."""
    _scan_block(values, slots, size, block_end, scan.times, scan.stats, scan.counts, scan.returns, scan.tail,
                scan.month_last, scan.month_values, scan.year_last, scan.year_values)
    values[0] = values[size]


@_helper
def _buffer_run(value, bar, run_end, n_buffered, values, slots, curve, scan):
    """Buffer equity ``value`` for bars ``bar:run_end`` (one run), storing it to ``curve`` if kept; the buffer is
    handed over when full. Returns the new number of buffered runs. Bars of a run after its first repeat the
    previous bar's equity: their zero returns are counted here."""
    values[n_buffered + 1] = value
    slots[n_buffered] = bar
    if curve.size > 0:
        for r in range(np.uint64(bar), np.uint64(run_end)):
            curve[r] = value
    scan.counts[COUNT.flat] += run_end - bar - 1
    n_buffered += 1
    if n_buffered == _BLOCK_BARS:
        _flush(values, slots, n_buffered, run_end, scan)
        n_buffered = 0
    return n_buffered


def _buffer_stretch(r0, r1, n_buffered, bar0, cash, close, state, values, slots, curve, scan):
    """Buffer the equity of bars ``r0:r1`` while positions stay unchanged (one-bar runs valued by
    :func:`_value_stretch`, a block at a time), storing it to ``curve`` if kept; returns the new number of buffered
    runs."""
    r = r0
    while r < r1:
        take = min(r1 - r, _BLOCK_BARS - n_buffered)
        _value_stretch(values, n_buffered + 1, r, r + take, bar0, cash, close, state, slots)
        if curve.size > 0:
            shift = np.uint64(n_buffered + 1) - np.uint64(r)
            for bar in range(np.uint64(r), np.uint64(r + take)):
                curve[bar] = values[bar + shift]
        n_buffered += take
        r += take
        if n_buffered == _BLOCK_BARS:
            _flush(values, slots, n_buffered, r, scan)
            n_buffered = 0
    return n_buffered
