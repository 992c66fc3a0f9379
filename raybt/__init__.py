"""raybt: thousands to millions of vectorized trading backtests in parallel on Ray.

The public API::

    raybt.Strategy            base class of strategies (parameters = annotated class attributes)
    raybt.DateRange           a backtest period (start inclusive, end exclusive, UTC)
    raybt.load_ohlcv          validate CSV/Parquet/DataFrame/dict input into MarketData
    raybt.synthetic_ohlcv     deterministic synthetic OHLCV
    raybt.run_backtest        one strategy on one range → Backtest (metrics, equity, trades)
    raybt.indicators          fast, cached indicators (sma, ema, rsi, ...)
    raybt.metrics             performance metrics on any equity curve
"""

from raybt import indicators, metrics
from raybt.backtest import Backtest, run_backtest
from raybt.data import DataError, DateRange, MarketData, load_ohlcv, synthetic_ohlcv
from raybt.strategy import SignalError, Strategy

__version__ = "0.1.0"

__all__ = [
    "Backtest", "DataError", "DateRange", "MarketData", "SignalError", "Strategy", "indicators", "load_ohlcv",
    "metrics", "run_backtest", "synthetic_ohlcv",
]
