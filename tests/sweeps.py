"""Strategies, data and helpers shared by the sweep tests (a module of its own: Ray workers receive it by value)."""

import os
import signal
import sys
import time

import pandas as pd

import raybt
from raybt.demo import SmaCross  # noqa: F401 - shared by the sweep tests


class FailsOn(raybt.Strategy):
    """Raises for one value of ``n``: a strategy bug the sweep must record or stop on."""

    n: int = 0
    bad: int = 3

    def signals(self, data):
        if self.n == self.bad:
            raise ValueError(f"cannot handle n={self.n}")
        return data.close > data.close.shift(self.n + 1), data.close < data.close.shift(self.n + 1)


class KillsItsWorkerOnce(raybt.Strategy):
    """The first time any process runs it (a marker file records it), it SIGKILLs its own process: a worker crash."""

    n: int = 0
    marker: str = ""

    def signals(self, data):
        if self.n == 7 and not os.path.exists(self.marker):
            with open(self.marker, "w") as handle:
                handle.write(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return data.close > data.close.shift(self.n + 1), data.close < data.close.shift(self.n + 1)


class Slow(raybt.Strategy):
    """A quick momentum rule that sleeps ``sleep_ms`` per backtest, so a sweep lasts long enough to be killed."""

    n: int = 1
    sleep_ms: float = 5.0

    def signals(self, data):
        time.sleep(self.sleep_ms / 1000)
        return data.close > data.close.shift(self.n), data.close < data.close.shift(self.n)


DATA = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-04-01", "1h", seed=5)
RANGES = [raybt.DateRange("2023-01-01", "2023-02-15", name="first"),
          raybt.DateRange("2023-02-15", "2023-04-01", name="second")]
GRID = [SmaCross(fast=f, slow=s) for f in (3, 5, 8, 13) for s in (20, 30, 50)]


def run(strategies=GRID, data=DATA, **kwargs):
    """The standard test sweep (in-process unless told otherwise): small batches and parts, so several of each."""
    options = dict(date_ranges=RANGES, fees=0.001, show_progress=False, batch_size=5, checkpoint_batch_size=7)
    options.update(kwargs)
    return raybt.run_backtests(strategies, data, **options)


def comparable(df):
    """Result rows sorted by key, without what legitimately differs between runs (timings, where jobs ran)."""
    return df.sort_values("key").drop(columns=["duration_s", "worker"]).reset_index(drop=True)


def same_rows(a, b):
    """Every result column equal, metrics bit for bit."""
    pd.testing.assert_frame_equal(comparable(a), comparable(b), check_exact=True)


KILL_RANGES = [raybt.DateRange("2023-01-01", "2023-02-15", name="a"), raybt.DateRange("2023-02-15", None, name="b")]


def slow_sweep(n_strategies, checkpoint_dir=None):
    """The sweep the crash tests kill: ``Slow`` strategies (8 ms each) × 2 ranges, small batches and parts.
    Run as ``python sweeps.py CHECKPOINT_DIR N`` it is the driver process that gets SIGKILLed."""
    strategies = [Slow(n=n, sleep_ms=8.0) for n in range(1, n_strategies + 1)]
    return raybt.run_backtests(strategies, DATA, KILL_RANGES, checkpoint_dir=checkpoint_dir, batch_size=3,
                               checkpoint_batch_size=5, show_progress=False)


if __name__ == "__main__":
    slow_sweep(int(sys.argv[2]), sys.argv[1])
