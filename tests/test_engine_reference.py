"""The simulation kernel against a plain-Python reference simulator, on randomised and targeted cases.

``raybt.engine.simulate`` skips quiet stretches (valued in vectorised passes), scans ahead for stop triggers in tight
loops and has a specialised single-symbol compile. :class:`Reference` below does none of that: it walks every bar of
every symbol in plain Python and applies the accounting rules as the docstring of :mod:`raybt.engine` states them
(written from those rules, not copied from the kernel). On each bar, in this order:

1. ``fill="next_open"``: the exits (and the closing half of reversals) queued by earlier signals fill at the open,
   symbol by symbol, for the symbols that have a bar (an order waits for its symbol's next bar); what each queued
   order will open is decided now, from the position held before the bar.
2. Stops are checked, symbol by symbol, for positions filled before this bar. Levels are fractions of the entry
   fill price; the trailing stop is measured from the best price since the entry (starting at the entry fill price;
   highest high for longs, lowest low for shorts) and the best price moves only after the bar's check. The nearer
   of stop loss and trailing stop is in force (the stop loss on a tie). An open through the stop fills at the open,
   then an open through the target, then a low/high reaching the stop fills at the stop, then a high/low reaching
   the target at the target.
3. The entries decided in step 1 fill at the open, in symbol order, each sized on the equity at that moment
   (positions at this bar's open, or at their previous close when their symbol has no bar); the stops of the
   positions they open are checked on this bar too, as in step 2 (the bar's high/low come after its open).
4. This bar's signals, for symbols with a bar: with ``fill="close"`` first every symbol's exit (and the closing half
   of a reversal), then the entries, in symbol order, each sized on the equity at the close; with
   ``fill="next_open"`` queued for the next open (dropped on the range's last bar).
5. Equity at the close: cash plus every position at its (forward-filled) close; a bar counts as "in market" when
   any position is open at its close.

Steps 1-4 are the rule "exits before entries within a bar" (shared cash, sells before buys). An entry that finds no
cash to fund it is skipped and counted (``unfunded``, compared with ``Simulation.unfunded_entries``).

At the end, positions still open are recorded as trades marked at the last close without exit fee, by symbol.
Trades are recorded in the order they close. Entries: ``invest = min(size × equity, cash)``, units
``(invest − fixed_fee) / (price × (1 + fees))``, skipped unless positive and ``invest`` is at least 1e-9 of equity
(not a rounding residue of cash), and the cash left is exactly 0 when
``invest`` is the cash. A missing bar is one with a NaN open (the random data also has bars where only the open is
NaN): it fills no order, checks no stop and takes no signal (a signal there is not queued either). Those last points,
the tie rule above and the trailing stop's starting point are where the docstring leaves a choice open; they follow
the kernel's code and its hand-worked tests in ``tests/test_engine.py``.

Every equity value and trade field is compared to 1e-9 relative (1e-9 absolute where the expected value is 0; a
trade's pnl and return relative to its entry value, as they are differences of amounts of that size), symbol,
direction, bars and exit reason and ``bars_in_market`` exactly, for every case run both with fresh output arrays and
with one shared :class:`~raybt.engine.Workspace`. Failure messages name the case (seed and every parameter) so it can
be replayed: ``check_case(random_case(seed))``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from raybt import _records as rec
from raybt.engine import CostModel, Workspace, simulate

RTOL = 1e-9
ATOL = 1e-9
N_RANDOM = 1000

NAN = float("nan")
SIGNAL, STOP_LOSS, TAKE_PROFIT, TRAILING_STOP, OPEN_AT_END = (
    rec.EXIT_REASONS.index(name) for name in ("signal", "stop_loss", "take_profit", "trailing_stop", "open_at_end"))
LONG, SHORT = 1, -1

WORKSPACE = Workspace()  # shared by every case, as a sweep shares one between its backtests


# ---------------------------------------------------------------------------------------------- the reference

@dataclass
class Position:
    side: int             # LONG or SHORT
    units: float
    entry: float          # entry fill price (after slippage)
    entry_bar: int
    committed: float      # cash paid at the entry: entry value + entry fees
    entry_fees: float
    best: float           # best price since the entry, for the trailing stop
    stops_from: int       # first bar on which the stops are checked

    def value(self, price: float) -> float:
        """Long: units × price. Short: the collateral locked at entry plus the short's gain."""
        if self.side == LONG:
            return self.units * price
        return self.units * (2.0 * self.entry - price)


@dataclass
class Case:
    """One simulate() call: prices ``(n_symbols, n_price_bars)``, signals and every keyword."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    entries: np.ndarray
    exits: np.ndarray
    costs: CostModel
    first_bar: int = 0
    n_bars: int | None = None
    signal_offset: int = 0
    size: float = 1.0
    direction: str = "long"
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    note: str = ""

    def kwargs(self) -> dict:
        return dict(first_bar=self.first_bar, n_bars=self.n_bars, signal_offset=self.signal_offset, size=self.size,
                    direction=self.direction, stop_loss=self.stop_loss, take_profit=self.take_profit,
                    trailing_stop=self.trailing_stop)

    def run(self, workspace=None):
        return simulate(self.open, self.high, self.low, self.close, self.entries, self.exits, self.costs,
                        workspace=workspace, **self.kwargs())

    def describe(self) -> str:
        c = self.costs
        return (f"{self.note} | n_symbols={self.close.shape[0]} n_price_bars={self.close.shape[1]} "
                f"first_bar={self.first_bar} n_bars={self.n_bars} signal_offset={self.signal_offset} "
                f"signal_columns={self.entries.shape[1]} direction={self.direction} fill={c.fill} size={self.size} "
                f"initial={c.initial_amount} fees={c.fees} fixed_fee={c.fixed_fee} slippage={c.slippage} "
                f"stop_loss={self.stop_loss} take_profit={self.take_profit} trailing_stop={self.trailing_stop}")


class Reference:
    """Plain per-bar simulation of one case (no skipping, no look-ahead)."""

    def __init__(self, case: Case):
        self.case = case
        costs = case.costs
        self.fees, self.fixed_fee, self.slippage = costs.fees, costs.fixed_fee, costs.slippage
        self.next_open = costs.fill == "next_open"
        self.cash = costs.initial_amount
        self.n_symbols = case.close.shape[0]
        self.positions: list[Position | None] = [None] * self.n_symbols
        self.trades: list[list[float]] = []
        self.unfunded = 0  # entries skipped for want of cash
        self.stats: Counter = Counter()  # which rules fired, for the coverage test
        # Python lists: plain float arithmetic, and fast to index bar by bar.
        self.o, self.h, self.l, self.c = (a.tolist() for a in (case.open, case.high, case.low, case.close))

    # --- prices and valuation

    def buy(self, raw: float) -> float:
        return raw * (1.0 + self.slippage)

    def sell(self, raw: float) -> float:
        return raw * (1.0 - self.slippage)

    def has_bar(self, s: int, p: int) -> bool:
        return not math.isnan(self.o[s][p])

    def mark_at_open(self, s: int, p: int) -> float:
        if self.has_bar(s, p):
            return self.o[s][p]
        self.stats["valued at the previous close at an open"] += 1
        return self.c[s][p - 1]

    def mark_at_close(self, s: int, p: int) -> float:
        return self.c[s][p]  # forward-filled over missing bars: the last close

    def equity(self, mark, p: int) -> float:
        total = self.cash
        for s, pos in enumerate(self.positions):
            if pos is not None:
                total += pos.value(mark(s, p))
        return total

    # --- orders

    def enter(self, s: int, side: int, raw: float, r: int, p: int, at_open: bool) -> None:
        price = self.buy(raw) if side == LONG else self.sell(raw)
        equity = self.equity(self.mark_at_open if at_open else self.mark_at_close, p)
        invest = min(self.case.size * equity, self.cash)
        units = (invest - self.fixed_fee) / (price * (1.0 + self.fees))
        if not units > 0.0 or invest < 1e-9 * equity:  # nothing to buy, or only a rounding residue of cash
            self.stats["entry skipped"] += 1
            self.unfunded += 1
            return
        paid = units * price * (1.0 + self.fees) + self.fixed_fee
        self.stats["all the cash invested" if invest == self.cash else "part of the cash invested"] += 1
        self.cash = 0.0 if invest == self.cash else self.cash - paid
        self.positions[s] = Position(side=side, units=units, entry=price, entry_bar=r, committed=paid,
                                     entry_fees=units * price * self.fees + self.fixed_fee, best=price,
                                     stops_from=r if at_open else r + 1)

    def exit(self, s: int, raw: float, r: int, reason: int) -> None:
        pos = self.positions[s]
        price = self.sell(raw) if pos.side == LONG else self.buy(raw)
        exit_fees = pos.units * price * self.fees + self.fixed_fee
        proceeds = pos.value(price) - exit_fees
        self.cash += proceeds
        self.positions[s] = None
        self.record(s, pos, r, price, pos.entry_fees + exit_fees, proceeds - pos.committed, reason)

    def record(self, s, pos, exit_bar, exit_price, fees, pnl, reason) -> None:
        row = [0.0] * rec.N_TRADE_FIELDS
        row[rec.SYMBOL] = s
        row[rec.DIRECTION] = pos.side
        row[rec.ENTRY_BAR] = pos.entry_bar
        row[rec.EXIT_BAR] = exit_bar
        row[rec.ENTRY_PRICE] = pos.entry
        row[rec.EXIT_PRICE] = exit_price
        row[rec.UNITS] = pos.units
        row[rec.FEES] = fees
        row[rec.PNL] = pnl
        row[rec.RETURN] = pnl / pos.committed
        row[rec.REASON] = reason
        self.trades.append(row)

    def exit_for_signals(self, s: int, is_entry: bool, is_exit: bool, raw: float, r: int) -> int | None:
        """The exit half of one symbol's entry/exit signals at ``raw`` (this bar's open or close): close the
        position if the signals say so; return the side the signals then open (None for nothing)."""
        pos = self.positions[s]
        side = 0 if pos is None else pos.side
        if self.case.direction == "both":
            if is_entry == is_exit:
                return None  # nothing, or an entry and an exit cancelling out
            wanted = LONG if is_entry else SHORT
            if side == wanted:
                return None
            if side == -wanted:
                self.exit(s, raw, r, SIGNAL)
                self.stats["reversal"] += 1
            return wanted
        own = LONG if self.case.direction == "long" else SHORT
        if side == own:
            if is_exit:
                self.exit(s, raw, r, SIGNAL)
            return None
        return own if is_entry else None

    def enter_in_symbol_order(self, wanted: dict[int, int], raw_prices: list[list[float]], r: int, p: int,
                              at_open: bool) -> None:
        """The entry half: open the decided entries, lowest symbol first, after every exit of the bar."""
        exited = {int(t[rec.SYMBOL]) for t in self.trades if t[rec.EXIT_BAR] == r}
        for s in sorted(wanted):
            if exited - {s}:
                self.stats["entry after another symbol's same-bar exit"] += 1
            self.enter(s, wanted[s], raw_prices[s][p], r, p, at_open)

    # --- stops

    def check_stops(self, s: int, r: int, p: int) -> None:
        pos = self.positions[s]
        sl, tp, ts = self.case.stop_loss, self.case.take_profit, self.case.trailing_stop
        o, h, l = self.o[s][p], self.h[s][p], self.l[s][p]
        stop, why, target, fill = None, STOP_LOSS, None, None
        if pos.side == LONG:
            if sl is not None:
                stop = pos.entry * (1.0 - sl)
            if ts is not None:
                trail = pos.best * (1.0 - ts)
                if stop is None or trail > stop:  # the higher one is nearer
                    stop, why = trail, TRAILING_STOP
            if tp is not None:
                target = pos.entry * (1.0 + tp)
            if stop is not None and o <= stop:
                fill = (o, why, "at the open")
            elif target is not None and o >= target:
                fill = (o, TAKE_PROFIT, "at the open")
            elif stop is not None and l <= stop:
                fill = (stop, why, "at its level")
            elif target is not None and h >= target:
                fill = (target, TAKE_PROFIT, "at its level")
            else:
                pos.best = max(pos.best, h)
        else:
            if sl is not None:
                stop = pos.entry * (1.0 + sl)
            if ts is not None:
                trail = pos.best * (1.0 + ts)
                if stop is None or trail < stop:  # the lower one is nearer
                    stop, why = trail, TRAILING_STOP
            if tp is not None:
                target = pos.entry * (1.0 - tp)
            if stop is not None and o >= stop:
                fill = (o, why, "at the open")
            elif target is not None and o <= target:
                fill = (o, TAKE_PROFIT, "at the open")
            elif stop is not None and h >= stop:
                fill = (stop, why, "at its level")
            elif target is not None and l <= target:
                fill = (target, TAKE_PROFIT, "at its level")
            else:
                pos.best = min(pos.best, l)
        if fill is not None:
            price, reason, how = fill
            self.stats[f"{rec.EXIT_REASONS[reason]} {how}"] += 1
            self.exit(s, price, r, reason)

    # --- the loop

    def run(self) -> tuple[np.ndarray, np.ndarray, int]:
        case = self.case
        n_bars = case.close.shape[1] - case.first_bar if case.n_bars is None else case.n_bars
        entries, exits = case.entries.tolist(), case.exits.tolist()
        has_stops = any(x is not None for x in (case.stop_loss, case.take_profit, case.trailing_stop))
        pending: dict[int, tuple[bool, bool]] = {}
        equity, in_market = [], 0
        for r in range(n_bars):
            p, q = case.first_bar + r, case.signal_offset + r
            at_open: dict[int, int] = {}
            for s in range(self.n_symbols):  # 1. queued exits at the open
                if s in pending and not self.has_bar(s, p):
                    self.stats["queued order waits for a missing bar"] += 1
                elif s in pending:
                    is_entry, is_exit = pending.pop(s)
                    side = self.exit_for_signals(s, is_entry, is_exit, self.o[s][p], r)
                    if side is not None:
                        at_open[s] = side
            for s in range(self.n_symbols):  # 2. stops
                pos = self.positions[s]
                if has_stops and pos is not None and r >= pos.stops_from and self.has_bar(s, p):
                    self.check_stops(s, r, p)
            self.enter_in_symbol_order(at_open, self.o, r, p, at_open=True)  # 3. queued entries at the open
            for s in sorted(at_open):
                pos = self.positions[s]
                if has_stops and pos is not None and pos.entry_bar == r:
                    self.check_stops(s, r, p)
            at_close: dict[int, int] = {}
            for s in range(self.n_symbols):  # 4. this bar's signals
                is_entry, is_exit = entries[s][q], exits[s][q]
                if not (is_entry or is_exit):
                    continue
                if not self.has_bar(s, p):
                    self.stats["signal on a missing bar"] += 1
                    continue
                if self.next_open:
                    if r + 1 < n_bars:
                        pending[s] = (is_entry, is_exit)
                    else:
                        self.stats["signal on the last bar dropped"] += 1
                else:
                    side = self.exit_for_signals(s, is_entry, is_exit, self.c[s][p], r)
                    if side is not None:
                        at_close[s] = side
            self.enter_in_symbol_order(at_close, self.c, r, p, at_open=False)
            equity.append(self.equity(self.mark_at_close, p))  # 5. the close
            in_market += any(pos is not None for pos in self.positions)
            for s, pos in enumerate(self.positions):
                if pos is not None and not self.has_bar(s, p):
                    self.stats["position open over a missing bar"] += 1
                    if not math.isnan(self.h[s][p]):
                        self.stats["position open over a missing bar with a high/low"] += 1
            if sum(pos is not None for pos in self.positions) > 1:
                self.stats["several positions open"] += 1
        last = case.first_bar + n_bars - 1
        for s, pos in enumerate(self.positions):
            if pos is not None:
                price = self.c[s][last]
                self.record(s, pos, n_bars - 1, price, pos.entry_fees, pos.value(price) - pos.committed,
                            OPEN_AT_END)
                self.stats["open at end"] += 1
        trades = np.array(self.trades, dtype=np.float64).reshape(-1, rec.N_TRADE_FIELDS)
        return np.array(equity), trades, in_market


# ------------------------------------------------------------------------------------------------ comparison

INTEGER_FIELDS = {"symbol": rec.SYMBOL, "direction": rec.DIRECTION, "entry_bar": rec.ENTRY_BAR,
                  "exit_bar": rec.EXIT_BAR, "reason": rec.REASON}
FLOAT_FIELDS = {"entry_price": rec.ENTRY_PRICE, "exit_price": rec.EXIT_PRICE, "units": rec.UNITS,
                "fees": rec.FEES, "pnl": rec.PNL, "return": rec.RETURN}


def _close_enough(got: float, want: float, scale: float = 0.0) -> bool:
    """Within RTOL of ``want`` (ATOL if it is 0), or of ``scale`` when that is larger: a trade's pnl is a difference
    of amounts of the size of its entry value, so its rounding error is relative to that, not to the pnl itself
    (a short closed near break-even has a pnl of ~1e-3 on 1e4 committed)."""
    return abs(got - want) <= max(RTOL * max(abs(want), scale), ATOL if want == 0 else 0.0)


def _trades_match(got, want) -> bool:
    entry_value = want[rec.UNITS] * want[rec.ENTRY_PRICE]
    scales = {rec.PNL: entry_value, rec.RETURN: 1.0}  # return = pnl / committed: the same tolerance, relative
    return all(got[c] == want[c] for c in INTEGER_FIELDS.values()) and \
        all(_close_enough(got[c], want[c], scales.get(c, 0.0)) for c in FLOAT_FIELDS.values())


def _trade_text(row) -> str:
    return (f"sym={int(row[rec.SYMBOL])} dir={int(row[rec.DIRECTION]):+d} "
            f"bars={int(row[rec.ENTRY_BAR])}->{int(row[rec.EXIT_BAR])} "
            f"price={row[rec.ENTRY_PRICE]:.10g}->{row[rec.EXIT_PRICE]:.10g} units={row[rec.UNITS]:.10g} "
            f"fees={row[rec.FEES]:.10g} pnl={row[rec.PNL]:.10g} ret={row[rec.RETURN]:.10g} "
            f"{rec.EXIT_REASONS[int(row[rec.REASON])]}")


def _mismatches(sim, equity, trades, in_market, unfunded) -> list[str]:
    problems = []
    if sim.equity.shape != equity.shape:
        problems.append(f"equity has {sim.equity.shape} values, expected {equity.shape}")
    else:
        bad = [i for i, (g, w) in enumerate(zip(sim.equity.tolist(), equity.tolist())) if not _close_enough(g, w)]
        if bad:
            i = bad[0]
            problems.append(f"equity differs on {len(bad)} bar(s), first bar {i}: got {sim.equity[i]!r}, "
                            f"expected {equity[i]!r}")
    if sim.trades.shape != trades.shape:
        problems.append(f"{sim.trades.shape[0]} trades, expected {trades.shape[0]}")
    for k in range(max(sim.trades.shape[0], trades.shape[0])):
        got = sim.trades[k] if k < sim.trades.shape[0] else None
        want = trades[k] if k < trades.shape[0] else None
        if got is None or want is None or not _trades_match(got, want):
            problems.append(f"first differing trade #{k}:\n    got      "
                            f"{'-' if got is None else _trade_text(got)}\n    expected "
                            f"{'-' if want is None else _trade_text(want)}")
            break
    if sim.bars_in_market != in_market:
        problems.append(f"bars_in_market {sim.bars_in_market}, expected {in_market}")
    if sim.unfunded_entries != unfunded:
        problems.append(f"unfunded_entries {sim.unfunded_entries}, expected {unfunded}")
    return problems


def check_case(case: Case) -> tuple[np.ndarray, np.ndarray, int]:
    """Run the reference and the kernel (fresh arrays and the shared workspace); fail with the case's description."""
    reference = Reference(case)
    equity, trades, in_market = reference.run()
    for label, workspace in (("fresh arrays", None), ("workspace", WORKSPACE)):
        problems = _mismatches(case.run(workspace), equity, trades, in_market, reference.unfunded)
        assert not problems, f"[{label}] {case.describe()}\n  " + "\n  ".join(problems)
    return equity, trades, in_market


# ----------------------------------------------------------------------------------------------- random cases

def random_ohlc(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    """One symbol's valid OHLC: a geometric random walk with occasional gaps (the open far from the previous
    close), high ≥ max(open, close), low ≤ min(open, close), all positive."""
    vol = rng.choice([0.002, 0.008, 0.02, 0.04])
    drift = rng.normal(0.0, vol / 4)
    gap = rng.random(n) < rng.choice([0.0, 0.02, 0.08])
    overnight = rng.normal(0.0, vol / 5, n) + gap * rng.normal(0.0, 6 * vol, n)
    intrabar = rng.normal(drift, vol, n)
    log_close = math.log(rng.uniform(2.0, 500.0)) + np.cumsum(overnight + intrabar)
    close = np.exp(log_close)
    open_ = np.exp(log_close - intrabar)
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, vol / 2, n)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, vol / 2, n)))
    return open_, high, low, close


def punch_missing_bars(rng: np.random.Generator, o, h, l, c) -> str:
    """Missing bars as raybt.data aligns them: every field NaN before the symbol's first bar; on later bars it lacks,
    open/high/low NaN and the close carried forward. Sometimes only the open is NaN (high/low left in place): the
    engine defines a missing bar by its NaN open alone. Returns a short description."""
    n = c.size
    kinds = []
    first = 0
    if rng.random() < 0.35:
        first = int(rng.integers(1, n // 2))
        kinds.append(f"leading={first}")
    missing = np.zeros(n, dtype=bool)
    if rng.random() < 0.5:
        missing |= rng.random(n) < rng.choice([0.02, 0.1, 0.3])
        for _ in range(rng.integers(0, 4)):  # a few runs of consecutive missing bars
            start = int(rng.integers(0, n))
            missing[start:start + int(rng.integers(2, 15))] = True
        kinds.append("interior")
    only_open = rng.random() < 0.25
    if only_open:
        kinds.append("open-only")
    if rng.random() < 0.15:
        missing[n - int(rng.integers(1, 10)):] = True  # the symbol's last bar comes before the end
        kinds.append("trailing")
    missing[:first + 1] = False  # the symbol's first bar exists
    for array in (o, h, l, c):
        array[:first] = NAN
    for t in np.flatnonzero(missing):
        o[t] = NAN
        if not only_open:
            h[t] = l[t] = NAN
        c[t] = c[t - 1]
    return ",".join(kinds) or "none"


def random_signals(rng: np.random.Generator, n_symbols: int, n_columns: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Entries and exits with per-symbol densities (sparse like crossovers, or dense), sometimes with long stretches
    where no symbol has any signal."""
    densities = [0.0, 0.005, 0.01, 0.02, 0.03, 0.1, 0.3]
    d_entry = rng.choice(densities, n_symbols)
    d_exit = rng.choice(densities, n_symbols)
    entries = rng.random((n_symbols, n_columns)) < d_entry[:, None]
    exits = rng.random((n_symbols, n_columns)) < d_exit[:, None]
    quiet = []
    if rng.random() < 0.5:
        for _ in range(rng.integers(1, 4)):
            start, length = int(rng.integers(0, n_columns)), int(rng.integers(20, max(21, n_columns // 2)))
            entries[:, start:start + length] = exits[:, start:start + length] = False
            quiet.append(f"{start}+{length}")
    text = f"entry_density={d_entry.tolist()} exit_density={d_exit.tolist()} quiet={quiet}"
    return entries, exits, text


STOP_LEVELS = [0.002, 0.01, 0.03, 0.1]
STOP_SETS = [(), ("stop_loss",), ("take_profit",), ("trailing_stop",), ("stop_loss", "take_profit"),
             ("stop_loss", "trailing_stop"), ("take_profit", "trailing_stop"),
             ("stop_loss", "take_profit", "trailing_stop")]


def random_case(seed: int) -> Case:
    rng = np.random.default_rng(seed)
    n_symbols = int(rng.integers(1, 4))
    n_price = int(rng.integers(50, 401))
    columns = [random_ohlc(rng, n_price) for _ in range(n_symbols)]
    missing = [punch_missing_bars(rng, *col) for col in columns]
    o, h, l, c = (np.array([col[i] for col in columns]) for i in range(4))

    first_bar, n_bars = 0, None
    if rng.random() < 0.3:
        first_bar = int(rng.integers(1, n_price // 3))
    if rng.random() < 0.3:
        n_bars = int(rng.integers(20, n_price - first_bar + 1))
    window = n_price - first_bar if n_bars is None else n_bars
    signal_offset = int(rng.integers(1, 40)) if rng.random() < 0.3 else 0
    n_columns = signal_offset + window + int(rng.integers(0, 3) if rng.random() < 0.3 else 0)
    entries, exits, signal_text = random_signals(rng, n_symbols, n_columns)

    stops = {name: float(rng.choice(STOP_LEVELS)) for name in STOP_SETS[rng.integers(len(STOP_SETS))]}
    costs = CostModel(initial_amount=float(rng.choice([1_000.0, 10_000.0, 123_456.0])),
                      fees=float(rng.choice([0.0, 0.0005, 0.002])),
                      fixed_fee=float(rng.choice([0.0, 0.0, 1.0, 7.5])),
                      slippage=float(rng.choice([0.0, 0.0, 0.0005, 0.003])),
                      fill=str(rng.choice(["close", "next_open"])))
    size = float(rng.choice([1.0, 1.0, 0.5, 0.3, round(rng.uniform(0.05, 1.0), 3)]))
    direction = str(rng.choice(["long", "short", "both"]))
    return Case(o, h, l, c, entries, exits, costs, first_bar=first_bar, n_bars=n_bars, signal_offset=signal_offset,
                size=size, direction=direction, note=f"seed={seed} missing={missing} {signal_text}", **stops)


@pytest.mark.parametrize("seed", range(N_RANDOM))
def test_kernel_matches_reference_on_random_case(seed):
    check_case(random_case(seed))


def test_random_cases_exercise_every_rule():
    """The random cases are only worth their number if they reach every rule: count what the reference did."""
    seen = Counter()
    for seed in range(N_RANDOM):
        case = random_case(seed)
        reference = Reference(case)
        _, trades, _ = reference.run()
        seen.update(reference.stats)
        seen["one symbol" if case.close.shape[0] == 1 else "several symbols"] += 1
        seen[f"fill {case.costs.fill}"] += 1
        seen[f"direction {case.direction}"] += 1
        seen["range window"] += case.first_bar > 0 or case.n_bars is not None
        seen["signal offset"] += case.signal_offset > 0
        seen["symbol with leading missing bars"] += bool(np.isnan(case.close[:, 0]).any())
        seen["short trade"] += int((trades[:, rec.DIRECTION] < 0).sum())
        seen["long trade"] += int((trades[:, rec.DIRECTION] > 0).sum())
    expected = [f"{reason} {how}" for reason in ("stop_loss", "take_profit", "trailing_stop")
                for how in ("at the open", "at its level")]
    expected += ["valued at the previous close at an open", "entry skipped", "all the cash invested", "reversal",
                 "entry after another symbol's same-bar exit",
                 "part of the cash invested", "queued order waits for a missing bar", "signal on a missing bar",
                 "signal on the last bar dropped", "position open over a missing bar",
                 "position open over a missing bar with a high/low", "several positions open",
                 "open at end", "one symbol", "several symbols", "fill close", "fill next_open", "direction long",
                 "direction short", "direction both", "range window", "signal offset",
                 "symbol with leading missing bars", "short trade", "long trade"]
    rare = {rule: seen[rule] for rule in expected if seen[rule] < 5}
    assert not rare, f"rules the random cases hardly reach: {rare}; all counts: {dict(seen)}"


# ---------------------------------------------------------------------------------------------- targeted cases

def _bars(closes, spread=0.001) -> list[list[float]]:
    """OHLC lists from closes: each bar opens at the previous close, high/low ``spread`` beyond open and close."""
    closes = [float(x) for x in closes]
    opens = [closes[0]] + closes[:-1]
    highs = [max(o, c) * (1 + spread) for o, c in zip(opens, closes)]
    lows = [min(o, c) * (1 - spread) for o, c in zip(opens, closes)]
    return [opens, highs, lows, closes]


def _make_missing(bars, t, *, open_only=False) -> None:
    """Bar ``t`` of one symbol's ``[open, high, low, close]`` lists becomes missing (close carried forward): NaN
    open/high/low as raybt.data aligns bars, or (``open_only``) just a NaN open, which alone defines a missing bar."""
    bars[0][t] = NAN
    if not open_only:
        bars[1][t] = bars[2][t] = NAN
    bars[3][t] = bars[3][t - 1]


def _case(symbols, entry_bars, exit_bars=None, *, fill="close", fees=0.001, slippage=0.0005, fixed_fee=0.0, note,
          **rules) -> Case:
    """A case from per-symbol ``[open, high, low, close]`` lists and per-symbol signal bars."""
    o, h, l, c = (np.array([sym[i] for sym in symbols], dtype=np.float64) for i in range(4))
    n = c.shape[1]
    entries = np.zeros(c.shape, dtype=bool)
    exits = np.zeros(c.shape, dtype=bool)
    for s, bars in enumerate(entry_bars):
        entries[s, list(bars)] = True
    for s, bars in enumerate(exit_bars or [[] for _ in symbols]):
        exits[s, list(bars)] = True
    assert n == entries.shape[1]
    return Case(o, h, l, c, entries, exits, CostModel(10_000.0, fees, fixed_fee, slippage, fill), note=note, **rules)


def _reasons(trades) -> list[tuple[int, int, int]]:
    return [(int(t[rec.SYMBOL]), int(t[rec.EXIT_BAR]), int(t[rec.REASON])) for t in trades]


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("ending", ["intrabar", "gap", "gap after a missing bar"])
@pytest.mark.parametrize("with_second_symbol", [False, True])
@pytest.mark.parametrize("open_only", [False, True])
def test_trailing_stop_over_a_long_rise_with_missing_bars(fill, ending, with_second_symbol, open_only):
    # 260 bars rising 0.4 % a bar with ±0.1 % noise (a 3 % trailing stop never reached), one bar in seven missing
    # plus a run of five: no check and no new best price there, though each has a 5 % spike in its high (NaN, or
    # kept with only the open NaN). Then the fall on bar 250: within the bar (low through the level), as a gap at
    # its open, or as a gap at the open of bar 251 with bar 250 missing.
    rng = np.random.default_rng(11)
    n = 260
    closes = 50 * np.exp(np.cumsum(0.004 + rng.normal(0, 0.001, n)))
    a = _bars(closes)
    for t in list(range(9, 250, 7)) + list(range(120, 125)):
        a[1][t] *= 1.05  # a spike in the high: only seen if the bar is wrongly taken as traded
        _make_missing(a, t, open_only=open_only)
    drop = 250
    if ending == "intrabar":
        a[2][drop] = a[3][drop - 1] * 0.9
    else:
        bar = drop if ending == "gap" else drop + 1
        if ending == "gap after a missing bar":
            _make_missing(a, drop, open_only=open_only)
        for t in range(bar, n):
            for field_ in a:
                field_[t] *= 0.9
    symbols = [a]
    entry_bars = [[3]]
    if with_second_symbol:  # a second symbol also long under the same stop, far from it: the multi-symbol kernel
        symbols.append(_bars(20 * np.exp(np.cumsum(0.002 + rng.normal(0, 0.0005, n)))))
        entry_bars.append([5])
    case = _case(symbols, entry_bars, fill=fill, trailing_stop=0.03, size=0.5,
                 note=f"trailing rise fill={fill} ending={ending} two_symbols={with_second_symbol} "
                      f"open_only={open_only}")
    _, trades, _ = check_case(case)
    exit_bar = drop + (ending == "gap after a missing bar")
    assert (0, exit_bar, TRAILING_STOP) in _reasons(trades), _reasons(trades)
    if ending != "intrabar":  # filled at the open, below the level
        row = [t for t in trades if t[rec.SYMBOL] == 0][0]
        assert row[rec.EXIT_PRICE] == pytest.approx(case.open[0, exit_bar] * (1 - 0.0005), rel=1e-12)


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("first_to_stop", [0, 1])
@pytest.mark.parametrize("direction", ["long", "short"])
def test_two_symbols_one_stops_while_the_other_stays_open(fill, first_to_stop, direction):
    # Both symbols are positioned from bars 2 and 4 under a 3 % stop loss, a 5 % take profit and a 4 % trailing
    # stop; one of them hits its stop on bar 60 while the other is open until bar 150; the first re-enters on bar 80
    # and stops again on bar 200 (a gap through the stop); the other is re-entered on bar 170 and held to the end.
    # Flat otherwise (±0.03 % noise a bar).
    rng = np.random.default_rng(5 + first_to_stop)
    n = 240
    sign = 1 if direction == "long" else -1
    early = _bars(30 * np.exp(rng.normal(0, 0.001, n).cumsum() * 0.3))
    late = _bars(70 * np.exp(rng.normal(0, 0.001, n).cumsum() * 0.3))
    early[2 if sign > 0 else 1][60] = early[3][59] * (1 - sign * 0.05)     # stop loss, within the bar
    late[1 if sign > 0 else 2][150] = late[3][149] * (1 + sign * 0.08)     # take profit, within the bar
    for t in range(200, n):                                               # gap through the stop loss at bar 200
        for field_ in early:
            field_[t] *= 1 - sign * 0.05
    symbols = [early, late] if first_to_stop == 0 else [late, early]
    bars = [[2, 80], [4, 170]] if first_to_stop == 0 else [[4, 170], [2, 80]]
    case = _case(symbols, bars, fill=fill, direction=direction, size=0.45, fixed_fee=1.0, stop_loss=0.03,
                 take_profit=0.05, trailing_stop=0.04,
                 note=f"two symbols fill={fill} first_to_stop={first_to_stop} direction={direction}")
    _, trades, _ = check_case(case)
    e, lt = first_to_stop, 1 - first_to_stop
    shift = fill == "next_open"
    assert _reasons(trades)[:3] == [(e, 60, STOP_LOSS), (lt, 150, TAKE_PROFIT), (e, 200, STOP_LOSS)], \
        _reasons(trades)
    assert _reasons(trades)[3:] == [(lt, n - 1, OPEN_AT_END)]
    assert int(trades[0][rec.ENTRY_BAR]) == 2 + shift


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("direction", ["long", "short"])
@pytest.mark.parametrize("kind", ["stop loss", "trailing stop", "take profit", "gap"])
def test_stop_on_the_bar_right_after_the_entry(fill, direction, kind):
    # Entry signal on bar 10; the entry bar itself (bar 10 for close fills) reaches far beyond every level, which
    # must not count; the bar after the fill (11, or 12 with next_open fills, whose fill bar 11 is checked too but
    # stays quiet) reaches the level within the bar, or gaps through it at the open.
    rng = np.random.default_rng(3)
    n = 40
    sign = 1 if direction == "long" else -1
    bars = _bars(40 * np.exp(rng.normal(0, 0.0002, n).cumsum()), spread=0.0001)
    bars[1][10] *= 1.2
    bars[2][10] *= 0.8
    hit = 11 if fill == "close" else 12
    adverse_low_or_high = 2 if sign > 0 else 1
    favourable = 1 if sign > 0 else 2
    if kind == "gap":
        for field_ in bars:
            field_[hit] *= 1 - sign * 0.01
    elif kind == "take profit":
        bars[favourable][hit] = bars[3][hit - 1] * (1 + sign * 0.01)
    else:
        bars[adverse_low_or_high][hit] = bars[3][hit - 1] * (1 - sign * 0.01)
    rules = {"trailing_stop": 0.004} if kind == "trailing stop" else {"stop_loss": 0.004, "take_profit": 0.005}
    case = _case([bars], [[10]], fill=fill, direction=direction, slippage=0.0, fees=0.0005, fixed_fee=0.5,
                 note=f"stop right after entry fill={fill} direction={direction} kind={kind}", **rules)
    _, trades, _ = check_case(case)
    reason = {"stop loss": STOP_LOSS, "trailing stop": TRAILING_STOP, "take profit": TAKE_PROFIT,
              "gap": TRAILING_STOP if "trailing_stop" in rules else STOP_LOSS}[kind]
    assert _reasons(trades) == [(0, hit, reason)]


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("direction", ["long", "short", "both"])
@pytest.mark.parametrize("ending", ["held", "stopped on the last bar", "last bar missing"])
def test_position_held_to_the_end_under_stops(fill, direction, ending):
    # Two symbols entered early under all three stops, never reached; symbol 1 is quiet after bar 30 (skipped to
    # the end). Variants: a stop reached on the very last bar; symbol 0's last two bars missing (valued at the
    # carried-forward close, marked there at the end).
    rng = np.random.default_rng(17)
    n = 300
    a = _bars(80 * np.exp(rng.normal(0, 0.002, n).cumsum()))
    b = _bars(15 * np.exp(rng.normal(0, 0.002, n).cumsum()))
    if ending == "stopped on the last bar":
        a[1][n - 1] *= 1.5
        a[2][n - 1] *= 0.5
    elif ending == "last bar missing":
        _make_missing(a, n - 2)
        _make_missing(a, n - 1)
    case = _case([a, b], [[1], [3, 30]], [[], [20]], fill=fill, direction=direction, size=0.5, stop_loss=0.4,
                 take_profit=0.45, trailing_stop=0.35, fixed_fee=2.0,
                 note=f"held to the end fill={fill} direction={direction} ending={ending}")
    _, trades, in_market = check_case(case)
    reasons = _reasons(trades)
    if ending == "stopped on the last bar":
        assert (0, n - 1, STOP_LOSS) in reasons or (0, n - 1, TRAILING_STOP) in reasons, reasons
    else:
        assert (0, n - 1, OPEN_AT_END) in reasons, reasons
    assert reasons[-1] == (1, n - 1, OPEN_AT_END), reasons
    assert in_market == n - (1 if fill == "close" else 2)
