"""Walk-forward optimisation: choose on each fold's train window, judge on its test window.

For each fold ``(train, test)`` (see :func:`raybt.windows.rolling`), :func:`walk_forward` makes one
:func:`raybt.run_backtests` call over every strategy — on the train window, and on the test window too unless
``oos_all=False`` — selects the best strategy from the train rows alone, and reruns the selected one on the test
window with :func:`raybt.run_backtest` for its equity curve. Nothing of the test window is used to select.

* **Selection.** ``select`` is a metric column (the highest value wins: ``"sharpe"``, ``"calmar"``,
  ``"max_drawdown"`` — the least negative —, ...) or a callable receiving the fold's train rows (a DataFrame, failed
  rows included) and returning the index label of the chosen row. With a metric, failed rows and rows whose metric
  is NaN (e.g. the Sharpe ratio of a strategy that never traded) are never chosen, and ties go to the strategy
  that comes first in ``strategies``; a fold without any usable row is an error naming the fold.
* **Stitched out-of-sample equity.** The selected strategies' test-window equity curves, each starting from the
  previous one's last value (every test backtest starts from ``initial_amount``; its curve is rescaled by
  ``previous_end / initial_amount``): what following the walk-forward choice would have earned, compounding.
  Test windows must not overlap (a period cannot be traded twice); gaps between them stay flat (no bars).
* **Decay.** Per fold: ``sharpe_ratio_oos_is`` = OOS Sharpe / IS Sharpe of the selected strategy, and
  ``rank_correlation`` = Spearman correlation of IS and OOS Sharpe ratios across all strategies (over strategies
  with both values finite; needs ``oos_all=True``, NaN otherwise). Summary: ``efficiency`` = mean OOS Sharpe /
  mean IS Sharpe of the selected strategies (walk-forward efficiency), ``rank_correlation`` = the mean of the
  folds' correlations. Near 1: in-sample performance carries over; near 0 or negative: selection found noise.
  Running every strategy on the test windows costs one more range per fold (a test window is usually a fraction
  of a train window); ``oos_all=False`` skips it.
* **Checkpoints.** With ``checkpoint_dir`` every fold's sweep is stored there; calling again with the same
  arguments resumes, reruns nothing stored, and reproduces the same folds.
* **One version of the code.** Like one :func:`raybt.run_backtests`, one call computes and keys every fold with the
  strategies' code as it is when the call starts (:func:`raybt.code_digest.fixed`): editing a source file meanwhile
  changes nothing of the call (the running process still has the code it loaded), and the next call keys its rows
  by the edited files. If the code that runs does change during the call (a module it uses reloaded, a module-level
  value it reads reassigned or modified), the walk-forward stops before the next fold with a :class:`RuntimeError`
  naming the class and its file, rather than mix two versions of the code: calling it again computes every fold
  with the new code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from raybt.backtest import run_backtest
from raybt.code_digest import changed_in_memory, fixed
from raybt.data import DataLike, DateRange, load_ohlcv
from raybt.results import Results
from raybt.strategy import Strategy, checked_strategies
from raybt.sweep import run_backtests

Selector = str | Callable[[pd.DataFrame], Any]
REPORTED_METRICS = ("sharpe", "total_return", "max_drawdown", "n_trades")
"""Metrics reported in and out of sample in the per-fold table (the selection metric is added if different)."""
_BACKTEST_OPTIONS = ("initial_amount", "fees", "fixed_fee", "slippage", "fill", "periods_per_year",
                     "risk_free_rate")


@dataclass(frozen=True)
class WalkForward:
    """Outcome of :func:`walk_forward`.

    ``folds``: one row per fold — ``fold``, ``train``, ``test`` (range names), the selected ``strategy_id``,
    ``strategy``, ``parameters`` (JSON), ``is_<metric>`` and ``oos_<metric>`` for :data:`REPORTED_METRICS`,
    ``sharpe_ratio_oos_is`` and ``rank_correlation``. ``equity``: the stitched out-of-sample equity curve.
    ``efficiency`` and ``rank_correlation``: the decay summary (module docstring). ``results``: each fold's
    :class:`~raybt.results.Results` (all strategies, train and — with ``oos_all`` — test window).
    """

    folds: pd.DataFrame
    equity: pd.Series
    efficiency: float
    rank_correlation: float
    results: tuple[Results, ...]


def walk_forward(strategies: Iterable[Strategy], data: DataLike, folds: Sequence[tuple[DateRange, DateRange]],
                 select: Selector = "sharpe", *, oos_all: bool = True, **run_options: Any) -> WalkForward:
    """Walk-forward optimisation of ``strategies`` over ``folds``; see the module docstring for the rules.

    ``run_options`` go to :func:`raybt.run_backtests` (costs, ``n_workers``, ``checkpoint_dir``,
    ``continue_on_error``, ...); the costs among them also to the :func:`raybt.run_backtest` of each selected
    strategy, so in- and out-of-sample figures are computed alike.

    >>> folds = raybt.windows.rolling("2022-01-01", "2024-01-01", train="365D", test="90D")
    >>> wf = raybt.walk_forward(strategies, data, folds, fees=0.001, n_workers=-1)
    >>> wf.folds[["train", "test", "parameters", "is_sharpe", "oos_sharpe"]]; wf.efficiency; wf.equity.plot()
    """
    strategies = checked_strategies(strategies)
    if run_options.get("per_symbol"):
        raise ValueError("walk_forward does not support per_symbol=True: select per symbol by running it on each "
                         "symbol's data")
    folds = _checked_folds(folds)
    if not (isinstance(select, str) or callable(select)):
        raise TypeError(f"select must be a metric name or a callable, got {select!r}")
    market = load_ohlcv(data)
    backtest_options = {k: v for k, v in run_options.items() if k in _BACKTEST_OPTIONS}
    initial = float(backtest_options.get("initial_amount", 10_000))
    metrics = REPORTED_METRICS + ((select,) if isinstance(select, str) and select not in REPORTED_METRICS else ())
    rows, curves, fold_results = [], [], []
    classes = list(dict.fromkeys(type(s) for s in strategies))
    with fixed(classes):  # these ids, and every fold's keys, are those of the code as it is when the call starts
        position = {}
        for i, strategy in enumerate(strategies):
            position.setdefault(strategy.id, i)
        for i, (train, test) in enumerate(folds):
            results = run_backtests(strategies, market, [train, test] if oos_all else [train], **run_options)
            fold_results.append(results)
            by_range = {name: frame for name, frame in results.df.groupby("range", sort=False)}
            train_rows = by_range[train.name]
            chosen = _select(train_rows, select, position, f"fold-{i} ({train.name})")
            best = strategies[position[chosen["strategy_id"]]]
            oos = run_backtest(best, market, test, **backtest_options)
            curves.append(oos.equity)
            row: dict[str, Any] = {"fold": i, "train": train.name, "test": test.name, "strategy_id": best.id,
                                   "strategy": type(best).__name__, "parameters": chosen["parameters"]}
            for metric in metrics:
                row[f"is_{metric}"] = chosen[metric]
                row[f"oos_{metric}"] = oos.metrics[metric]
            row["sharpe_ratio_oos_is"] = _ratio(oos.metrics["sharpe"], chosen["sharpe"])
            row["rank_correlation"] = _rank_correlation(train_rows, by_range[test.name]) if oos_all else np.nan
            rows.append(row)
            _check_code_unchanged(classes, i, len(folds))
    table = pd.DataFrame(rows)
    return WalkForward(folds=table, equity=_stitch(curves, initial),
                       efficiency=_ratio(table["oos_sharpe"].mean(), table["is_sharpe"].mean()),
                       rank_correlation=float(table["rank_correlation"].mean()), results=tuple(fold_results))


def _check_code_unchanged(classes: list[type], fold: int, n_folds: int) -> None:
    """Raise if the code of a strategy class changed in memory while fold ``fold`` ran (checked after each fold, so
    no fold after the change is computed and no result mixing two versions is returned)."""
    changed = changed_in_memory(classes)
    if not changed:
        return
    cls = changed[0]
    module = sys.modules.get(cls.__module__)
    where = getattr(module, "__file__", None) or cls.__module__
    stopped = f"before fold {fold + 1}" if fold + 1 < n_folds else "after its last fold"
    raise RuntimeError(f"walk_forward stopped {stopped}: the code of strategy class {cls.__qualname__} ({where}) "
                       f"changed in memory while fold {fold} ran: a module it uses was reloaded, or a module-level "
                       f"value it reads was reassigned or modified (a cache the strategy fills counts too: keep it "
                       f"out of module-level values). Going on would mix two versions of the code in one "
                       f"walk-forward; nothing later was computed. Call walk_forward again to compute every fold "
                       f"with the code as it is now (rows of the earlier code in checkpoint_dir are not reused).")


def _checked_folds(folds: Sequence[tuple[DateRange, DateRange]]) -> list[tuple[DateRange, DateRange]]:
    folds = list(folds)
    if not folds:
        raise ValueError("walk_forward: no folds (raybt.windows.rolling makes them)")
    for i, pair in enumerate(folds):
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(w, DateRange) for w in pair)):
            raise TypeError(f"walk_forward: folds[{i}] is not a (train, test) pair of DateRange")
        train, test = pair
        if train.name == test.name:
            raise ValueError(f"walk_forward: fold {i}'s train and test windows are both named {train.name!r}")
    for (_, earlier), (_, later) in zip(folds, folds[1:]):
        if earlier.end is None or later.start is None or later.start < earlier.end:
            raise ValueError(f"walk_forward: test windows {earlier.name!r} and {later.name!r} overlap (or are open): "
                             f"the out-of-sample curve would trade a period twice")
    return folds


def _select(rows: pd.DataFrame, select: Selector, position: dict[str, int], fold: str) -> pd.Series:
    if callable(select):
        label = select(rows)
        if label not in rows.index:
            raise ValueError(f"walk_forward: select returned {label!r} for {fold}, not an index label of its rows")
        return rows.loc[label]
    if select not in rows.columns:
        raise KeyError(f"walk_forward: unknown select metric {select!r}")
    usable = rows[rows["error"].isna() & rows[select].notna()]
    if usable.empty:
        raise ValueError(f"walk_forward: no strategy has a {select} value in {fold} "
                         f"({len(rows)} rows, {int(rows['error'].notna().sum())} failed)")
    order = usable.assign(_position=usable["strategy_id"].map(position))
    return order.sort_values([select, "_position"], ascending=[False, True], kind="mergesort").iloc[0]


def _rank_correlation(train_rows: pd.DataFrame, test_rows: pd.DataFrame) -> float:
    both = pd.concat([train_rows.set_index("strategy_id")["sharpe"].rename("is"),
                      test_rows.set_index("strategy_id")["sharpe"].rename("oos")], axis=1)
    both = both.replace([np.inf, -np.inf], np.nan).dropna()
    return float(both["is"].corr(both["oos"], method="spearman")) if len(both) > 2 else np.nan


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator and np.isfinite(denominator) else np.nan


def _stitch(curves: list[pd.Series], initial: float) -> pd.Series:
    """Chain test-window equity curves: each starts where the previous one ended."""
    level, parts = initial, []
    for curve in curves:
        scaled = curve * (level / initial)
        parts.append(scaled)
        if len(scaled):
            level = float(scaled.iloc[-1])
    return pd.concat(parts).rename("equity")

