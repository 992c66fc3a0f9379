"""Result rows and the :class:`Results` of a sweep.

One row per job, columns in this order: ``key``, ``strategy_id``, ``strategy`` (class name), one column per
parameter (named after it; null for strategies without it), ``parameters`` (the strategy's parameters exactly as
given, as JSON text: ints stay ints, ``None`` stays null — what a replay reads), ``symbol`` (the symbol of a
per-symbol job; null for a portfolio of every symbol), ``range`` (name), ``range_start`` and ``range_end`` (the range
as the user defined it: start inclusive, end exclusive, UTC; null for an open side), ``start`` and ``end`` (UTC
times of the first and last simulated bar; null when the job's symbol has no bar in the range), every metric of
:data:`raybt.metrics.METRIC_NAMES`, ``error`` (null when the job ran; else exception type, message and traceback
tail), ``duration_s`` (seconds in the worker) and ``worker`` (where it ran: ``local:<pid>`` in-process, ``<Ray node
id>:<pid>`` on Ray).
"""

from __future__ import annotations

import json
import os
import pstats
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa

from raybt.batch import BatchResult
from raybt.checkpoint import CheckpointStore, MemoryStore
from raybt.data import DataError, DataLike, DateRange, MarketData, load_ohlcv
from raybt.metrics import METRIC_NAMES
from raybt.plan import Plan
from raybt.strategy import Strategy


def rows_table(plan: Plan, market: MarketData, results: Sequence[BatchResult]) -> pa.Table:
    """The result rows of finished batches as an Arrow table (what a checkpoint part holds)."""
    jobs = np.concatenate([r.jobs for r in results])
    strategies = [plan.strategies[i] for i in plan.strategy_index[jobs]]
    ranges = [plan.date_ranges[i] for i in plan.range_index[jobs]]
    symbols = [plan.symbols[i] for i in plan.symbol_index[jobs]]
    bar_times = {(r, sym): _bar_times(market, r, sym) for r, sym in set(zip(ranges, symbols))}
    spans = [bar_times[r, sym] for r, sym in zip(ranges, symbols)]
    utc = pa.timestamp("ns", tz="UTC")
    columns: dict[str, pa.Array | list] = {
        "key": pa.array(plan.keys[jobs].astype(str)),
        "strategy_id": [s.id for s in strategies],
        "strategy": [type(s).__qualname__ for s in strategies],
    }
    param_names = list(dict.fromkeys(name for s in strategies for name in s._params))
    for name in param_names:
        columns[name] = _param_column([s._params.get(name) for s in strategies])
    columns["parameters"] = pa.array([parameters_json(s) for s in strategies], type=pa.string())
    columns["symbol"] = pa.array(symbols, type=pa.string())
    columns["range"] = [r.name if r is not None else "all" for r in ranges]
    columns["range_start"] = pa.array([_instant(r.start if r is not None else None) for r in ranges], type=utc)
    columns["range_end"] = pa.array([_instant(r.end if r is not None else None) for r in ranges], type=utc)
    columns["start"] = pa.array([span[0] for span in spans], type=utc)
    columns["end"] = pa.array([span[1] for span in spans], type=utc)
    metrics = np.concatenate([r.metrics for r in results])
    for position, name in enumerate(METRIC_NAMES):
        columns[name] = pa.array(metrics[:, position])
    columns["error"] = pa.array([e for r in results for e in r.errors], type=pa.string())
    columns["duration_s"] = pa.array(np.concatenate([r.durations for r in results]))
    columns["worker"] = pa.array([r.worker for r in results for _ in range(len(r.jobs))], type=pa.string())
    return pa.table(columns)


def _param_column(values: list) -> pa.Array:
    """A parameter's values as one Arrow column; values of mixed kinds (a name shared by different strategy classes
    with different types) are stored as text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def _bar_times(market: MarketData, date_range: DateRange | None, symbol: str | None) -> tuple[int | None, int | None]:
    """UTC nanoseconds of the first and last simulated bar; None for a symbol without a bar in the range."""
    data = market if symbol is None else market.symbol_data(symbol)
    try:
        _, start, end = data.bounds(date_range)
    except DataError:
        return None, None
    return int(data.times_ns[start]), int(data.times_ns[end - 1])


def _instant(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(ts.as_unit("ns").value)


def parameters_json(strategy: Strategy) -> str:
    """A strategy's parameters as canonical JSON text (keys sorted): bool, int, float, str and None keep their
    types through :func:`json.loads` (``5`` and ``5.0`` differ; NaN and infinities as Python's json writes them).

    >>> parameters_json(raybt.demo.SmaCross(fast=5, slow=20))
    '{"fast":5,"slow":20}'
    """
    return json.dumps(strategy._params, sort_keys=True, separators=(",", ":"))


class RowInputs(NamedTuple):
    """What a result row says about its job's inputs: enough, with the strategy class, the data and the run's
    settings, to run it again (see :func:`row_inputs`)."""

    parameters: dict[str, Any]
    date_range: DateRange | None
    symbol: str | None


def row_inputs(row: Mapping[str, Any]) -> RowInputs:
    """The parameters, date range (as the user defined it, name included) and symbol of a result row (a
    ``results.df`` row, a dict or a pandas Series), read from its ``parameters``, ``range``, ``range_start``,
    ``range_end`` and ``symbol`` columns only.

    >>> inputs = row_inputs(results.df.iloc[0])
    >>> raybt.run_backtest(SmaCross(**inputs.parameters), data, inputs.date_range, symbol=inputs.symbol)
    """
    name = row["range"]
    start, end = (_timestamp_or_none(row[column]) for column in ("range_start", "range_end"))
    date_range = None if name == "all" and start is None and end is None else DateRange(start, end, name=name)
    symbol = row["symbol"]
    return RowInputs(json.loads(row["parameters"]), date_range, None if _is_null(symbol) else str(symbol))


def _timestamp_or_none(value: Any) -> pd.Timestamp | None:
    return None if _is_null(value) else pd.Timestamp(value)


def _is_null(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def merge_profiles(profiles: Sequence[dict]) -> pstats.Stats | None:
    """Merge the cProfile statistics (``Profile.stats`` dicts) of profiled batches."""
    merged = None
    for stats in profiles:
        if merged is None:
            merged = pstats.Stats(_StatsHolder(stats))
        else:
            merged.add(_StatsHolder(stats))
    return merged


@dataclass
class _StatsHolder:
    """Adapter: pstats.Stats accepts any object with ``create_stats()`` and ``stats``."""

    stats: dict

    def create_stats(self) -> None:
        """The stats are already there."""


class Results:
    """The outcome of :func:`raybt.run_backtests`: rows for every planned job (computed now or found in the
    checkpoint directory from earlier runs). ``df`` is read on first access, so a huge sweep does not hold its rows
    in memory while it runs."""

    def __init__(self, store: CheckpointStore | MemoryStore, keys: np.ndarray, *, n_computed: int, n_skipped: int,
                 profile: pstats.Stats | None = None):
        self._store, self._keys = store, keys
        self.n_computed, self.n_skipped = n_computed, n_skipped
        self.profile = profile
        self._df: pd.DataFrame | None = None

    @property
    def df(self) -> pd.DataFrame:
        """One row per (strategy, date range) of this sweep."""
        if self._df is None:
            self._df = self._store.read(self._keys)
        return self._df

    @property
    def errors(self) -> pd.DataFrame:
        """Rows whose job failed."""
        return self.df[self.df["error"].notna()]

    @property
    def checkpoint_dir(self) -> str | None:
        return self._store.location

    def best(self, metric: str = "sharpe", n: int = 10, ascending: bool = False) -> pd.DataFrame:
        """The top ``n`` rows by ``metric`` (failed rows and NaN values last)."""
        if metric not in self.df.columns:
            raise KeyError(f"unknown column {metric!r}; metrics are {list(METRIC_NAMES)}")
        return self.df.sort_values(metric, ascending=ascending, na_position="last").head(n)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        where = f", checkpoint_dir={_redacted(self.checkpoint_dir)!r}" if self.checkpoint_dir else ""
        return f"Results({len(self)} jobs: {self.n_computed} computed, {self.n_skipped} from checkpoints{where})"

    # Plots and the HTML report (raybt.plots, raybt.report; they need plotly: pip install 'raybt[plot]').

    def plot_heatmap(self, x: str, y: str, metric: str = "sharpe", agg: str | Callable = "median",
                     date_range: str | DateRange | None = None) -> Any:
        """``metric`` over parameters ``x`` and ``y``, the other parameters (and ranges, unless ``date_range``)
        aggregated with ``agg``; blank cells for parameter sets without a value: :func:`raybt.plots.plot_heatmap`."""
        from raybt.plots import plot_heatmap

        return plot_heatmap(self.df, x, y, metric, agg, date_range)

    def plot_distribution(self, metric: str = "sharpe") -> Any:
        """Histogram of ``metric`` per range: :func:`raybt.plots.plot_distribution`."""
        from raybt.plots import plot_distribution

        return plot_distribution(self.df, metric)

    def plot_ranges(self, metric: str = "sharpe", top: int = 20, ascending: bool = False) -> Any:
        """The ``top`` strategies' ``metric`` in each range: :func:`raybt.plots.plot_ranges`."""
        from raybt.plots import plot_ranges

        return plot_ranges(self.df, metric, top, ascending)

    def plot_parallel(self, metric: str = "sharpe") -> Any:
        """Parallel coordinates over the swept parameters and ``metric``: :func:`raybt.plots.plot_parallel`."""
        from raybt.plots import plot_parallel

        return plot_parallel(self.df, metric)

    def report(self, path: str | os.PathLike[str], data: DataLike | None = None,
               strategy: StrategyClasses = None, *, metric: str = "sharpe", top: int = 5,
               leaderboard: int = 100) -> Path:
        """Write a self-contained HTML report of these rows to ``path`` (see :mod:`raybt.report`) and return the
        path. With ``data`` (and ``strategy`` for a loaded directory, as for :meth:`backtest`) the best ``top`` rows
        are replayed for their equity and drawdown."""
        from raybt.report import write_report

        market = None if data is None else load_ohlcv(data)
        replay = None if market is None else (lambda row: self.backtest(row, market, strategy))
        manifest = self._store.manifest() if self.checkpoint_dir else None
        source = _redacted(self.checkpoint_dir) if self.checkpoint_dir else None
        return write_report(self.df, path, manifest=manifest, source=source, replay=replay, metric=metric, top=top,
                            leaderboard=leaderboard)


def _redacted(location: str) -> str:
    """A checkpoint location without credentials embedded in a URI (``s3://KEY:SECRET@bucket`` → ``s3://***@bucket``)."""
    return re.sub(r"://[^/@]+@", "://***@", location)


def load_results(checkpoint_dir: str) -> pd.DataFrame:
    """Every row stored in a checkpoint directory (all runs, newest row per key), without running anything."""
    return CheckpointStore(checkpoint_dir).read()
