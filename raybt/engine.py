"""The simulation kernel: one backtest over aligned arrays, compiled with numba (cached on disk).

Accounting (see DESIGN.md; every rule has a hand-worked test in ``tests/test_engine.py``, and
``tests/test_engine_reference.py`` checks them together against an independent bar-by-bar simulator):

* **Entry** of a position with ``size`` s: ``invest = min(s × equity, cash)`` where equity is valued at the fill
  moment; ``units = (invest − fixed_fee) / (price × (1 + fees))`` (fractional); the order is skipped if units ≤ 0
  or if ``invest`` is below ``1e-9 × equity`` (dust: the rounding residue an order leaves when ``s × equity`` falls
  a hair below the cash must not fund a position of its own).
  Cash pays ``units × price × (1 + fees) + fixed_fee``. With one symbol and size 1 this is all-in:
  ``cash / (price × (1 + fees))`` units when there is no fixed fee. An entry skipped by that rule (no cash left,
  or not enough to pay the fixed fee) is an *unfunded entry*: counted (``Simulation.unfunded_entries``, the metric
  ``n_unfunded_entries``), never silently dropped.
* **Exits before entries** (several symbols share one cash account): within a bar, every exit of every symbol —
  signal exits, stops, the closing half of a reversal — fills before any entry, so entries can spend the cash those
  exits free (sells before buys, as established engines with shared cash do). Entries are then funded in symbol
  order (the column order of the data), each sized on the equity at that moment. With ``fill="next_open"`` the
  entries queued for a bar's open fill after that bar's queued exits and its stops of positions held before it.
* **Long exit**: cash receives ``units × price × (1 − fees) − fixed_fee``.
* **Short** positions lock their entry value as collateral: opening pays ``units × price × (1 + fees) + fixed_fee``
  from cash, the position is worth ``units × (2 × entry − price)``, and closing returns that less
  ``units × price × fees + fixed_fee``. Equity is the same as the usual short-sale accounting, but a short cannot
  fund other entries (no leverage).
* **Slippage** moves every fill price against the trader: buys at ``price × (1 + slippage)``, sells at
  ``price × (1 − slippage)`` (stop fills included).
* **Fills**: ``fill="close"`` trades at the close of the signal bar; ``fill="next_open"`` at the open of the next bar
  on which the symbol trades (a signal on the range's last bar is dropped).
* **Signals**: entries while positioned in the same direction and exits while flat are ignored; one order per
  symbol and bar. ``direction="long"``: entries open longs, exits close them. ``"short"``: entries open shorts,
  exits close them. ``"both"``: an entry closes a short and opens a long, an exit closes a long and opens a short;
  an entry and an exit on the same bar cancel out.
* **Stops** (fractions of the entry fill price; the trailing stop of the best price since entry — highest high for
  longs, lowest low for shorts — updated after each bar's check) are checked on every bar after the one on which
  the position was filled; with ``fill="next_open"`` also on the fill bar itself, as its high/low come after its
  open. If the open is already through a stop, it fills at the open; otherwise at the stop price when the bar's
  low/high reaches it. When a bar reaches both the stop loss (or trailing stop) and the take profit, the stop loss
  is assumed to come first.
* **Layout**: arrays are symbol-major, ``(n_symbols, n_bars)``, so each symbol's series is contiguous and the
  quiet stretches between signals are valued in vectorised passes.
* **Missing bars** (NaN open: no bar for that symbol) trade nothing; positions are valued at the last close.
* **Equity** is valued at each bar's close. A position still open at the end is marked to market at the last close
  with no exit fee and recorded as a trade with reason ``open_at_end``.
"""

from __future__ import annotations

import hashlib
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import cgutils
from numba.core import types as nb_types
from numba.extending import intrinsic

from raybt import _records as rec
from raybt import metrics as metrics_module
from raybt.metrics import _BLOCK_BARS, _N_FLAT, CurveScan, _scan_block

DIRECTION_CODES = {"long": 0, "short": 1, "both": 2}
_LONG_ONLY, _SHORT_ONLY, _BOTH = 0, 1, 2


@dataclass(frozen=True)
class CostModel:
    """A run's market conditions: money in, costs and fill timing (the same for every strategy of a sweep).

    ``initial_amount`` in quote currency; ``fees`` a fraction of traded value charged on each side; ``fixed_fee``
    quote currency per order; ``slippage`` a fraction of the price, against the trader; ``fill`` "close" or
    "next_open".
    """

    initial_amount: float = 10_000.0
    fees: float = 0.0
    fixed_fee: float = 0.0
    slippage: float = 0.0
    fill: str = "close"

    def __post_init__(self) -> None:
        if not self.initial_amount > 0:
            raise ValueError(f"initial_amount must be positive, got {self.initial_amount!r}")
        for name in ("fees", "slippage"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be a fraction in [0, 1), got {value!r}")
        if not self.fixed_fee >= 0:
            raise ValueError(f"fixed_fee must be >= 0, got {self.fixed_fee!r}")
        if self.fill not in ("close", "next_open"):
            raise ValueError(f"fill must be 'close' or 'next_open', got {self.fill!r}")
        for name in ("initial_amount", "fees", "fixed_fee", "slippage"):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass(frozen=True)
class Simulation:
    """Kernel output: ``equity`` (float64 per bar of the range, valued at the close; empty if not kept), ``trades``
    (float64 ``(n_trades, N_TRADE_FIELDS)``, layout in :mod:`raybt._records`), ``bars_in_market`` (bars with any
    position open at the close) and ``unfunded_entries`` (entries skipped because the cash left could not fund
    them: see the module docstring)."""

    equity: np.ndarray
    trades: np.ndarray
    bars_in_market: int
    unfunded_entries: int


class Workspace:
    """Buffers :func:`simulate` reuses from one backtest to the next (a sweep runs thousands in a row).

    Fresh output arrays cost a page fault per 4 KB on first touch (~9 µs for a 43,800-bar curve here); with a
    workspace the curve and the trade records go into buffers kept between calls. A :class:`Simulation` made with a
    workspace is a view of its buffers, valid until the next call with the same workspace: copy what you keep. The
    trade buffer has room for one trade per symbol and bar (the most there can be); only the rows written are ever
    touched. ``scan`` is the :class:`~raybt.metrics.CurveScan` a sweep's backtests share. One workspace per thread.
    """

    def __init__(self) -> None:
        self._equity = np.empty(0)
        self._trades = np.empty((0, rec.N_TRADE_FIELDS))
        self.scan = CurveScan()

    def buffers(self, n_bars: int, n_symbols: int, keep_curve: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(equity, trades)`` buffers for ``n_bars`` bars of ``n_symbols`` symbols, grown when too small; the
        equity buffer is empty without ``keep_curve``."""
        if self._trades.shape[0] < n_bars * n_symbols:
            self._trades = np.empty((n_bars * n_symbols, rec.N_TRADE_FIELDS))
        if not keep_curve:
            return self._equity[:0], self._trades
        if self._equity.size < n_bars:
            self._equity = np.empty(n_bars)
        return self._equity[:n_bars], self._trades


def _no_scan() -> tuple:
    """Kernel arrays meaning "no scan" (no stats), of the same types as a :class:`CurveScan`'s (one compilation),
    and its run buffers (never written without a scan)."""
    fixed = np.empty(0, dtype=np.int64)
    fixed.flags.writeable = False
    arrays = fixed, fixed, np.empty(0), fixed, np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), np.empty(0), \
        np.empty(0)
    return arrays, np.empty(0), np.empty(0, dtype=np.int64)


_NO_SCAN, _NO_VALUES, _NO_SLOTS = _no_scan()


def simulate(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, entries: np.ndarray,
             exits: np.ndarray, costs: CostModel, *, first_bar: int = 0, n_bars: int | None = None,
             signal_offset: int = 0, size: float = 1.0, direction: str = "long", stop_loss: float | None = None,
             take_profit: float | None = None, trailing_stop: float | None = None,
             workspace: Workspace | None = None, scan: CurveScan | None = None,
             keep_curve: bool = True) -> Simulation:
    """Simulate one backtest over bars ``first_bar : first_bar + n_bars`` of the price arrays.

    Prices are float64 ``(n_symbols, n_price_bars)`` (may be read-only); ``entries``/``exits`` are bool
    ``(n_symbols, n_signal_bars)`` where signal column ``signal_offset + i`` belongs to simulated bar ``i`` (so signals
    computed over a warm-up-extended window need no copy). ``n_bars`` defaults to the rest of the price arrays.
    With a ``workspace`` the result is a view of its buffers (see :class:`Workspace`); without, new arrays.
    With a ``scan`` (begun for these bars: :meth:`~raybt.metrics.CurveScan.begin`) the equity-curve metrics are
    computed as the equity is valued (read them with :meth:`~raybt.metrics.CurveScan.row`); ``keep_curve=False``
    then leaves the curve unstored (``Simulation.equity`` is empty).
    """
    n_bars = close.shape[1] - first_bar if n_bars is None else n_bars
    if not 0 <= first_bar < first_bar + n_bars <= close.shape[1]:
        raise ValueError(f"bars {first_bar}:{first_bar + n_bars} are outside the price arrays ({close.shape[1]} bars)")
    if entries.shape != exits.shape or entries.shape[0] != close.shape[0] or \
            not 0 <= signal_offset <= entries.shape[1] - n_bars:
        raise ValueError(f"signals of shape {entries.shape} / {exits.shape} with offset {signal_offset} do not cover "
                         f"{n_bars} bars of {close.shape[0]} symbol(s)")
    if scan is None and not keep_curve:
        raise ValueError("keep_curve=False needs a scan (else nothing would come out of the equity)")
    code = DIRECTION_CODES[direction]
    scan_arrays = scan.take(n_bars) if scan is not None else _NO_SCAN
    entries = np.ascontiguousarray(entries, dtype=np.bool_)
    exits = np.ascontiguousarray(exits, dtype=np.bool_)
    if workspace is not None:
        equity, trades = workspace.buffers(n_bars, close.shape[0], keep_curve)
    else:  # as many rows as signals that can open a position
        window = slice(signal_offset, signal_offset + n_bars)
        max_trades = int(np.count_nonzero(entries[:, window]))
        if code == _BOTH:
            max_trades += int(np.count_nonzero(exits[:, window]))
        equity = np.empty(n_bars if keep_curve else 0)
        trades = np.empty((max_trades, rec.N_TRADE_FIELDS))
    kernel = _simulate_one_symbol if close.shape[0] == 1 else _simulate_any
    n_trades, bars_in_market, n_unfunded = kernel(
        open_, high, low, close, entries, exits, first_bar, n_bars, signal_offset, costs.initial_amount, size, code,
        costs.fees, costs.fixed_fee, costs.slippage, costs.fill == "next_open", _off(stop_loss), _off(take_profit),
        _off(trailing_stop), equity, trades, np.zeros((_N_STATE, close.shape[0])),
        np.zeros((2, close.shape[0]), dtype=np.bool_), scan.values if scan is not None else _NO_VALUES,
        scan.slots if scan is not None else _NO_SLOTS, scan_arrays)
    return Simulation(equity, trades[:n_trades], int(bars_in_market), int(n_unfunded))


def _off(value: float | None) -> float:
    return np.nan if value is None else float(value)


# Nothing in the kernel allocates (the caller passes every array in), so it is compiled without numba's reference
# counting (its `_nrt=False` option): with it, each call increfs and decrefs every array argument (atomic operations
# behind calls, ~100 ns per call of the stop watch; with stops 138 -> 105 µs per backtest at 43,800 bars), and
# inlined helpers' array aliases too. The caller holds the arrays meanwhile. Helpers are inlined into the bar loop
# at numba's level (~5-10 % faster per backtest, measured in pairs).
_helper = njit(cache=True, _nrt=False, inline="always")

_DUST = 1e-9  # orders investing less than this fraction of equity are skipped (rounding residue)

# Per-symbol position state: rows of one float64 array (one array argument per helper call keeps calls cheap).
# _ORDER holds the side (+1 / -1) of an entry decided in a bar's exit pass and filled in its entry pass (0 = none).
_UNITS, _SIDE, _ENTRY, _ENTRY_BAR, _COMMITTED, _ENTRY_FEES, _EXTREME, _STOPS_FROM, _ORDER = range(9)
_N_STATE = 9


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
        if state[_UNITS, s] > 0.0:
            price = close[s, p]
            if at_open:
                price = open_[s, p] if not np.isnan(open_[s, p]) else close[s, p - 1]
            equity += _position_value(state[_UNITS, s], state[_SIDE, s], state[_ENTRY, s], price)
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
    state[_UNITS, s] = n
    state[_SIDE, s] = side
    state[_ENTRY, s] = price
    state[_ENTRY_BAR, s] = r
    state[_COMMITTED, s] = cost
    state[_ENTRY_FEES, s] = n * price * fees + fixed_fee
    state[_EXTREME, s] = price
    state[_STOPS_FROM, s] = r if at_open else r + 1
    if invest == cash:
        return 0.0  # all the cash is spent: no rounding residue (~1e-13) left to fund a dust order elsewhere
    return cash - cost


@_helper
def _close(s, raw_price, r, reason, cash, state, fees, fixed_fee, slippage, trades, n_trades):
    """Close symbol ``s``'s position at ``raw_price`` (before slippage) on simulated bar ``r``, record the trade;
    returns the new cash."""
    side = state[_SIDE, s]
    price = raw_price * (1.0 - slippage) if side > 0 else raw_price * (1.0 + slippage)
    n = state[_UNITS, s]
    exit_fees = n * price * fees + fixed_fee
    proceeds = _position_value(n, side, state[_ENTRY, s], price) - exit_fees
    pnl = proceeds - state[_COMMITTED, s]
    _record(trades, n_trades, s, side, state[_ENTRY_BAR, s], r, state[_ENTRY, s], price, n,
            state[_ENTRY_FEES, s] + exit_fees, pnl, pnl / state[_COMMITTED, s], reason)
    state[_UNITS, s] = 0.0
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
def _check_stop(s, p, r, cash, state, open_, high, low, stop_loss, take_profit, trailing_stop, fees, fixed_fee,
                slippage, trades, n_trades):
    """Check symbol ``s``'s open position against its stops on price bar ``p`` (simulated bar ``r``): close it
    at the stop's fill if one triggers, else move its extreme (for the trailing stop). Returns ``(cash, closed)``."""
    side = state[_SIDE, s]
    level, reason, target = _stop_levels(side, state[_ENTRY, s], state[_EXTREME, s], stop_loss, take_profit,
                                         trailing_stop)
    fill, why = _stop_fill(side, open_[s, p], high[s, p], low[s, p], level, reason, target)
    if not np.isnan(fill):
        return _close(s, fill, r, why, cash, state, fees, fixed_fee, slippage, trades, n_trades), True
    if side > 0:
        state[_EXTREME, s] = max(state[_EXTREME, s], high[s, p])
    else:
        state[_EXTREME, s] = min(state[_EXTREME, s], low[s, p])
    return cash, False


@_helper
def _fill_entries(n_symbols, p, r, at_open, open_, close, cash, state, size, fees, fixed_fee, slippage):
    """The entry pass of a bar: open every entry the exit pass decided (``state[_ORDER]``), in symbol order (the
    column order of the data), each sized on the equity at that moment. Returns ``(cash, opened, unfunded)``:
    positions opened, and entries skipped because the cash left could not fund them."""
    opened = 0
    unfunded = 0
    for s in range(n_symbols):
        side = state[_ORDER, s]
        if side != 0.0:
            state[_ORDER, s] = 0.0
            cash = _open(s, side, p, r, at_open, open_, close, cash, state, size, fees, fixed_fee, slippage)
            if state[_UNITS, s] > 0.0:
                opened += 1
            else:
                unfunded += 1
    return cash, opened, unfunded


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


_SIGNAL_LANES = 32  # signal bars tested at once by the signal scan: one 32-byte vector per array


def _is_signal_array(array: nb_types.Type) -> bool:
    """Whether ``array`` is a numba type :func:`_signal_mask` can address: a C-contiguous 2-D bool array."""
    return (isinstance(array, nb_types.Array) and array.ndim == 2 and array.layout == "C"
            and array.dtype == nb_types.boolean)


@intrinsic
def _signal_mask(typingctx, entries, exits, row, column):
    """A uint32 whose bit ``k`` is set iff ``entries[row, column + k]`` or ``exits[row, column + k]`` (``k <
    _SIGNAL_LANES``): one unaligned vector load from each array, an OR, a compare with zero and the lanes' bits
    (pmovmskb on x86). Unchecked: the caller keeps ``column + _SIGNAL_LANES`` within the row (uint64 column)."""
    if not (_is_signal_array(entries) and _is_signal_array(exits)):
        return None
    signature = nb_types.uint32(entries, exits, nb_types.intp, nb_types.uint64)

    def codegen(context, builder, sig, args):
        entries_value, exits_value, row_value, column_value = args
        byte = ir.IntType(8)
        lanes = ir.VectorType(byte, _SIGNAL_LANES)

        def load(array_type, array_value):
            array = context.make_array(array_type)(context, builder, array_value)
            row_start = builder.mul(row_value, builder.extract_value(array.shape, 1))
            first = builder.gep(builder.bitcast(array.data, byte.as_pointer()), [builder.add(row_start, column_value)])
            return builder.load(builder.bitcast(first, lanes.as_pointer()), align=1)

        either = builder.or_(load(sig.args[0], entries_value), load(sig.args[1], exits_value))
        set_lanes = builder.icmp_unsigned("!=", either, ir.Constant(lanes, None))
        return builder.bitcast(set_lanes, ir.IntType(_SIGNAL_LANES))

    return signature, codegen


@intrinsic
def _lowest_set_bit(typingctx, mask):
    """The index of the lowest set bit of a non-zero unsigned integer (LLVM's cttz: one tzcnt/bsf instruction)."""
    if not (isinstance(mask, nb_types.Integer) and not mask.signed):
        return None

    def codegen(context, builder, sig, args):
        word = ir.IntType(sig.args[0].bitwidth)
        count = cgutils.get_or_insert_function(builder.module, ir.FunctionType(word, [word, ir.IntType(1)]),
                                               f"llvm.cttz.i{word.width}")
        return builder.call(count, [args[0], ir.Constant(ir.IntType(1), 1)])  # 1: the result for 0 is undefined

    return mask(mask), codegen


def _next_signal(entries, exits, q, stop):
    """First signal column in ``q:stop`` with an entry or exit for any symbol (``stop`` if none), _SIGNAL_LANES
    columns at a time (:func:`_signal_mask`, the first hit by :func:`_lowest_set_bit`); the last columns, fewer than
    that, one by one. ``entries``/``exits``: C-contiguous (``simulate`` makes them so)."""
    n_symbols = entries.shape[0] if _N_SYMBOLS == 0 else _N_SYMBOLS
    while q + _SIGNAL_LANES <= stop:
        column = np.uint64(q)
        mask = _signal_mask(entries, exits, 0, column)
        for s in range(1, n_symbols):
            mask |= _signal_mask(entries, exits, s, column)
        if mask != 0:
            return q + np.int64(_lowest_set_bit(mask))
        q += _SIGNAL_LANES
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
    if _N_SYMBOLS == 1 and state[_UNITS, 0] > 0.0:
        units = state[_UNITS, 0]
        offset = 0.0 if state[_SIDE, 0] > 0 else 2.0 * units * state[_ENTRY, 0]
        slope = units if state[_SIDE, 0] > 0 else -units
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
        units = state[_UNITS, s]
        if units > 0.0:
            offset = 0.0 if state[_SIDE, s] > 0 else 2.0 * units * state[_ENTRY, s]
            slope = units if state[_SIDE, s] > 0 else -units
            for r in range(np.uint64(r0), np.uint64(r1)):
                out[r + shift] += offset + slope * close[s, r + prices]


@_helper
def _flush(values, slots, size, block_end, scan):
    """Hand the ``size`` buffered runs (equity ``values[1:size+1]`` from bars ``slots[:size]`` on, the last one up to
    ``block_end``) to the metrics scan; the last equity moves to ``values[0]``."""
    times, month_last, month_values, year_last, year_values, stats, counts, returns, tail = scan
    _scan_block(values, slots, size, block_end, times, stats, counts, returns, tail, month_last, month_values,
                year_last, year_values)
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
    times, month_last, month_values, year_last, year_values, stats, counts, returns, tail = scan
    counts[_N_FLAT] += run_end - bar - 1
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


@_helper
def _stop_scan(open_, high, low, state, s, p0, p1, stop_loss, take_profit, trailing_stop, keep_extreme):
    """The first price bar in ``p0:p1`` on which a stop of symbol ``s``'s open position triggers (``p1`` if none);
    with ``keep_extreme`` the position's extreme (for trailing stops) moves over the bars before it, as the bar loop
    would move it. The same levels and tests as :func:`_stop_levels` and :func:`_stop_fill` (identical arithmetic),
    in a tight loop: an absent stop is an infinite level; missing bars (NaN open) are skipped."""
    side = state[_SIDE, s]
    entry = state[_ENTRY, s]
    extreme = state[_EXTREME, s]
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
        state[_EXTREME, s] = extreme
    return p1


def _next_stop_watch(entries, exits, open_, high, low, state, bar0, sig0, r, n_bars, stop_loss, take_profit,
                     trailing_stop):
    """With positions open under stops and no order queued: the first bar from ``r`` that the bar loop must see, the
    next bar with a signal or an earlier one on which a stop triggers. The positions' extremes move over the bars
    passed, as the bar loop would move them (with several symbols a second scan, once the first bar is known)."""
    n_symbols = state.shape[1] if _N_SYMBOLS == 0 else _N_SYMBOLS
    first = _next_signal(entries, exits, sig0 + r, sig0 + n_bars) - sig0
    for s in range(n_symbols):
        if state[_UNITS, s] > 0.0:
            first = _stop_scan(open_, high, low, state, s, bar0 + r, bar0 + first, stop_loss, take_profit,
                               trailing_stop, n_symbols == 1) - bar0
    if n_symbols > 1:
        for s in range(n_symbols):
            if state[_UNITS, s] > 0.0:
                _stop_scan(open_, high, low, state, s, bar0 + r, bar0 + first, stop_loss, take_profit, trailing_stop,
                           True)
    return first


def _bar_loop(open_, high, low, close, entries, exits, bar0, n_bars, sig0, initial_cash, size, direction, fees,
              fixed_fee, slippage, next_open, stop_loss, take_profit, trailing_stop, curve, trades, state, pending,
              values, slots, scan):
    """The bar loop (compiled by :func:`_compile`, with the helpers above). Simulated bar ``r`` reads prices at ``p =
    bar0 + r`` and signals at ``q = sig0 + r``. On bar ``r``: (1) the exits queued by the previous bar's signals
    fill at the open, (2) stops are checked intrabar, (3) the entries queued by the previous bar's signals fill at
    the open (their stops checked on this bar too), (4) this bar's signal exits fill at the close, then its entries,
    or they are queued; then (5) equity is valued at the close of ``r`` and of every following bar on which nothing
    can happen (no signal, no queued order, no stop triggering), and the loop jumps to the next bar that needs
    attention (found by the signal scan or the stop watch, the stretch valued in one vectorised pass). With a
    metrics scan (``scan``: a :class:`~raybt.metrics.CurveScan`'s kernel arrays; ones with empty stats for none) the
    equity goes to a buffer of runs (``values``: equity, ``slots``: first bar of each run; a stretch with nothing
    open is one run, its equity being the cash), handed to the scan block by block, and to ``curve`` unless it is
    empty; without, the equity is stored to ``curve`` directly. ``trades`` must have room for every trade: a
    position opens at most once per symbol and bar. ``state`` (float64 ``(_N_STATE, n_symbols)``) and ``pending``
    (bool ``(2, n_symbols)``: entry, exit queued for the next open) come in zeroed, so that nothing is allocated
    here. Returns ``(n_trades, bars_in_market, n_unfunded)``, the last the entries skipped for want of cash."""
    n_symbols = close.shape[0] if _N_SYMBOLS == 0 else _N_SYMBOLS
    has_stops = not (np.isnan(stop_loss) and np.isnan(take_profit) and np.isnan(trailing_stop))
    cash = initial_cash
    n_pending = 0
    n_open = 0
    n_trades = 0
    n_unfunded = 0
    bars_in_market = 0
    scanning = scan[5].size > 0  # else the curve is stored directly
    n_buffered = 0  # runs of bars at one equity each in values[1:] / slots, not yet handed to the scan
    r = 0
    while r < n_bars:
        p = bar0 + r
        q = sig0 + r
        # Exits before entries (sells before buys): every exit of every symbol on this bar (queued signal exits and
        # reversals at the open, stops, signal exits at the close) fills before any entry, so the entries can spend
        # the cash those exits free; the exit pass records the entries it decides in state[_ORDER].
        n_orders = 0
        if n_pending > 0:
            for s in range(n_symbols):
                if (pending[0, s] or pending[1, s]) and not np.isnan(open_[s, p]):
                    side = state[_SIDE, s] if state[_UNITS, s] > 0.0 else 0.0
                    close_it, open_side = _signal_order(pending[0, s], pending[1, s], side, direction)
                    if close_it:
                        cash = _close(s, open_[s, p], r, rec.EXIT_SIGNAL, cash, state, fees, fixed_fee, slippage,
                                      trades, n_trades)
                        n_trades += 1
                        n_open -= 1
                    if open_side != 0.0:
                        state[_ORDER, s] = open_side
                        n_orders += 1
                    pending[0, s] = False
                    pending[1, s] = False
                    n_pending -= 1
        if has_stops and n_open > 0:
            for s in range(n_symbols):
                if state[_UNITS, s] > 0.0 and r >= state[_STOPS_FROM, s] and not np.isnan(open_[s, p]):
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
                    if state[_UNITS, s] > 0.0 and state[_ENTRY_BAR, s] == r:
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
            side = state[_SIDE, s] if state[_UNITS, s] > 0.0 else 0.0
            close_it, open_side = _signal_order(entries[s, q], exits[s, q], side, direction)
            if close_it:
                cash = _close(s, close[s, p], r, rec.EXIT_SIGNAL, cash, state, fees, fixed_fee, slippage, trades,
                              n_trades)
                n_trades += 1
                n_open -= 1
            if open_side != 0.0:
                state[_ORDER, s] = open_side
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
                    if state[_UNITS, s] > 0.0:
                        value += _position_value(state[_UNITS, s], state[_SIDE, s], state[_ENTRY, s], close[s, p])
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
        units = state[_UNITS, s]
        if units > 0.0:
            pnl = _position_value(units, state[_SIDE, s], state[_ENTRY, s], close[s, last]) - state[_COMMITTED, s]
            _record(trades, n_trades, s, state[_SIDE, s], state[_ENTRY_BAR, s], n_bars - 1, state[_ENTRY, s],
                    close[s, last], units, state[_ENTRY_FEES, s], pnl, pnl / state[_COMMITTED, s],
                    rec.EXIT_OPEN_AT_END)
            n_trades += 1
    return n_trades, bars_in_market, n_unfunded


_N_SYMBOLS = 0  # 0 = read the symbol count from the arrays; a positive value is frozen into a specialised kernel
# The plain functions above compiled per symbol count:
_SPECIALISED = ("_next_signal", "_value_stretch", "_buffer_stretch", "_next_stop_watch", "_bar_loop")


def _sources_digest(paths: tuple[str, ...]) -> str:
    """A short hex digest of the contents of the files at ``paths``."""
    digest = hashlib.sha1()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:12]


# numba's on-disk cache of a function is invalidated when the function's own source file changes, not when a file
# whose compiled functions and constants it takes in does (numba's documented limitation): the bar loop would keep
# running a cached copy of an old metrics scan. Its names carry a digest of those files instead.
_INLINED_SOURCES = (metrics_module.__file__, rec.__file__)
_INLINED_DIGEST = _sources_digest(_INLINED_SOURCES)


def _compile(n_symbols: int):
    """Compile the bar loop and its per-bar-range helpers with the symbol count frozen to ``n_symbols`` (0 = any).
    numba turns the global into a constant, so the single-symbol kernel has no symbol loops and values a stretch in
    one vectorised pass (:func:`_value_stretch`). Each variant gets its own qualified names, hence its own on-disk
    cache entries; the names end with :data:`_INLINED_DIGEST`, so that a change to the metrics scan or the trade
    records compiles them anew."""
    namespace = {**globals(), "_N_SYMBOLS": n_symbols}
    for name in _SPECIALISED:
        func = types.FunctionType(globals()[name].__code__, namespace,
                                  f"{name}_{n_symbols or 'any'}_{_INLINED_DIGEST}")
        func.__qualname__ = func.__name__
        namespace[name] = njit(cache=True, _nrt=False)(func) if name == "_bar_loop" else _helper(func)
    return namespace["_bar_loop"]


_simulate_one_symbol = _compile(1)
_simulate_any = _compile(0)
