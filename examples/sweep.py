"""5,000 SMA-crossover parameter sets × 2 years, on every CPU with Ray, checkpointed to runs/sma.

    python examples/sweep.py            # first run computes 10,000 backtests
    python examples/sweep.py            # second run finds them all in runs/sma and computes nothing

Interrupt it (Ctrl-C, kill, power cut) and run it again: only the missing backtests run.
"""

import raybt
from sma_crossover import SmaCross


def main() -> None:
    data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    strategies = [SmaCross(fast=fast, slow=slow) for fast in range(2, 102) for slow in range(60, 310, 5)]
    print(raybt.recommended_workers(data, n_jobs=len(strategies) * len(ranges)))
    results = raybt.run_backtests(strategies, data, date_ranges=ranges, initial_amount=10_000, fees=0.001,
                                  n_workers=-1, batch_size=250, checkpoint_dir="runs/sma",
                                  checkpoint_batch_size=2_000, show_progress=True, continue_on_error=True)
    print(results)
    columns = ["strategy", "fast", "slow", "range", "total_return", "sharpe", "max_drawdown", "n_trades"]
    print(results.best("sharpe", n=10)[columns].to_string(index=False))


if __name__ == "__main__":
    main()
