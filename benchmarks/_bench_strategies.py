"""Strategies for benchmarks/bench_sweep.py (a module of its own, so Ray workers receive it by value).

The sweep benchmarks use ``SmaCross`` from ``examples/sma_crossover.py`` (the examples/sweep.py workload). The
million-backtest run needs 500,000 *distinct* cheap strategies on a short series, more than there are sensible
(fast, slow) pairs, so :class:`SizedSmaCross` also sweeps ``size`` (the fraction of equity per entry, a trading rule
the engine reads): same signals and same per-job work as ``SmaCross``, one more parameter in the id.
"""

import raybt


class SizedSmaCross(raybt.Strategy):
    """Long when the fast SMA crosses above the slow one, flat when it crosses below; ``size`` of equity per entry."""

    fast: int = 5
    slow: int = 30
    size: float = 1.0

    def signals(self, data):
        fast = raybt.indicators.sma(data.close, self.fast)
        slow = raybt.indicators.sma(data.close, self.slow)
        return raybt.indicators.crossed_above(fast, slow), raybt.indicators.crossed_below(fast, slow)
