"""Permuted markets for the permutation (Monte-Carlo) test: the same bars in another order.

Permutation ``i`` of seed ``seed`` reorders the bars of a date range while each bar keeps its shape relative to the
previous close. For every symbol and bar ``t`` of the window the tuple

    (log(close[t] / close[t-1]), log(open[t] / close[t-1]), log(high[t] / close[t-1]), log(low[t] / close[t-1]))

and the bar's volume move together to another position; prices are rebuilt from the close before the window by
chaining the permuted close-to-close returns. Rules:

* **Window.** The bars ``start:end`` of the date range (:meth:`raybt.data.MarketData.bounds`) are permuted; the
  data's first bar has no previous close, so it is kept when the range starts there. Bars before the window (a
  strategy's warm-up) and after it are the real ones (the window's returns keep their total, so its last close is
  the real one up to rounding): only the period under test is shuffled.
* **Several symbols.** One order of bar positions is shared by every symbol, so what happens across symbols on the
  same bar (correlation, a common shock) stays together.
* **Missing bars.** A symbol without a bar somewhere in the window or on the bar before it (NaN open, high, low or
  close: before its first bar or in a gap, see :mod:`raybt.data`) cannot be permuted: :func:`check_permutable`
  raises a :class:`~raybt.data.DataError` naming the symbol and the first such timestamp.
* **Randomness.** The order is ``Generator(PCG64(SeedSequence(seed, spawn_key=(i,)))).permutation(n)`` — the
  ``i``-th child of ``SeedSequence(seed)`` (what ``SeedSequence(seed).spawn`` hands out) — so a permutation depends
  on ``(seed, i)`` alone: it is the same in every process, whichever worker computes it and in whatever order.
* **Rounding.** Closes are rebuilt by a running product (each close is the previous one times its return), and
  each bar's open, high and low are the previous close times theirs, so a bar whose high equalled its close still
  does, bit for bit.

Workers build a permuted market from the real one (already in their object store) and ``(seed, i)``; nothing but
those two integers travels with a task. :func:`permuted_market` keeps the last two per process (and, when it drops
one, the per-range contexts of :func:`raybt.backtest.range_context` and the indicator cache, which hold it: copies of a
large data set must not linger in a worker).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from raybt import indicators
from raybt.backtest import range_context
from raybt.data import FIELDS, DataError, DateRange, MarketData

Permutation = tuple[int, int]
"""``(seed, i)``: permutation ``i`` of the permutations drawn from ``seed``."""

_KEPT = 2  # jobs run permutation by permutation, so a worker needs only the current one (and the next)
_CACHE: OrderedDict[tuple[str, int, int, int, int], MarketData] = OrderedDict()


def bar_order(seed: int, i: int, n_bars: int) -> np.ndarray:
    """The order of the ``n_bars`` bars of permutation ``i`` of ``seed``: position ``j`` of the window receives bar
    ``order[j]``."""
    if not (isinstance(seed, (int, np.integer)) and isinstance(i, (int, np.integer)) and seed >= 0 and i >= 0):
        raise ValueError(f"a permutation is (seed, i) with non-negative integers, got ({seed!r}, {i!r})")
    sequence = np.random.SeedSequence(int(seed), spawn_key=(int(i),))
    return np.random.Generator(np.random.PCG64(sequence)).permutation(n_bars)


def window(market: MarketData, date_range: DateRange | None) -> tuple[int, int]:
    """Bar positions ``(first, end)`` that a permutation of ``date_range`` reorders (``first`` >= 1: a permuted bar
    needs the close before it)."""
    _, start, end = market.bounds(date_range)
    return max(start, 1), end


def check_permutable(market: MarketData, date_range: DateRange | None) -> None:
    """Raise :class:`~raybt.data.DataError` if a symbol lacks a bar in the window of ``date_range`` or on the bar
    before it (see the module docstring); the message names the symbol, the first such timestamp and the range."""
    first, end = window(market, date_range)
    problem = _missing_bar(market, first, end)
    if problem is not None:
        name = date_range.name if date_range is not None else "all data"
        raise DataError(f"{problem}, which the permutations of range {name!r} need: a market can be permuted only "
                        f"where every symbol has every bar; choose a range where all symbols trade")


def _missing_bar(market: MarketData, first: int, end: int) -> str | None:
    prices = np.stack([market.open, market.high, market.low, market.close])[:, :, first - 1:end]
    missing = np.isnan(prices).any(axis=0)  # (symbols, bars)
    if not missing.any():
        return None
    symbol, bar = np.argwhere(missing)[0]
    return f"symbol {market.symbols[symbol]!r} has no bar at {market.index[first - 1 + bar]} (NaN prices)"


def permuted_market(market: MarketData, date_range: DateRange | None, permutation: Permutation) -> MarketData:
    """``market`` with the bars of ``date_range`` in the order of ``permutation`` (see the module docstring); the
    index, symbols and the bars outside the window are the real ones. Kept for the last few permutations asked for
    in this process."""
    seed, i = permutation
    first, end = window(market, date_range)
    key = (market.fingerprint, int(seed), int(i), first, end)
    known = _CACHE.pop(key, None)
    if known is None:
        known = _permute(market, first, end, bar_order(seed, i, end - first))
        while len(_CACHE) >= _KEPT:
            _CACHE.popitem(last=False)
            # Their per-range contexts and cached indicators hold the dropped market and will never be asked for
            # again: let the memory go (the real market's are rebuilt once).
            range_context.cache_clear()
            indicators.clear_cache()
    _CACHE[key] = known  # most recently used last
    return known


def _permute(market: MarketData, first: int, end: int, order: np.ndarray) -> MarketData:
    """Rebuild bars ``first:end`` from the bar tuples of ``first + order``, chained from the close at ``first - 1``."""
    if end - first < 2:
        return market
    problem = _missing_bar(market, first, end)
    if problem is not None:
        raise DataError(f"cannot permute bars {market.index[first]} .. {market.index[end - 1]}: {problem}")
    prev_close = market.close[:, first - 1:end - 1]
    log_ratio = {f: np.log(getattr(market, f)[:, first:end] / prev_close)[:, order]
                 for f in ("open", "high", "low", "close")}
    closes = np.cumprod(np.concatenate([market.close[:, first - 1:first], np.exp(log_ratio["close"])], axis=1),
                        axis=1)
    new_prev = closes[:, :-1]
    fields = {f: np.array(getattr(market, f)) for f in FIELDS}
    fields["close"][:, first:end] = closes[:, 1:]
    for f in ("open", "high", "low"):
        fields[f][:, first:end] = new_prev * np.exp(log_ratio[f])
    fields["volume"][:, first:end] = market.volume[:, first + order]
    return MarketData(market.index, market.symbols, **fields)


def permutations_record(permutations: Sequence[Permutation | None] | None) -> dict[str, object]:
    """What a run's manifest entry says about its permuted markets (nothing for a sweep on the real data): their
    count and seeds. :func:`raybt.stats.count_trials` refuses directories with such runs (a permuted market's rows
    are not trials of a strategy search)."""
    drawn = [p for p in permutations or () if p is not None]
    if not drawn:
        return {}
    return {"permutations": len(drawn), "permutation_seeds": sorted({int(seed) for seed, _ in drawn})}
