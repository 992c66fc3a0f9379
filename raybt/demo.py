"""The embedded demo: an SMA-crossover sweep on synthetic hourly data (what ``raybt demo`` runs)."""

from __future__ import annotations

import numpy as np

import raybt
from raybt import indicators
from raybt.results import Results


class SmaCross(raybt.Strategy):
    """Long when the fast simple moving average crosses above the slow one; flat when it crosses below."""

    fast: int = 10
    slow: int = 50

    def signals(self, data):
        fast = indicators.sma(data.close, self.fast)
        slow = indicators.sma(data.close, self.slow)
        return indicators.crossed_above(fast, slow), indicators.crossed_below(fast, slow)

    @classmethod
    def signals_many(cls, data, params):
        """The signals of many (fast, slow) sets at once, bars × sets (sweeps use this; the result equals
        :meth:`signals` set by set): each distinct window's average once (:func:`raybt.indicators.sma`, cached like
        the one in :meth:`signals`), stacked one per column, then every set's crossings in one compiled pass
        (:func:`raybt.indicators.pair_crossings`, the rules of ``crossed_above`` / ``crossed_below``)."""
        close = data.arrays.close
        fast, slow = params["fast"].to_numpy(), params["slow"].to_numpy()
        windows, columns = np.unique(np.concatenate([fast, slow]), return_inverse=True)
        averages = np.stack([indicators.sma(close, n)[:, 0] for n in windows.tolist()])  # row per window
        return indicators.pair_crossings(averages.T, columns[:len(fast)], columns[len(fast):])

    signals_many_cells = 2**24
    """Bars × sets per :meth:`signals_many` call (see :attr:`raybt.Strategy.signals_many_cells`): whole chunks. Its
    temporaries are one average per window, so bigger calls look up and stack fewer averages per set."""


class SmaCrossArrays(SmaCross):
    """:class:`SmaCross` written on numpy arrays (``data.arrays``): the same signals without building pandas objects
    in every backtest (about 70 µs less per backtest at 43,800 bars, see ``benchmarks/bench_core.py``)."""

    def signals(self, data):
        close = data.arrays.close
        fast = indicators.sma(close, self.fast)
        slow = indicators.sma(close, self.slow)
        return indicators.crossed_above(fast, slow), indicators.crossed_below(fast, slow)


def demo_strategies(n: int) -> list[SmaCross]:
    """About ``n`` SmaCross parameter sets: fast 2..101 × slow 60, 65, … (fast and slow grids grow together)."""
    n_slow = max(1, min(50, n // 100 or 1))
    n_fast = max(1, -(-n // n_slow))
    return [SmaCross(fast=2 + i, slow=60 + 5 * j) for i in range(n_fast) for j in range(n_slow)][:n]


def run_demo(n_strategies: int = 5_000, *, n_workers: int | None = -1, checkpoint_dir: str | None = "runs/demo",
             show_progress: bool = True) -> Results:
    """``n_strategies`` SmaCross parameter sets × the years 2022 and 2023 of synthetic BTC/EUR hourly data."""
    data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    return raybt.run_backtests(demo_strategies(n_strategies), data, date_ranges=ranges, initial_amount=10_000,
                               fees=0.001, n_workers=n_workers, batch_size=250, checkpoint_dir=checkpoint_dir,
                               checkpoint_batch_size=2_000, show_progress=show_progress, continue_on_error=True)
