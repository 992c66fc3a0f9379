"""Strategies for benchmarks/bench_sweep.py (a module of its own, so Ray workers receive it by value).

The sweep benchmarks use ``SmaCross`` from ``examples/sma_crossover.py`` (the examples/sweep.py workload). The
million-backtest run needs 500,000 *distinct* cheap strategies on a short series, more than there are sensible
(fast, slow) pairs, so :class:`SizedSmaCross` also sweeps ``size`` (the fraction of equity per entry, a trading rule
the engine reads): same signals and same per-job work as ``SmaCross``, one more parameter in the id.
"""

from raybt.demo import SmaCross


class SizedSmaCross(SmaCross):
    """SmaCross with ``size`` (fraction of equity per entry) as a parameter."""

    size: float = 1.0
