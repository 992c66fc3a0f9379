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

import types
from dataclasses import dataclass

import numpy as np

from raybt import _records as rec
from raybt._accel import NO_REFCOUNT
from raybt._jit import jit
from raybt._kernel import loop, orders, state, stops, stretches
from raybt._kernel.state import _BOTH, POS
from raybt.metrics import CurveScan, ScanArrays
from raybt.metrics._inputs import _readonly

DIRECTION_CODES = {"long": 0, "short": 1, "both": 2}


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

    Fresh output arrays cost a page fault per 4 KB on first touch; with a workspace the curve and the trade records go
    into buffers kept between calls. A :class:`Simulation` made with a workspace is a view of its buffers, valid until
    the next call with the same workspace: copy what you keep. The trade buffer has room for one trade per symbol and
    bar (the most there can be); only the rows written are ever
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


def _no_scan() -> tuple[ScanArrays, np.ndarray, np.ndarray]:
    """Kernel arrays meaning "no scan" (empty stats), of the same types as a :class:`CurveScan`'s (one compilation),
    and its run buffers (never written without a scan)."""
    fixed = np.empty(0, dtype=np.int64)
    fixed.flags.writeable = False
    arrays = ScanArrays(times=fixed, month_last=fixed, month_values=np.empty(0), year_last=fixed,
                        year_values=np.empty(0), stats=np.empty(0), counts=np.empty(0, dtype=np.int64),
                        returns=np.empty(0), tail=np.empty(0))
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
    open_, high, low, close = (kernel_input(prices, np.float64) for prices in (open_, high, low, close))
    entries, exits = kernel_input(entries, np.bool_), kernel_input(exits, np.bool_)
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
        _off(trailing_stop), equity, trades, np.zeros((len(POS), close.shape[0])),
        np.zeros((2, close.shape[0]), dtype=np.bool_), scan.values if scan is not None else _NO_VALUES,
        scan.slots if scan is not None else _NO_SLOTS, scan_arrays)
    return Simulation(equity, trades[:n_trades], int(bars_in_market), int(n_unfunded))


def kernel_input(values: np.ndarray, dtype: type) -> np.ndarray:
    """``values`` as a C-contiguous, read-only array of ``dtype``: itself or a view when it already is C-contiguous
    of that dtype, else a copy.

    numba compiles a function once per combination of argument types, and a read-only array is another type than a
    writable one. Prices and signals reach the bar loop from a sweep's batch (market data is read-only, the object
    store's too), a replay and a user's own arrays: presenting them all read-only and C-contiguous makes every caller
    reuse one compiled bar loop per variant instead of compiling another, which takes seconds.

    >>> kernel_input(np.zeros((1, 3)), np.float64).flags.writeable
    False
    """
    return _readonly(np.ascontiguousarray(values, dtype=dtype))


def _off(value: float | None) -> float:
    return np.nan if value is None else float(value)


# The plain functions compiled per symbol count: the bar loop and the helpers it calls per range of bars.
_SPECIALISED = ("_next_signal", "_value_stretch", "_buffer_stretch", "_next_stop_watch", "_bar_loop")
# The globals they see: every name of the kernel's modules, in this module (numba rebuilds a cached function's
# environment from the module its globals name).
_KERNEL_NAMESPACE = {**{name: value for module in (state, orders, stretches, stops, loop)
                        for name, value in vars(module).items() if not name.startswith("__")}, "__name__": __name__}


def _compile(n_symbols: int):
    """Compile the bar loop and its per-bar-range helpers with the symbol count frozen to ``n_symbols`` (0 = any).
    numba turns the global into a constant, so the single-symbol kernel has no symbol loops and values a stretch in
    one vectorised pass (:func:`~raybt._kernel.stretches._value_stretch`). Each variant gets its own qualified
    names, hence its own on-disk cache entries; the names end with :data:`raybt._jit.DIGEST` (see :mod:`raybt._jit`:
    an edit of any compiled source, or the portable mode, compiles them anew)."""
    namespace = {**_KERNEL_NAMESPACE, "_N_SYMBOLS": n_symbols}
    for name in _SPECIALISED:
        func = types.FunctionType(_KERNEL_NAMESPACE[name].__code__, namespace, f"{name}_{n_symbols or 'any'}")
        func.__qualname__ = func.__name__  # raybt._jit.jit appends the digest
        namespace[name] = _compile_loop(func) if name == "_bar_loop" else state._helper(func)
    return namespace["_bar_loop"]


_compile_loop = jit(**NO_REFCOUNT)
_simulate_one_symbol = _compile(1)
_simulate_any = _compile(0)
