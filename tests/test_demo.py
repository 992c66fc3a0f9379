"""The demo strategy's vectorised hook: SmaCross.signals_many equals SmaCross.signals set by set, on prices with a
NaN warm-up, a NaN gap and flat stretches (equal averages: ties)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from raybt.demo import SmaCross


class _View(SimpleNamespace):
    """What the hook and ``signals()`` read of a market view: its length, ``close`` as a frame and as a read-only
    array."""

    def __len__(self) -> int:
        return len(self.close)


def _data() -> _View:
    rng = np.random.default_rng(2)
    close = 100 + np.cumsum(rng.standard_normal(700))
    close[:25] = np.nan  # the symbol starts trading late
    close[300:304] = np.nan  # a gap
    close[400:460] = close[400]  # flat: every average of at most 60 bars ends equal to the others
    close[600:] = np.round(close[600:])  # rounded prices: more ties
    close = close.reshape(-1, 1)
    close.flags.writeable = False
    return _View(close=pd.DataFrame(close), arrays=SimpleNamespace(close=close))


def test_the_hook_equals_signals_set_by_set() -> None:
    data = _data()
    grid = [(f, s) for f in (1, 2, 3, 5, 8, 13) for s in (2, 5, 21, 34, 55)]  # fast >= slow and fast == slow too
    params = pd.DataFrame(grid, columns=["fast", "slow"])
    entries, exits = SmaCross.signals_many(data, params)
    assert entries.shape == exits.shape == (len(data.close), len(grid))
    assert entries.any() and exits.any()
    for column, (fast, slow) in enumerate(grid):
        own_entries, own_exits = SmaCross(fast=fast, slow=slow).signals(data)
        assert np.array_equal(entries[:, column], own_entries.to_numpy()[:, 0]), (fast, slow)
        assert np.array_equal(exits[:, column], own_exits.to_numpy()[:, 0]), (fast, slow)


def test_the_hook_returns_each_sets_column_contiguous() -> None:
    entries, exits = SmaCross.signals_many(_data(), pd.DataFrame({"fast": [2, 3], "slow": [21, 21]}))
    assert entries.T.flags.c_contiguous and exits.T.flags.c_contiguous  # the batch stage takes them without a copy
