"""Replaying stored rows: a row's job rebuilt, its key recomputed, its metrics compared with the row's.

:meth:`raybt.results.Results.backtest` and :meth:`~raybt.results.Results.returns` (and through them the report and
the verdict) run a stored row's job again. The strategy is rebuilt from its class and the row's parameters; the job
is planned exactly as a sweep plans it, and its key (:func:`replay_key`) must equal the stored one, so a class whose
code changed since the sweep, other data or other settings are refused rather than replayed differently; the
replay's metrics must then equal the row's bit for bit (:func:`check_same_metrics`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raybt.data import DateRange, DateRangeWarning, MarketData
from raybt.metrics import METRIC_NAMES
from raybt.permute import Permutation
from raybt.plan import RunSettings, plan_jobs
from raybt.row_inputs import RowInputs
from raybt.strategy import Strategy


def bar_returns(equity: pd.Series, initial_amount: float) -> pd.Series:
    """Per-bar returns of an equity curve: ``equity.pct_change()``, the first bar against ``initial_amount``."""
    values = equity.to_numpy()
    returns = np.empty(len(values))
    if len(values):
        returns[0] = values[0] / initial_amount - 1.0
        returns[1:] = values[1:] / values[:-1] - 1.0
    return pd.Series(returns, index=equity.index, name=equity.name)


@dataclass(frozen=True)
class ReplayJob:
    """A stored row's job, rebuilt: its strategy (the class with the row's parameters), range, symbol (None: every
    symbol of the data), the settings whose key it reproduces, and its permuted market's ``(seed, i)`` (None: the
    real data)."""

    key: str
    strategy: Strategy
    date_range: DateRange | None
    symbol: str | None
    settings: RunSettings
    permutation: Permutation | None = None

    def bar_index(self, market: MarketData) -> pd.DatetimeIndex:
        """The times of the bars the job simulates."""
        data = market if self.symbol is None else market.symbol_data(self.symbol)
        _, start, end = data.bounds(self.date_range)
        return data.index[start:end]


@dataclass(frozen=True)
class ShippedStrategies:
    """What the executor factory reads of a plan: the strategies it will ship."""

    strategies: list[Strategy]


def replay_key(strategy: Strategy, inputs: RowInputs, market: MarketData, settings: RunSettings) -> str:
    """The key the job of a row (``inputs``) with ``strategy`` has under ``settings``, planned as a sweep plans it:
    equal to the stored key only if the code, data and settings are those of the run that wrote the row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DateRangeWarning)
        plan = plan_jobs([strategy], [inputs.date_range], market, settings, per_symbol=inputs.symbol is not None,
                         permutations=None if inputs.permutation is None else [inputs.permutation])
    position = 0 if inputs.symbol is None else plan.symbols.index(inputs.symbol)
    return plan.keys[position].decode()


def group_by_settings(jobs: Sequence[ReplayJob]) -> dict[RunSettings, list[int]]:
    """The positions of ``jobs`` by their settings (one executor per settings)."""
    groups: dict[RunSettings, list[int]] = {}
    for position, job in enumerate(jobs):
        groups.setdefault(job.settings, []).append(position)
    return groups


def chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    """``items`` in consecutive pieces of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def check_same_metrics(row: pd.Series, metrics: Mapping[str, float]) -> None:
    """The replay must give the stored values bit for bit (NaN equal to NaN); anything else is a bug to report."""
    differ = [name for name in METRIC_NAMES if name in row.index
              and not (row[name] == metrics[name] or (pd.isna(row[name]) and np.isnan(metrics[name])))]
    if differ:
        name = differ[0]
        raise RuntimeError(f"replay of row {row['key']} gives {name}={metrics[name]!r}, the stored row has "
                           f"{row[name]!r} (and {len(differ) - 1} other metric(s) differ): the computation is not "
                           f"reproducible here; please report it")
