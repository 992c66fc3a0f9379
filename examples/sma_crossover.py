"""One SMA-crossover backtest on two years of synthetic hourly data, printed.

    python examples/sma_crossover.py
"""

import raybt


class SmaCross(raybt.Strategy):
    """Long when the fast simple moving average crosses above the slow one; flat when it crosses below."""

    fast: int = 10
    slow: int = 50

    def signals(self, data):
        fast = raybt.indicators.sma(data.close, self.fast)
        slow = raybt.indicators.sma(data.close, self.slow)
        return raybt.indicators.crossed_above(fast, slow), raybt.indicators.crossed_below(fast, slow)


def main() -> None:
    data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
    period = raybt.DateRange("2023-01-01", "2024-01-01", name="2023")
    result = raybt.run_backtest(SmaCross(fast=10, slow=50), data, period, initial_amount=10_000, fees=0.001)
    print(result)
    for name in ("final_value", "total_return", "cagr", "sharpe", "sortino", "max_drawdown", "n_trades",
                 "win_rate", "profit_factor", "exposure", "buy_and_hold_return"):
        print(f"  {name:<20} {result.metrics[name]:.4f}")
    print(result.trades.head())


if __name__ == "__main__":
    main()
