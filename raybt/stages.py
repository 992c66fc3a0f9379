"""Staged sweeps with pruning: ``run_backtests(strategies, data, ranges, keep=...)``.

The date ranges are *stages*, run one after another in the order given; after each stage only the strategies that
``keep`` retains go on to the next one. Each stage is one :func:`raybt.run_backtests` call over one range, with the
call's other options (the same ``checkpoint_dir``, costs, workers), so everything a sweep does — checkpoints,
failures, Ctrl-C, Ray — works per stage.

Rules:

* ``keep=k`` (an int ≥ 1): the ``k`` strategies with the highest Sharpe ratio (the ``sharpe`` column) in the stage
  just finished. Failed rows and rows whose Sharpe is NaN (e.g. a strategy that never traded) are never kept; ties
  go to the strategy that comes first in ``strategies``. A stage with fewer usable rows keeps them all — so a
  constant ``k`` prunes in the first stage and later drops only failed or NaN rows; to narrow stage by stage use a
  callable, e.g. ``keep=lambda r: r.best("sharpe", max(1, len(r) // 2))`` (halve each stage).
* ``keep=callable``: called with the stage's :class:`~raybt.results.Results` (its ``df`` holds the stage's rows,
  failed ones included, in the order of ``strategies``), it returns what to keep: result rows (a DataFrame with a
  ``strategy_id`` column, e.g. ``r.best("sharpe", 100)`` or ``r.rank(preset="balanced").head(100)``), or an iterable
  of strategy ids or of :class:`~raybt.strategy.Strategy` objects. Anything else is a :class:`TypeError`, and an id
  that is not one of the stage's strategies (unknown, or pruned by an earlier stage) a :class:`ValueError`, both
  naming what came back. The kept strategies go on in the order of ``strategies``, whatever order the rule returns.
* The rule is applied after every stage, the last one included: :attr:`StagedResults.survivors` are what the last
  stage kept. A stage that keeps nothing stops the sweep with a :class:`StageWarning` (the later stages are not run;
  the results hold the rows of the stages that ran). A sweep in which no stage pruned anything is reported with a
  :class:`StageWarning` too.
* Resuming: with ``checkpoint_dir``, calling again with the same arguments skips the finished stages (their rows are
  read back, the rule applied to them again, so a deterministic rule gives the same survivors) and resumes the stage
  where the sweep stopped.
* Pruned strategies' rows stay in the checkpoint directory: they are trials, and
  :func:`raybt.stats.count_trials` counts them. Pruning is selection: the deflated Sharpe ratio of a survivor takes
  every strategy of the first stage as trials (``n_configurations``), not the last stage's (``by_range``).
* ``per_symbol=True`` is refused: a strategy would be kept or dropped for every symbol at once. Run a staged sweep
  per symbol (its own data) instead.
"""

from __future__ import annotations

import pstats
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from raybt.data import DataLike, DateRange, MarketData, load_ohlcv
from raybt.results import Results
from raybt.strategy import Strategy, checked_strategies
from raybt.sweep import BacktestError, run_backtests

KeepRule = int | Callable[[Results], Any]


class StageWarning(UserWarning):
    """A staged sweep's rule kept nothing (the sweep stopped) or pruned nothing in any stage."""


class StagedResults(Results):
    """The rows of every stage of a staged sweep (what :func:`raybt.run_backtests` with ``keep=`` returns): a
    :class:`~raybt.results.Results` over all of them — ``df`` has one row per (strategy, stage) that ran, in stage
    order, each stage's rows in the order of ``strategies`` — plus what each stage kept.

    ``stages``: one row per stage that ran — ``stage`` (0, 1, ...), ``range`` (its name), ``n_in`` (strategies run on
    it), ``n_failed`` (of them, failed), ``n_kept`` (went on), ``n_computed`` and ``n_skipped`` (computed now / found
    in the checkpoint directory). ``kept``: the strategies each stage kept, one tuple per stage. ``survivors``: those
    the last stage kept. ``stage_results``: each stage's own :class:`~raybt.results.Results`."""

    def __init__(self, stage_results: Sequence[Results], stage_names: Sequence[str],
                 kept: Sequence[tuple[Strategy, ...]], strategies: Sequence[Strategy]):
        last = stage_results[-1]
        # Every stage's rows are already read (the rule needed them): they become this object's rows, and the first
        # stage's store (the checkpoint directory all stages share, or rows in memory) serves lookups of rows.
        super().__init__(stage_results[0]._store, np.concatenate([r._keys for r in stage_results]),
                         n_computed=sum(r.n_computed for r in stage_results),
                         n_skipped=sum(r.n_skipped for r in stage_results),
                         profile=_merged_profiles([r.profile for r in stage_results]), strategies=strategies,
                         settings=last._settings, data_fingerprint=last._data_fingerprint)
        self._df = pd.concat([r.df for r in stage_results], ignore_index=True)
        self.stage_results = tuple(stage_results)
        self.kept = tuple(kept)
        self.stages = pd.DataFrame({
            "stage": range(len(stage_results)),
            "range": list(stage_names),
            "n_in": [len(r) for r in stage_results],
            "n_failed": [int(r.df["error"].notna().sum()) for r in stage_results],
            "n_kept": [len(k) for k in kept],
            "n_computed": [r.n_computed for r in stage_results],
            "n_skipped": [r.n_skipped for r in stage_results],
        })

    @property
    def survivors(self) -> tuple[Strategy, ...]:
        """The strategies the last stage that ran kept."""
        return self.kept[-1]

    def __repr__(self) -> str:
        where = f", checkpoint_dir={self.checkpoint_dir!r}" if self.checkpoint_dir else ""
        path = " → ".join(str(n) for n in [self.stages["n_in"].iloc[0], *self.stages["n_kept"]])
        return (f"StagedResults({len(self.stages)} stages, strategies {path}: {self.n_computed} computed, "
                f"{self.n_skipped} from checkpoints{where})")


def run_staged(strategies: Iterable[Strategy], data: DataLike,
               date_ranges: Iterable[DateRange | None] | DateRange | None, keep: KeepRule,
               **run_options: Any) -> StagedResults:
    """Run ``date_ranges`` as stages, pruning with ``keep`` after each (rules in the module docstring);
    ``run_options`` are :func:`raybt.run_backtests`'s. Called by ``run_backtests(..., keep=...)``."""
    stages = _checked_stages(date_ranges)
    _check_keep(keep)
    if run_options.get("per_symbol"):
        raise ValueError("keep= (a staged sweep) does not support per_symbol=True: a strategy would be kept or "
                         "dropped for all symbols at once; run one staged sweep per symbol's data instead")
    strategies = _unique(strategies)
    market = load_ohlcv(data)  # validated once, not once per stage
    pruned_at: dict[str, int] = {}
    stage_results: list[Results] = []
    kept: list[tuple[Strategy, ...]] = []
    survivors = tuple(strategies)
    for number, stage in enumerate(stages):
        results = _run_stage(survivors, market, stage, number, len(stages), run_options)
        _in_strategy_order(results, survivors)
        kept_ids = _apply(keep, results, survivors, pruned_at, number)
        stage_results.append(results)
        pruned_at.update((s.id, number) for s in survivors if s.id not in kept_ids)
        survivors = tuple(s for s in survivors if s.id in kept_ids)
        kept.append(survivors)
        if not survivors:
            later = [_name(s) for s in stages[number + 1:]]
            warnings.warn(f"keep kept none of the {len(results)} strategies of stage {number} "
                          f"({_name(stage)!r}); the sweep stops here"
                          + (f" (stages {later} not run)" if later else ""), StageWarning, stacklevel=3)
            break
    if not pruned_at:
        warnings.warn(f"keep={_describe(keep)} pruned nothing: every stage kept all {len(strategies)} strategies",
                      StageWarning, stacklevel=3)
    return StagedResults(stage_results, [_name(s) for s in stages[:len(stage_results)]], kept, strategies)


def _run_stage(strategies: Sequence[Strategy], market: MarketData, stage: DateRange | None, number: int, n_stages: int,
               run_options: Mapping[str, Any]) -> Results:
    """One stage: a plain sweep over one range. A stage that stops (a failed job, Ctrl-C) says which it was."""
    where = f"stage {number} of {n_stages} ({_name(stage)!r})"
    try:
        return run_backtests(strategies, market, [stage], **run_options)
    except BacktestError as exc:
        raise BacktestError(f"{where}: {exc}") from None
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(f"{exc} ({where}; the stages before it are complete)") from None


def _in_strategy_order(results: Results, strategies: Sequence[Strategy]) -> None:
    """Put a stage's rows in the order of its ``strategies``: the order parts were written in (completion order, and
    different again after a resume) must not reach a rule that reads ``df`` row by row. (The ids are read after the
    stage ran: a sweep refreshes the strategies' code digests, and so their ids, when a module was reloaded.)"""
    position = {s.id: i for i, s in enumerate(strategies)}
    df = results.df
    order = np.argsort(df["strategy_id"].map(position).to_numpy(), kind="stable")
    results._df = df.iloc[order].reset_index(drop=True)  # Results has no public way to reorder its rows


def _apply(keep: KeepRule, results: Results, strategies: Sequence[Strategy], pruned_at: Mapping[str, int],
           number: int) -> set[str]:
    """The ids of the strategies ``keep`` retains after this stage."""
    if not callable(keep):
        return _top_by_sharpe(results.df, keep)
    returned = keep(results)
    ids = _returned_ids(returned, number)
    ours = {s.id for s in strategies}
    unknown = [i for i in dict.fromkeys(ids) if i not in ours]
    if unknown:
        earlier = [f"{i} (pruned after stage {pruned_at[i]})" for i in unknown if i in pruned_at]
        raise ValueError(f"keep returned {len(unknown)} strategy id(s) that are not among the {len(strategies)} "
                         f"strategies of stage {number}: {unknown[:5]}{' …' if len(unknown) > 5 else ''}"
                         + (f"; {', '.join(earlier[:5])}" if earlier else ""))
    return set(ids)


def _top_by_sharpe(df: pd.DataFrame, k: int) -> set[str]:
    """The ``k`` highest Sharpe ratios among rows that ran and have one; ties to the earlier strategy (``df`` is in
    the order of ``strategies``)."""
    usable = df[df["error"].isna() & df["sharpe"].notna()]
    best = usable.sort_values("sharpe", ascending=False, kind="stable").head(k)
    return set(best["strategy_id"])


def _returned_ids(returned: Any, number: int) -> list[str]:
    """Strategy ids from what a keep callable returned: result rows, strategy ids or strategies."""
    expected = "expected result rows (a DataFrame with a strategy_id column), strategy ids or strategies"
    if isinstance(returned, pd.DataFrame):
        if "strategy_id" not in returned.columns:
            raise TypeError(f"keep returned a DataFrame without a strategy_id column (columns "
                            f"{list(returned.columns)[:8]}) after stage {number}; {expected}")
        return [str(i) for i in returned["strategy_id"]]
    if isinstance(returned, (str, bytes, Mapping)) or not isinstance(returned, Iterable):
        raise TypeError(f"keep returned {_short(returned)} after stage {number}; {expected}")
    ids = []
    for item in returned:
        if isinstance(item, Strategy):
            ids.append(item.id)
        elif isinstance(item, str):
            ids.append(str(item))
        else:
            raise TypeError(f"keep returned an iterable holding {_short(item)} after stage {number}; {expected}")
    return ids


def _checked_stages(date_ranges: Iterable[DateRange | None] | DateRange | None) -> list[DateRange | None]:
    stages = [date_ranges] if date_ranges is None or isinstance(date_ranges, DateRange) else list(date_ranges)
    if not stages:
        raise ValueError("date_ranges is empty: a staged sweep (keep=) needs its stages")
    for i, stage in enumerate(stages):
        if stage is not None and not isinstance(stage, DateRange):
            raise TypeError(f"date_ranges[{i}] is a {type(stage).__name__}, not a raybt.DateRange")
    names = [_name(s) for s in stages]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"several stages share the range name(s) {repeated}; give each stage its own range")
    return stages


def _check_keep(keep: Any) -> None:
    if callable(keep):
        return
    if isinstance(keep, bool) or not isinstance(keep, (int, np.integer)):
        raise TypeError(f"keep must be a positive int (top-k by Sharpe) or a callable, got {_short(keep)}")
    if keep < 1:
        raise ValueError(f"keep must be at least 1 (top-k by Sharpe), got {keep}")


def _unique(strategies: Iterable[Strategy]) -> list[Strategy]:
    """The strategies, each id once (the first one given), as a sweep plans them."""
    unique: dict[str, Strategy] = {}
    for strategy in checked_strategies(strategies):
        unique.setdefault(strategy.id, strategy)
    return list(unique.values())


def _merged_profiles(profiles: Sequence[pstats.Stats | None]) -> pstats.Stats | None:
    present = [p for p in profiles if p is not None]
    if not present:
        return None
    merged = pstats.Stats()  # a new object: the stages' own statistics stay as they were
    merged.add(*present)
    return merged


def _name(stage: DateRange | None) -> str:
    return "all" if stage is None else stage.name


def _describe(keep: KeepRule) -> str:
    return str(keep) if not callable(keep) else getattr(keep, "__name__", type(keep).__name__)


def _short(value: Any) -> str:
    text, kind = repr(value), type(value).__name__
    article = "an" if kind[0].lower() in "aeiou" else "a"
    return f"{article} {kind} ({text[:60]}{'…' if len(text) > 60 else ''})"
