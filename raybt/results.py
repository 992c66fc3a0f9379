"""Result rows and the :class:`Results` of a sweep.

One row per job, columns in this order: ``key``, ``strategy_id``, ``strategy`` (class name), one column per
parameter (named after it; null for strategies without it), ``parameters`` (the strategy's parameters exactly as
given, as JSON text: ints stay ints, ``None`` stays null — what a replay reads), ``symbol`` (the symbol of a
per-symbol job; null for a portfolio of every symbol), ``range`` (name), ``range_start`` and ``range_end`` (the range
as the user defined it: start inclusive, end exclusive, UTC; null for an open side), ``start`` and ``end`` (UTC
times of the first and last simulated bar; null when the job's symbol has no bar in the range), ``permutation_seed``
and ``permutation`` (the ``(seed, i)`` of the permuted market a :func:`raybt.stats.permutation_test` row ran on, see
:mod:`raybt.permute`; pandas ``Int64``, ``<NA>`` for rows on the real data: every sweep's rows and a permutation
test's real-data rows), every metric of :data:`raybt.metrics.METRIC_NAMES`, ``error`` (null when the job ran; else
exception type, message and traceback tail), ``duration_s`` (seconds in the worker) and ``worker`` (where it ran:
``local:<pid>`` in-process, ``<Ray node id>:<pid>`` on Ray).
"""

from __future__ import annotations

import os
import pstats
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raybt.backtest import Backtest, run_backtest
from raybt.checkpoint import CheckpointStore, MemoryStore, recorded_runs, scan_frame
from raybt.data import DataError, DataLike, DateRange, DateRangeWarning, MarketData, load_ohlcv
from raybt.metrics import METRIC_NAMES
from raybt.permute import permuted_market
from raybt.permuted_rows import PERMUTATION_COLUMNS, PermutedRowsWarning, permutation_columns, rows_of_one_market
from raybt.plan import RESULTS_VERSION, RunSettings
from raybt.replay import (ReplayJob, ShippedStrategies, bar_returns, check_same_metrics, chunks, group_by_settings,
                          replay_key)
from raybt.row_inputs import _is_null, row_inputs, settings_from_record
from raybt.strategy import RESULT_COLUMNS, Strategy


class ResultsVersionWarning(UserWarning):
    """A checkpoint directory holds rows written by other raybt code (another results version)."""


class Results:
    """Result rows of a sweep, as returned by :func:`raybt.run_backtests` (the rows of its jobs, computed now or found
    in the checkpoint directory) and by :func:`load_results` (every row stored in a directory, optionally only some
    columns and rows). ``df`` is read on first access, so a huge sweep does not hold its rows in memory while it
    runs.

    Exploring: :meth:`best`, :meth:`rank` (presets in :data:`RANK_PRESETS`), :meth:`summary` (per strategy across
    ranges), :meth:`backtest` (replay one row: equity curve and trades) and :meth:`returns` (per-bar returns of many
    rows, in parallel)."""

    def __init__(self, store: CheckpointStore | MemoryStore, keys: np.ndarray | None = None, *,
                 n_computed: int = 0, n_skipped: int = 0, profile: pstats.Stats | None = None,
                 columns: Sequence[str] | None = None, filter: Filter = None,
                 strategies: Sequence[Strategy] = (), settings: RunSettings | None = None,
                 data_fingerprint: str | None = None):
        self._store, self._keys = store, keys
        self.n_computed, self.n_skipped = n_computed, n_skipped
        self.profile = profile
        self._columns = None if columns is None else list(columns)
        self._filter = as_expression(filter)
        self._classes = {type(s).__qualname__: type(s) for s in strategies}
        self._settings, self._data_fingerprint = settings, data_fingerprint
        self._df: pd.DataFrame | None = None

    @property
    def df(self) -> pd.DataFrame:
        """One row per job (see the module docstring for the columns)."""
        if self._df is None:
            if self._columns is None and self._filter is None:
                self._df = self._store.read(self._keys)
            else:
                self._df = scan_frame(self._store.scan(self._columns, self._filter, self._keys))
        return self._df

    @property
    def errors(self) -> pd.DataFrame:
        """Rows whose job failed."""
        return self.df[self.df["error"].notna()]

    @property
    def checkpoint_dir(self) -> str | None:
        return self._store.location

    # ------------------------------------------------------------------------------------------- ranking

    def best(self, metric: str = "sharpe", n: int = 10, *, min_trades: int = 0,
             ascending: bool | None = None) -> pd.DataFrame:
        """The ``n`` best rows by ``metric``, parameters first (see :func:`display_order`).

        Order: best first — highest first, or lowest first for the metrics in :data:`LOWER_IS_BETTER` (override
        with ``ascending``); ties by key (so the order is the same on every read); rows whose ``metric`` is NaN come
        after every row with a value (never first, as a plain descending sort of NaN could put them). Rows of failed
        jobs (see :attr:`errors`) and rows with fewer than ``min_trades`` trades are left out; so are a permutation
        test's rows on permuted markets, with a warning, when the rows also hold the real data's (the rule of
        :mod:`raybt.permuted_rows`: markets are never mixed)."""
        frame = self._ok_rows([metric, "n_trades"] if min_trades else [metric], "Results.best")
        if min_trades:
            frame = frame[frame["n_trades"] >= min_trades]
        if ascending is None:
            ascending = metric in LOWER_IS_BETTER
        frame = _contenders(frame, metric, n, ascending)
        ordered = frame.sort_values([metric, "key"], ascending=[ascending, True], na_position="last", kind="stable")
        return display_order(ordered.head(n), first=[metric])

    def rank(self, weights: Mapping[str, float] | None = None, *, preset: str | None = None,
             per_range: bool = False, min_trades: int = 0) -> pd.DataFrame:
        """Rows ordered by a score: a weighted mean of metric percentiles, highest first (a ``score`` column, in
        [0, 1], is added and shown first).

        Give ``weights`` (metric → positive weight) or a ``preset`` named in :data:`RANK_PRESETS`. Normalisation: each
        metric is turned into its rank percentile among the ranked rows that have a value (``Series.rank(pct=True)``:
        the best is 1, ties averaged), oriented so that better is higher (metrics in :data:`LOWER_IS_BETTER` are negated
        first); a NaN metric counts 0 (worst). The score is ``sum(weight * percentile) / sum(weight)``. With
        ``per_range`` the percentiles are computed among the rows of each range separately (a strategy is compared with
        others on the same period). Failed rows and rows with fewer than ``min_trades`` trades are not ranked; ties are
        ordered by key. Rows of one market are ranked: a permutation test's rows on permuted markets are left out, with
        a warning, when the rows also hold the real data's (:mod:`raybt.permuted_rows`)."""
        weights = _rank_weights(weights, preset)
        frame = self._ok_rows([*weights, "n_trades"] if min_trades else list(weights), "Results.rank")
        if min_trades:
            frame = frame[frame["n_trades"] >= min_trades]
        score = pd.Series(0.0, index=frame.index)
        for metric, weight in weights.items():
            oriented = -frame[metric] if metric in LOWER_IS_BETTER else frame[metric]
            percentile = (oriented.groupby(frame["range"], dropna=False).rank(pct=True) if per_range
                          else oriented.rank(pct=True))
            score += weight * percentile.fillna(0.0)
        ranked = frame.assign(score=score / sum(weights.values()))
        ranked = ranked.sort_values(["score", "key"], ascending=[False, True], kind="stable")
        return display_order(ranked, first=["score", *weights])

    def summary(self) -> pd.DataFrame:
        """One row per strategy (per strategy and symbol in a per-symbol sweep; per strategy and market — the real
        data, each permuted one — in a permutation test's rows) across its date ranges:

        ``n_ranges`` (ranges that ran), ``n_failed`` (ranges whose job failed), ``n_profitable`` (``total_return``
        > 0), ``consistency`` (n_profitable / n_ranges), ``compounded_return`` (prod(1 + total_return) − 1, as if
        the ranges were traded one after another — meaningful for ranges that do not overlap; NaN if any range
        failed or has no return), ``worst_max_drawdown`` (the most negative ``max_drawdown``), ``mean_sharpe`` and
        ``worst_sharpe`` (over ranges with a Sharpe ratio), ``n_trades`` (total). Ordered by compounded return,
        highest first (NaN last), then strategy id."""
        df = self.df
        needed = ["strategy_id", "range", "total_return", "max_drawdown", "sharpe", "n_trades", "error"]
        _require(df, needed)
        params = param_columns(df)
        by = ["strategy_id", "symbol"] if "symbol" in df.columns else ["strategy_id"]
        by += permutation_columns(df)
        frame = df.assign(_failed=df["error"].notna(), _profitable=df["total_return"] > 0,
                          _growth=1.0 + df["total_return"])
        ok = frame[~frame["_failed"]]
        grouped = ok.groupby(by, dropna=False, sort=False)
        out = pd.DataFrame({
            "n_ranges": grouped["range"].count(),
            "n_profitable": grouped["_profitable"].sum(),
            "compounded_return": grouped["_growth"].prod(min_count=1) - 1.0,
            "worst_max_drawdown": grouped["max_drawdown"].min(),
            "mean_sharpe": grouped["sharpe"].mean(),
            "worst_sharpe": grouped["sharpe"].min(),
            "n_trades": grouped["n_trades"].sum(),
        })
        first = frame.groupby(by, dropna=False, sort=False)[["strategy", *params]].first()
        failed = frame.groupby(by, dropna=False, sort=False)["_failed"].sum().rename("n_failed")
        nan_return = ok["total_return"].isna().groupby([ok[c] for c in by], dropna=False).any()
        out = first.join(out, how="left").join(failed)
        out["n_ranges"] = out["n_ranges"].fillna(0).astype(int)
        out["n_profitable"] = out["n_profitable"].fillna(0).astype(int)
        out["consistency"] = out["n_profitable"] / out["n_ranges"].where(out["n_ranges"] > 0)
        incomplete = (out["n_failed"] > 0) | nan_return.reindex(out.index, fill_value=False)
        out.loc[incomplete, "compounded_return"] = np.nan
        out = out.reset_index()
        out = out.sort_values(["compounded_return", "strategy_id"], ascending=[False, True], na_position="last",
                              kind="stable")
        columns = ["strategy", *params, *by[1:], "n_ranges", "n_failed",  # by[1:]: symbol, the permuted market
                   "n_profitable", "consistency", "compounded_return", "worst_max_drawdown", "mean_sharpe",
                   "worst_sharpe", "n_trades", "strategy_id"]
        return out[columns].reset_index(drop=True)

    def _ok_rows(self, metrics: Sequence[str], caller: str) -> pd.DataFrame:
        """The rows of jobs that ran, of one market (:func:`raybt.permuted_rows.rows_of_one_market`)."""
        df = self.df
        _require(df, [*metrics, "key", "error"])
        rows = rows_of_one_market(df, caller, stacklevel=3)
        return rows[rows["error"].isna()]

    # ------------------------------------------------------------------------------------------- replay

    def backtest(self, row_or_key: Any, data: DataLike, strategy: StrategyClasses = None) -> Backtest:
        """Run a stored row's job again in this process and return its :class:`~raybt.backtest.Backtest` (equity
        curve, trades) — with metrics equal to the stored row's, bit for bit.

        ``row_or_key``: a row (a ``df``/``best()``/``rank()`` row as a Series, or a dict with a ``key``) or a key.
        ``data``: the data set the sweep ran on (anything :func:`raybt.load_ohlcv` accepts); another data set is a
        :class:`~raybt.data.DataError`. ``strategy``: the strategy class (or a mapping class name → class); not
        needed for the Results of :func:`run_backtests`, which knows its strategies.

        A permutation test's row on a permuted market (``permutation`` set) runs on that market, rebuilt from the
        real data and ``(permutation_seed, permutation)`` exactly as the test's worker built it
        (:func:`raybt.permute.permuted_market`): the Backtest's ``prices`` are the permuted ones.

        The costs and settings are the run's: those of the :func:`run_backtests` call, or, for a loaded directory,
        the run recorded in ``manifest.json`` whose settings reproduce the row's key. The job's key is recomputed
        from the class, parameters, range, symbol, data and settings and must equal the stored one — so a strategy
        class whose code changed since the sweep is an error, not a silently different replay."""
        market = load_ohlcv(data)
        row = self._full_rows([_key_of(row_or_key)]).iloc[0]
        job = self._replayable(row, market, strategy)
        on = market if job.permutation is None else permuted_market(market, job.date_range, job.permutation)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DateRangeWarning)  # reported when the sweep ran
            backtest = run_backtest(job.strategy, on, job.date_range, symbol=job.symbol,
                                    **asdict(job.settings.costs), periods_per_year=job.settings.periods_per_year,
                                    risk_free_rate=job.settings.risk_free_rate)
        check_same_metrics(row, backtest.metrics)
        return backtest

    def returns(self, rows: Any, data: DataLike, freq: str | None = None, *, strategy: StrategyClasses = None,
                n_workers: int | None = None, batch_size: int = 20, address: str | None = None) -> pd.DataFrame:
        """Returns of many rows as one DataFrame: one column per row (named by its key), one row per bar (UTC
        index; NaN where a row's range has no bar) — or per period of ``freq`` (a pandas offset such as ``"1D"``,
        ``"W"``, ``"ME"``): each period's returns compounded, ``prod(1 + r) - 1``, NaN for a period without bars.

        Per-bar returns are those of :attr:`Backtest.equity <raybt.backtest.Backtest>`: ``equity.pct_change()``
        with the first bar against the initial amount — bit for bit those of :meth:`backtest` on each row. ``rows``:
        a DataFrame of rows (e.g. ``best()``), a list of rows or keys. The backtests run with the executors of
        :func:`run_backtests` (``n_workers``: None/1 in this process, -1/N on Ray; ``batch_size`` jobs per task);
        keys, data and metrics are checked as in :meth:`backtest`, and a permutation test's permuted row runs on its
        permuted market, as there."""
        from raybt.batch import Batch
        from raybt.sweep import _executor

        keys = _keys_of(rows)
        market = load_ohlcv(data)
        frame = self._full_rows(keys).set_index("key", drop=False)
        jobs = [self._replayable(row, market, strategy) for _, row in frame.iterrows()]
        curves: dict[str, pd.Series] = {}
        for settings, positions in group_by_settings(jobs).items():
            executor = _executor(ShippedStrategies([jobs[i].strategy for i in positions]), market, settings, n_workers,
                                 address, False)
            batches = (Batch(np.asarray(chunk), [jobs[i].strategy for i in chunk], [jobs[i].date_range for i in chunk],
                             [jobs[i].symbol for i in chunk], keep_curves=True,
                             permutations=[jobs[i].permutation for i in chunk])
                       for chunk in chunks(positions, batch_size))
            try:
                for result in executor.run(batches):
                    for position, values, curve, error in zip(result.jobs, result.metrics, result.curves,
                                                              result.errors):
                        job = jobs[position]
                        if error is not None:
                            raise RuntimeError(f"replaying row {job.key} failed: {error}")
                        check_same_metrics(frame.loc[job.key], dict(zip(METRIC_NAMES, values)))
                        index = job.bar_index(market)
                        curves[job.key] = bar_returns(pd.Series(curve, index=index), settings.costs.initial_amount)
            finally:
                executor.close()
        out = pd.concat([curves[k].rename(k) for k in keys], axis=1)
        if freq is not None:
            out = (1.0 + out).resample(freq).prod(min_count=1) - 1.0
        return out

    def _full_rows(self, keys: Sequence[str]) -> pd.DataFrame:
        """Every column of the rows with these keys (re-read from the store if ``df`` lacks columns or rows)."""
        df = self._df
        if df is not None and self._columns is None:
            held = df[df["key"].isin(keys)]  # vectorised: df may hold a million rows
            if set(keys) <= set(held["key"]):
                return held.set_index("key", drop=False).loc[list(keys)].reset_index(drop=True)
        found = scan_frame(self._store.scan(None, None, np.array(keys, dtype="S24")))
        if found.empty:
            found = pd.DataFrame({"key": []})
        stored = set(found["key"])
        missing = [k for k in keys if k not in stored]
        if missing:
            raise KeyError(f"no stored row has key(s) {missing[:5]}{' …' if len(missing) > 5 else ''}")
        return found.set_index("key", drop=False).loc[list(keys)].reset_index(drop=True)

    def _replayable(self, row: pd.Series, market: MarketData, classes: StrategyClasses) -> ReplayJob:
        """The job of a stored row, with its strategy rebuilt and its key checked (see :meth:`backtest`)."""
        if not _is_null(row.get("error")):
            raise ValueError(f"row {row['key']} is a failed job ({str(row['error']).splitlines()[0]}); nothing to "
                             f"replay")
        inputs = row_inputs(row)
        cls = self._strategy_class(row["strategy"], classes)
        strategy = cls(**inputs.parameters)
        candidates = self._candidate_settings(market)
        for settings in candidates:
            if replay_key(strategy, inputs, market, settings) == row["key"]:
                return ReplayJob(row["key"], strategy, inputs.date_range, inputs.symbol, settings, inputs.permutation)
        where = "" if inputs.permutation is None else (f", permuted market {inputs.permutation[1]} of seed "
                                                       f"{inputs.permutation[0]}")
        raise ValueError(f"row {row['key']} ({strategy!r}, range {row['range']!r}{where}) does not come from this "
                         f"code: its key is not reproduced by {cls.__qualname__} as defined now with the data and the "
                         f"settings of the run(s) that wrote here — the class's code (or what it calls) or raybt's "
                         f"results version changed since the sweep; rerun the sweep to get rows of this code")

    def _strategy_class(self, name: str, classes: StrategyClasses) -> type[Strategy]:
        if isinstance(classes, type):
            if classes.__qualname__ != name:
                raise TypeError(f"the row is a {name} but strategy={classes.__qualname__} was given")
            return classes
        known = dict(classes) if classes is not None else self._classes
        if name not in known:
            raise TypeError(f"the row is a {name}: pass its class, results.backtest(row, data, strategy={name}) (a "
                            f"loaded directory does not know the strategy classes)")
        return known[name]

    def _candidate_settings(self, market: MarketData) -> list[RunSettings]:
        """Settings the rows may come from, after checking ``market`` is the data they were computed on."""
        if self._settings is not None:
            if market.fingerprint != self._data_fingerprint:
                raise DataError(f"this data set (fingerprint {market.fingerprint}) is not the one the sweep ran on "
                                f"({self._data_fingerprint}); pass the same data to replay its rows")
            return [self._settings]
        runs = self._store.manifest().get("runs", []) if self._store.location else []
        fingerprints = {run.get("data_fingerprint") for run in runs}
        if market.fingerprint not in fingerprints:
            raise DataError(f"this data set (fingerprint {market.fingerprint}) is not one the sweeps in "
                            f"{_redacted(str(self.checkpoint_dir))} ran on ({sorted(map(str, fingerprints))}); pass "
                            f"the same data to replay its rows")
        settings = [settings_from_record(run["run_settings"]) for run in runs
                    if run.get("data_fingerprint") == market.fingerprint and "run_settings" in run]
        if not settings:
            raise ValueError("manifest.json records no machine-readable settings for the runs on this data (written "
                             "by an older raybt); run the sweep again to replay its rows")
        return list(dict.fromkeys(settings))

    def verdict(self, row: Any, data: DataLike, strategy: StrategyClasses = None, **options: Any) -> Any:
        """Is ``row`` real? Its Sharpe ratio, the true number of trials, DSR, PBO, SPA and Reality Check p-values
        of the best candidates (and a permutation test and walk-forward decay, if given), each with a plain-English
        reading: :func:`raybt.verdict.verdict` (its options: ``candidates``, ``benchmark``, ``permutation``,
        ``walk_forward``, ``n_trials``, ``thresholds``, ...) → :class:`~raybt.verdict.Verdict`."""
        from raybt.verdict import verdict

        return verdict(self, row, data, strategy=strategy, **options)

    def __len__(self) -> int:
        return len(self._keys) if self._keys is not None else len(self.df)

    def __repr__(self) -> str:
        where = f", checkpoint_dir={_redacted(self.checkpoint_dir)!r}" if self.checkpoint_dir else ""
        if self._keys is None:
            return f"Results({len(self)} rows loaded{where})"
        return f"Results({len(self)} jobs: {self.n_computed} computed, {self.n_skipped} from checkpoints{where})"

    # Plots and the HTML report (raybt.plots, raybt.report; they need plotly: pip install 'raybt[plot]'). They
    # show the rows of one market: a permutation test's rows on permuted markets are left out, with a warning, when
    # the rows also hold the real data's (raybt.permuted_rows).

    def plot_heatmap(self, x: str, y: str, metric: str = "sharpe", agg: str | Callable = "median",
                     date_range: str | DateRange | None = None) -> Any:
        """``metric`` over parameters ``x`` and ``y``, the other parameters (and ranges, unless ``date_range``)
        aggregated with ``agg``; blank cells for parameter sets without a value: :func:`raybt.plots.plot_heatmap`."""
        from raybt.plots import plot_heatmap

        return plot_heatmap(self._one_market("Results.plot_heatmap"), x, y, metric, agg, date_range)

    def plot_distribution(self, metric: str = "sharpe") -> Any:
        """Histogram of ``metric`` per range: :func:`raybt.plots.plot_distribution`."""
        from raybt.plots import plot_distribution

        return plot_distribution(self._one_market("Results.plot_distribution"), metric)

    def plot_ranges(self, metric: str = "sharpe", top: int = 20, ascending: bool = False) -> Any:
        """The ``top`` strategies' ``metric`` in each range: :func:`raybt.plots.plot_ranges`."""
        from raybt.plots import plot_ranges

        return plot_ranges(self._one_market("Results.plot_ranges"), metric, top, ascending)

    def plot_parallel(self, metric: str = "sharpe") -> Any:
        """Parallel coordinates over the swept parameters and ``metric``: :func:`raybt.plots.plot_parallel`."""
        from raybt.plots import plot_parallel

        return plot_parallel(self._one_market("Results.plot_parallel"), metric)

    def report(self, path: str | os.PathLike[str], data: DataLike | None = None,
               strategy: StrategyClasses = None, *, metric: str = "sharpe", top: int = 5,
               leaderboard: int = 100) -> Path:
        """Write a self-contained HTML report of these rows to ``path`` (see :mod:`raybt.report`) and return the
        path. With ``data`` (and ``strategy`` for a loaded directory, as for :meth:`backtest`) the best ``top`` rows
        are replayed for their equity and drawdown, and the best row is judged (:meth:`verdict`). The report is of
        the rows of one market: a permutation test's rows on permuted markets are left out, with a warning, when
        the rows also hold the real data's (:mod:`raybt.permuted_rows`)."""
        from raybt.report import write_report

        rows = self._one_market("Results.report")
        market = None if data is None else load_ohlcv(data)
        replay = None if market is None else (lambda row: self.backtest(row, market, strategy))
        judge = None if market is None else (lambda row: self._judged_once(row, market, strategy, metric))
        manifest = self._store.manifest() if self.checkpoint_dir else None
        source = _redacted(self.checkpoint_dir) if self.checkpoint_dir else None
        return write_report(rows, path, manifest=manifest, source=source, replay=replay, judge=judge,
                            metric=metric, top=top, leaderboard=leaderboard)

    def _one_market(self, caller: str) -> pd.DataFrame:
        """``df``'s rows of one market (:func:`raybt.permuted_rows.rows_of_one_market`), for a plot or the report."""
        return rows_of_one_market(self.df, caller, stacklevel=3)

    def _judged_once(self, row: pd.Series, market: MarketData, strategy: StrategyClasses, metric: str) -> Any:
        """The report's verdict of its best row; the report has already said which rows it left out."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PermutedRowsWarning)
            return self.verdict(row, market, strategy, metric=metric)


Filter = pc.Expression | Sequence[Any] | None
StrategyClasses = type[Strategy] | Mapping[str, type[Strategy]] | None

LOWER_IS_BETTER = frozenset({"volatility", "max_drawdown_duration", "max_consecutive_losses", "n_losing_trades",
                             "total_fees", "n_unfunded_entries"})
"""Metrics where a smaller value is better (:meth:`Results.best` sorts them ascending, :meth:`Results.rank` negates
them). Every other metric is better when larger — ``max_drawdown``, ``var_95``, ``cvar_95``, ``worst_trade`` and
``avg_loss`` are negative numbers, better closer to zero."""

RANK_PRESETS: dict[str, dict[str, float]] = {
    "balanced": {"sharpe": 1.0, "total_return": 1.0, "max_drawdown": 1.0, "win_rate": 0.5, "profit_factor": 0.5},
    "profit": {"total_return": 3.0, "profit_factor": 1.0, "avg_trade_return": 1.0},
    "risk_adjusted": {"sharpe": 2.0, "sortino": 1.0, "calmar": 1.0, "max_drawdown": 1.0},
    "frequency": {"n_trades": 2.0, "sharpe": 1.0, "win_rate": 1.0},
}
"""Named weights for :meth:`Results.rank`: ``balanced`` (return, risk-adjusted return and drawdown alike, trade
quality half as much), ``profit`` (total return first, then how trades earn it), ``risk_adjusted`` (Sharpe twice,
Sortino, Calmar and drawdown once), ``frequency`` (many trades, with Sharpe and win rate as quality checks)."""


def display_order(frame: pd.DataFrame, first: Sequence[str] = ()) -> pd.DataFrame:
    """``frame``'s columns for reading: the strategy class, its parameters, symbol and range (and the permuted
    market, when some row ran on one), then ``first`` (e.g. the metric ranked by), the other metrics, and last the
    ids and bookkeeping (key, strategy_id, parameters JSON, the range's instants, error, duration, worker; the
    permutation columns, when every row ran on the real data)."""
    params = param_columns(frame)
    head = [c for c in ("strategy", *params, "symbol", "range", *permutation_columns(frame), *first)
            if c in frame.columns]
    ids = [c for c in ("key", "strategy_id", "parameters", "range_start", "range_end", "start", "end",
                       *PERMUTATION_COLUMNS, "error", "duration_s", "worker") if c in frame.columns]
    middle = [c for c in frame.columns if c not in head and c not in ids]
    return frame[list(dict.fromkeys([*head, *middle, *ids]))]


def param_columns(frame: pd.DataFrame) -> list[str]:
    """The parameter columns of a results frame (every column that is not a result column or a metric)."""
    return [c for c in frame.columns if c not in RESULT_COLUMNS and c not in METRIC_NAMES and c != "score"]


def as_expression(filter: Filter) -> pc.Expression | None:
    """A row filter as a pyarrow expression. Accepted: a :class:`pyarrow.compute.Expression` (``pc.field("sharpe")
    > 1``), a list of ``(column, op, value)`` tuples all of which must hold (``[("sharpe", ">", 1), ("n_trades",
    ">=", 30)]``), or a list of such lists, any of which must hold (ops: ``== = != < <= > >= in not in``, as
    :func:`pyarrow.parquet.filters_to_expression`)."""
    if filter is None or isinstance(filter, pc.Expression):
        return filter
    if isinstance(filter, tuple) and len(filter) == 3 and isinstance(filter[0], str):
        filter = [filter]
    if not isinstance(filter, (list, tuple)) or not filter:
        raise TypeError(f"filter must be a pyarrow Expression or a list of (column, op, value) tuples, got "
                        f"{filter!r}")
    try:
        return pq.filters_to_expression(list(filter))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"filter {filter!r} is not a list of (column, op, value) tuples: {exc}") from exc


def _key_of(row_or_key: Any) -> str:
    if isinstance(row_or_key, (str, bytes)):
        return row_or_key.decode() if isinstance(row_or_key, bytes) else row_or_key
    if isinstance(row_or_key, (pd.Series, Mapping)) and "key" in row_or_key:
        return str(row_or_key["key"])
    raise TypeError(f"expected a result row (with a 'key') or a key, got {type(row_or_key).__name__}")


def _keys_of(rows: Any) -> list[str]:
    if isinstance(rows, pd.DataFrame):
        _require(rows, ["key"])
        keys = [str(k) for k in rows["key"]]
    elif isinstance(rows, (str, bytes, pd.Series, Mapping)):
        keys = [_key_of(rows)]
    else:
        keys = [_key_of(r) for r in rows]
    if not keys:
        raise ValueError("no rows given")
    return list(dict.fromkeys(keys))


def _require(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [c for c in dict.fromkeys(columns) if c not in frame.columns]
    if missing:
        raise KeyError(f"unknown column(s) {missing}; the rows have {list(frame.columns)} (a load_results(columns=...) "
                       f"without them?)")


def _contenders(frame: pd.DataFrame, metric: str, n: int, ascending: bool) -> pd.DataFrame:
    """The rows that can be among the ``n`` best by ``metric``: every row at least as good as the ``n``-th best
    value (ties included, so that ordering them by key gives the full sort's first ``n``), found by a partial sort
    in O(rows), so that only they are sorted by metric and key; all rows when fewer than ``n`` have a value."""
    if not 1 <= n < len(frame):
        return frame
    values = frame[metric].to_numpy(dtype=float)
    oriented = values if ascending else -values  # smaller is better; NaN stays NaN and numpy partitions it last
    nth = np.partition(oriented, n - 1)[n - 1]
    return frame if np.isnan(nth) else frame[oriented <= nth]


def _rank_weights(weights: Mapping[str, float] | None, preset: str | None) -> dict[str, float]:
    if (weights is None) == (preset is None):
        raise ValueError(f"give either weights={{metric: weight}} or preset= one of {list(RANK_PRESETS)}")
    if preset is not None:
        if preset not in RANK_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; presets are {list(RANK_PRESETS)}")
        return dict(RANK_PRESETS[preset])
    weights = dict(weights)
    if not weights:
        raise ValueError("weights is empty")
    for metric, weight in weights.items():
        if metric not in METRIC_NAMES:
            raise KeyError(f"unknown metric {metric!r} in weights; metrics are {list(METRIC_NAMES)}")
        if not (isinstance(weight, (int, float)) and np.isfinite(weight) and weight > 0):
            raise ValueError(f"weight of {metric!r} must be a positive number, got {weight!r} (metrics where lower "
                             f"is better are oriented by raybt: {sorted(LOWER_IS_BETTER)})")
    return weights


def _redacted(location: str) -> str:
    """A checkpoint location without credentials embedded in a URI (``s3://KEY:SECRET@bucket`` →
    ``s3://***@bucket``)."""
    return re.sub(r"://[^/@]+@", "://***@", location)


def load_results(checkpoint_dir: str, columns: Sequence[str] | None = None, filter: Filter = None) -> Results:
    """The rows stored in a checkpoint directory (all runs, the newest row per key), without running anything.

    Lazily: with ``columns`` only those columns are read (``key`` always comes too, and in a permutation test's
    directory ``permutation_seed`` and ``permutation``, so that its rows are never taken for rows on the real
    data: see :mod:`raybt.permuted_rows`), and with ``filter`` (see
    :func:`as_expression`: a pyarrow expression or ``[("sharpe", ">", 1), ("n_trades", ">=", 30)]``) only matching
    rows are kept, using Parquet projection and predicate pushdown. The newest row of each key is chosen from the
    key column of every part first, and the filter applies to that row: an older version of a row never comes back
    because it matches. A column a part lacks (a parameter of another strategy class) is null in its rows.

    Safe while a sweep writes the directory: parts appear atomically, and what is read is the parts present when
    ``df`` is first read. Warns (:class:`ResultsVersionWarning`) when some runs were made by raybt code that
    computes differently: their rows are returned as stored, but :func:`raybt.run_backtests` does not reuse them
    (their keys differ) and recomputes, and :meth:`Results.backtest` refuses to replay them."""
    runs = recorded_runs(checkpoint_dir)
    other = sorted({str(run.get("raybt_results_version")) for run in runs} - {RESULTS_VERSION})
    if other:
        warnings.warn(f"{_redacted(str(checkpoint_dir))} holds rows written by another raybt results version "
                      f"({', '.join(other)}; this raybt is {RESULTS_VERSION}): they were computed by other raybt "
                      f"code and may differ from what it computes now; run the sweep again to recompute them",
                      ResultsVersionWarning, stacklevel=2)
    if columns is not None and any("permutations" in run for run in runs):  # a permutation test wrote here
        columns = list(dict.fromkeys([*columns, *PERMUTATION_COLUMNS]))
    return Results(CheckpointStore(checkpoint_dir), columns=columns, filter=filter)
