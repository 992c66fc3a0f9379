"""raybt: thousands to millions of vectorized trading backtests in parallel on Ray.

The public API::

    raybt.Strategy            base class of strategies (parameters = annotated class attributes)
    raybt.DateRange           a backtest period (start inclusive, end exclusive, UTC)
    raybt.load_ohlcv          validate CSV/Parquet/DataFrame/dict input into MarketData
    raybt.synthetic_ohlcv     deterministic synthetic OHLCV
    raybt.run_backtest        one strategy on one range → Backtest (metrics, equity, trades)
    raybt.run_backtests       strategies × date ranges in parallel (Ray), with Parquet checkpoints → Results;
                              with keep=, ranges run as stages that prune strategies (raybt.stages)
    raybt.load_results        the rows stored in a checkpoint directory (lazily: columns, filter) → Results
    raybt.grid                every combination of parameter values → strategies
    raybt.random_grid         a seeded random sample of parameter values → strategies
    raybt.recommended_workers n_workers / batch sizes for this machine and data
    raybt.plot_equity         equity and drawdown of several backtests overlaid (plotly; the `plot` extra)
    raybt.indicators          fast, cached indicators (sma, ema, rsi, ...)
    raybt.metrics             performance metrics on any equity curve
    raybt.windows             walk-forward train/test windows (windows.rolling)
    raybt.stats               is it real? PSR, DSR, PBO, Reality Check, SPA, permutation test, the true number of trials
    raybt.walk_forward        walk-forward optimisation over windows.rolling folds → WalkForward
"""

from raybt import indicators, metrics, stages, stats, windows
from raybt.backtest import Backtest, run_backtest
from raybt.data import DataError, DateRange, MarketData, load_ohlcv, synthetic_ohlcv
from raybt.grid import grid, random_grid
from raybt.plots import plot_equity
from raybt.resources import Recommendation, recommended_workers
from raybt.results import Results, load_results
from raybt.strategy import SignalError, Strategy
from raybt.sweep import BacktestError, FailedBacktestsWarning, run_backtests
from raybt.walk_forward import WalkForward, walk_forward

__version__ = "0.1.0"

__all__ = [
    "Backtest", "BacktestError", "DataError", "DateRange", "FailedBacktestsWarning", "MarketData", "Recommendation",
    "Results", "SignalError", "Strategy", "WalkForward", "grid", "indicators", "load_ohlcv", "load_results",
    "metrics", "plot_equity", "random_grid", "recommended_workers", "run_backtest", "run_backtests", "stages", "stats",
    "synthetic_ohlcv", "walk_forward", "windows",
]
