"""Is it real? The best of 10,000 SMA-crossover strategies, on a random walk and on a market with a planted trend.

    python examples/is_it_real.py              # 10,000 strategies per market (about 4 minutes on 2 busy cores)
    python examples/is_it_real.py --small      # 400 strategies per market, in seconds

Both markets are two years of hourly bars made by :func:`market` below (not ``raybt.synthetic_ohlcv``, which has a
positive drift). On the **random walk** every bar's return is independent noise with mean zero, so no strategy has
an edge: whatever the best backtest earned is luck. On the **planted market** the same noise rides on a drift that
switches between up and down and persists for about 50 bars (an hour each) at a time: a real, lasting effect that a
fast SMA cross follows. The same pipeline judges both: a sweep over the whole two years (checkpointed, so the
trials are counted from the store), a walk-forward optimisation on the same grid (180-day train, 90-day test
windows), and ``results.verdict(best, data, walk_forward=wf)``.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
import pandas as pd

import raybt
from raybt import indicators
from raybt.verdict import Verdict

START, END = "2022-01-01", "2024-01-01"
WARMUP = 605
"""Bars of data before each window for the slow averages (the longest slow SMA of the full grid is 601 bars)."""
FEES = 0.0005
CASES = {
    "a pure random walk (no strategy can have an edge)": dict(seed=4),
    "a market with a planted, persistent trend": dict(seed=1, trend=0.0015),
}
"""The two markets: title → :func:`market` arguments."""


class SmaCross(raybt.Strategy):
    """Long when the fast simple moving average crosses above the slow one; flat when it crosses below."""

    fast: int = 10
    slow: int = 50
    warmup = WARMUP

    def signals(self, data):
        close = data.arrays.close
        fast, slow = indicators.sma(close, self.fast), indicators.sma(close, self.slow)
        return indicators.crossed_above(fast, slow), indicators.crossed_below(fast, slow)


def market(seed: int, *, trend: float = 0.0, regime_bars: float = 50.0, annual_volatility: float = 0.5,
           start: str = "2021-12-01", end: str = END) -> raybt.MarketData:
    """Hourly OHLCV whose close-to-close returns are ``trend · regime + noise``: noise is normal with mean zero and
    ``annual_volatility``; ``regime`` is +1 or −1 and flips with probability ``1 / regime_bars`` at each bar.
    ``trend=0`` is a pure random walk (zero drift: the expected return of every bar is 0, so no strategy can
    have an edge). Each bar opens at the previous close; high and low stretch beyond the body by random amounts."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, end, freq="1h", inclusive="left", tz="UTC", name="timestamp").as_unit("ns")
    n = len(index)
    sigma = annual_volatility / np.sqrt(365 * 24)
    regime = np.where(np.cumsum(rng.random(n) < 1 / regime_bars) % 2 == 0, 1.0, -1.0)
    close = 100.0 * np.cumprod(1.0 + trend * regime + sigma * rng.standard_normal(n))
    open_ = np.concatenate([[100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, sigma / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, sigma / 2, n)))
    return raybt.MarketData(index=index, symbols=("X",), open=open_[None], high=high[None], low=low[None],
                            close=close[None], volume=np.ones((1, n)))


def sma_grid(n_fast: int = 100, n_slow: int = 100, step: int = 1) -> list[SmaCross]:
    """``n_fast × n_slow`` strategies: fast = 2, 2 + step, ... and slow = fast + 5·step, fast + 10·step, ...
    (fast < slow always). The full grid and ``sma_grid(20, 20, step=5)`` span the same fast 2–101, slow ≤ 601."""
    return [SmaCross(fast=2 + step * i, slow=2 + step * i + 5 * step * (j + 1))
            for i in range(n_fast) for j in range(n_slow)]


def is_it_real(data: raybt.MarketData, strategies: list[SmaCross], checkpoint_dir: str,
               n_workers: int | None = None) -> tuple[pd.Series, Verdict]:
    """Sweep, walk forward and judge: the best row by Sharpe and its verdict."""
    options = dict(fees=FEES, n_workers=n_workers, checkpoint_dir=checkpoint_dir, show_progress=False)
    results = raybt.run_backtests(strategies, data, [raybt.DateRange(START, END, name="2022-2023")], **options)
    best = results.best("sharpe", n=1).iloc[0]
    folds = raybt.windows.rolling(START, END, train="180D", test="90D", data=data, warmup=WARMUP)
    wf = raybt.walk_forward(strategies, data, folds, **options)
    return best, results.verdict(best, data, walk_forward=wf, n_workers=n_workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help="20 × 20 strategies over the same span instead of 100 × 100")
    parser.add_argument("--n-workers", type=int, default=None, help="None: this process; -1: Ray on every CPU")
    args = parser.parse_args()
    strategies = sma_grid(20, 20, step=5) if args.small else sma_grid()
    for title, arguments in CASES.items():
        data = market(**arguments)
        with tempfile.TemporaryDirectory() as directory:
            best, verdict = is_it_real(data, strategies, directory, args.n_workers)
        print(f"\n=== {title}: the best of {len(strategies):,} strategies made {best['total_return']:+.0%} "
              f"(buy and hold {best['buy_and_hold_return']:+.0%}), Sharpe {best['sharpe']:.2f}, "
              f"{best['n_trades']:.0f} trades\n{verdict}")


if __name__ == "__main__":
    main()
