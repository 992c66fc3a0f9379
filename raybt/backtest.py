"""One backtest: signals → simulation → metrics, and ``run_backtest`` for exploring a single strategy.

:func:`evaluate` is the unit of work every executor runs (in-process or in a Ray worker); it returns the metric
values and the kernel's plain arrays. :func:`run_backtest` wraps it with pandas objects for a person to look at.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd

from raybt import _records as rec
from raybt.data import DataLike, DateRange, DateRangeWarning, MarketData, MarketView, load_ohlcv
from raybt.engine import CostModel, Simulation, Workspace, simulate
from raybt.metrics import METRIC_NAMES, CurveScan, RangeCalendar
from raybt.strategy import Strategy, signal_arrays


@dataclass(frozen=True)
class RangeContext:
    """What every strategy on the same range and warm-up shares: the view signals see (from ``signal_start``) and
    the calendar metrics use (bars ``start:end``)."""

    view: MarketView
    calendar: RangeCalendar
    signal_start: int
    start: int
    end: int


@lru_cache(maxsize=64)
def range_context(market: MarketData, date_range: DateRange | None, warmup: int,
                  periods_per_year: float | None) -> RangeContext:
    """Build (once per process, least recently used of 64 kept) the shared context of a range."""
    signal_start, start, end = market.bounds(date_range, warmup)
    calendar = RangeCalendar.build(market.times_ns[start:end], market.close[:, start:end].T, periods_per_year)
    return RangeContext(market.view(signal_start, end), calendar, signal_start, start, end)


def evaluate(strategy: Strategy, market: MarketData, date_range: DateRange | None, costs: CostModel,
             periods_per_year: float | None = None, risk_free_rate: float = 0.0, workspace: Workspace | None = None
             ) -> tuple[tuple[float, ...], Simulation, RangeContext]:
    """Run one strategy on one range: signals on the warm-up-extended view, simulation on the range with the
    equity-curve metrics computed as it goes (a :class:`~raybt.metrics.CurveScan`), the metric values in
    :data:`~raybt.metrics.METRIC_NAMES` order. With a ``workspace`` (sweeps) the equity curve is not stored
    (``Simulation.equity`` is empty) and the trades are a view of its buffers, valid until its next use; without
    one, the curve is kept."""
    ctx = range_context(market, date_range, int(strategy.warmup), periods_per_year)
    entries, exits = signal_arrays(strategy, ctx.view)
    scan = workspace.scan if workspace is not None else CurveScan()
    keep_curve = workspace is None

    def run(exact: bool) -> Simulation:
        scan.begin(ctx.calendar, costs.initial_amount, risk_free_rate, size=float(strategy.size), exact=exact)
        return simulate(market.open, market.high, market.low, market.close, entries, exits, costs,
                        first_bar=ctx.start, n_bars=ctx.end - ctx.start, signal_offset=ctx.start - ctx.signal_start,
                        size=float(strategy.size), direction=strategy.direction, stop_loss=strategy.stop_loss,
                        take_profit=strategy.take_profit, trailing_stop=strategy.trailing_stop, workspace=workspace,
                        scan=scan, keep_curve=keep_curve)

    sim = run(exact=False)
    values = scan.row(sim.trades, sim.bars_in_market, sim.unfunded_entries)
    if values is None:  # this backtest's var_95 lies above the limit the previous ones suggested: keep all returns
        sim = run(exact=True)
        values = scan.row(sim.trades, sim.bars_in_market, sim.unfunded_entries)
    return values, sim, ctx


@dataclass(frozen=True)
class Backtest:
    """The result of :func:`run_backtest`: ``metrics`` (name → value), ``equity`` (Series at each bar's close,
    quote currency, UTC index), ``trades`` (one row per trade, open-at-end trades included), the strategy, the date
    range, the cost model and ``prices`` (the close of each symbol over the range, what :meth:`plot` draws)."""

    strategy: Strategy
    date_range: DateRange | None
    costs: CostModel
    metrics: dict[str, float]
    equity: pd.Series
    trades: pd.DataFrame
    prices: pd.DataFrame | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        m = self.metrics
        span = self.date_range.name if self.date_range is not None else "all data"
        return (f"Backtest({self.strategy!r}, {span}: final_value={m['final_value']:.2f}, "
                f"total_return={m['total_return']:.2%}, sharpe={m['sharpe']:.2f}, "
                f"max_drawdown={m['max_drawdown']:.2%}, n_trades={int(m['n_trades'])})")

    def plot(self, symbols: Sequence[str] | None = None):
        """An interactive plotly figure: each symbol's price with entry and exit markers, equity, drawdown and a
        table of the trades (see :func:`raybt.plots.plot_backtest`; needs ``pip install 'raybt[plot]'``)."""
        from raybt.plots import plot_backtest

        return plot_backtest(self, symbols)


def run_backtest(strategy: Strategy, data: DataLike, date_range: DateRange | None = None, *,
                 initial_amount: float = 10_000, fees: float = 0.0, fixed_fee: float = 0.0, slippage: float = 0.0,
                 fill: str = "close", periods_per_year: float | None = None,
                 risk_free_rate: float = 0.0, symbol: str | None = None) -> Backtest:
    """Backtest one strategy on one date range (``None`` = all data) and return a :class:`Backtest`.

    ``data`` is anything :func:`raybt.load_ohlcv` accepts; all its symbols form one portfolio with shared cash,
    unless ``symbol`` names one of them: then the strategy runs on that symbol's data alone (what a per-symbol
    sweep runs). Costs: ``fees`` (fraction of traded value, each side), ``fixed_fee`` (quote currency per order),
    ``slippage`` (fraction, against the trader); ``fill`` is "close" or "next_open". ``periods_per_year`` is
    inferred from the bar spacing when None; ``risk_free_rate`` is annual. A range that reaches past the data is
    shortened to the data with a :class:`~raybt.data.DateRangeWarning`.

    >>> data = raybt.synthetic_ohlcv(symbols=["A", "B"], start="2023-01-01", end="2023-03-01", freq="1D")
    >>> bt = raybt.run_backtest(raybt.demo.SmaCross(fast=5, slow=20), data, symbol="B")
    >>> sorted(set(bt.trades["symbol"])) in ([], ["B"])
    True
    """
    market = load_ohlcv(data)
    if symbol is not None:
        market = market.symbol_data(symbol)
    problem = market.coverage_warning(date_range)
    if problem is not None:
        warnings.warn(problem, DateRangeWarning, stacklevel=2)
    costs = CostModel(initial_amount, fees, fixed_fee, slippage, fill)
    values, sim, ctx = evaluate(strategy, market, date_range, costs, periods_per_year, risk_free_rate)
    index = market.index[ctx.start:ctx.end]
    equity = pd.Series(sim.equity, index=index, name="equity")
    prices = pd.DataFrame(market.close[:, ctx.start:ctx.end].T, index=index, columns=list(market.symbols))
    return Backtest(strategy, date_range, costs, dict(zip(METRIC_NAMES, values)), equity,
                    trades_frame(sim.trades, index, market.symbols), prices)


def trades_frame(trades: np.ndarray, index: pd.DatetimeIndex, symbols: tuple[str, ...]) -> pd.DataFrame:
    """Kernel trade records → a DataFrame with readable columns (times UTC, direction and exit reason as text)."""
    entry_bar = trades[:, rec.ENTRY_BAR].astype(np.int64)
    exit_bar = trades[:, rec.EXIT_BAR].astype(np.int64)
    return pd.DataFrame({
        "symbol": np.asarray(symbols, dtype=object)[trades[:, rec.SYMBOL].astype(np.int64)],
        "direction": np.where(trades[:, rec.DIRECTION] > 0, "long", "short"),
        "entry_time": index[entry_bar],
        "exit_time": index[exit_bar],
        "entry_price": trades[:, rec.ENTRY_PRICE],
        "exit_price": trades[:, rec.EXIT_PRICE],
        "units": trades[:, rec.UNITS],
        "fees": trades[:, rec.FEES],
        "pnl": trades[:, rec.PNL],
        "return": trades[:, rec.RETURN],
        "exit_reason": np.asarray(rec.EXIT_REASONS, dtype=object)[trades[:, rec.REASON].astype(np.int64)],
        "bars": exit_bar - entry_bar,
    })
