"""The permutation (Monte-Carlo) test: would the chosen strategies do as well on the same bars in a random order?

Null hypothesis: the strategies have no edge on the order of the bars — what they earn comes from the bars' returns
and shapes, which a random order keeps (drift, volatility, fat tails, intrabar ranges), not from any structure in
time, which it destroys (trends, momentum, mean reversion, seasonality). :func:`permutation_test` runs every
strategy on the real data and on ``n`` permuted markets (:mod:`raybt.permute`: the bars of ``date_range``
reordered, each keeping its open/high/low/close shape relative to the previous close, one order shared by all
symbols), all in one sweep, and compares:

* ``observed`` = the best metric among the strategies on the real data;
* ``permuted[i]`` = the best metric among the same strategies on permuted market ``i``.

Taking the best on both sides accounts for the selection: a single chosen strategy is tested against itself; a
sweep's 1,000 candidates are tested as "the best of 1,000 on real data" against "the best of the same 1,000 on
each permuted market". The p-value is

    p = (1 + #{i : permuted[i] at least as good as observed}) / (1 + n)

("at least as good": ``>=``, or ``<=`` for the metrics in :data:`raybt.results.LOWER_IS_BETTER`). The ``+1`` counts
the real data as one of the orders and keeps p > 0, which makes it an exact, valid p-value for random permutations
(Phipson, B. & Smyth, G. K. (2010), "Permutation P-values Should Never Be Zero: Calculating Exact P-values When
Permutations Are Randomly Drawn", Statistical Applications in Genetics and Molecular Biology 9(1), Article 39). The
smallest p-value ``n`` permutations can give is ``1 / (1 + n)`` (``n >= 19`` to reach 5 % at all, ``n >= 99`` for
1 %), and the p-value itself is an estimate with a standard error of about ``sqrt(p (1 - p) / n)``. The design
follows Masters, T. (2016), "Permutation and Randomization Tests for Trading System Development" (bars permuted
keeping their shape; the best of the candidates on each permuted market).

A permuted market where no strategy has a value of the metric (NaN: e.g. the Sharpe ratio of strategies that never
trade) counts as at least as good as the real data — the p-value errs on the side of "not significant" — and the
test says how many there were (``n_undefined``) with a :class:`PermutationWarning`.

Execution is an ordinary sweep (:func:`raybt.run_backtests`: the same executors, in-process or Ray, the data put in
the object store once); each job carries only ``(seed, i)`` and the worker builds permuted market ``i`` itself.
Every permutation is drawn from ``(seed, i)`` alone, so the same seed gives the same p-value with any ``n_workers``
and batch size. With ``checkpoint_dir`` each row is stored under a key of the strategy, range, data, settings and
``(seed, i)``: calling again resumes, and a larger ``n`` with the same seed computes only the new permutations. Each
stored row says which market it ran on: ``permutation_seed`` and ``permutation`` (the ``(seed, i)`` above; ``<NA>``
on the real data), so ``raybt.load_results`` of the directory does not pass permuted rows off as real results:
what picks, ranks or tests strategies there (``best``, ``rank``, ``verdict``, the report and plots) uses the rows on
the real data and warns of the others it left out (:mod:`raybt.permuted_rows`), and ``summary`` shows every market
apart; the outcome of the test is the returned :class:`PermutationTest`. ``Results.backtest`` and ``Results.returns`` replay a permuted row on its permuted
market, rebuilt from the real data and ``(seed, i)``, with the metrics checked bit for bit as for any row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from raybt.checkpoint import recorded_runs
from raybt.data import DataError, DataLike, DateRange, load_ohlcv
from raybt.metrics import METRIC_NAMES
from raybt.permute import check_permutable, window
from raybt.results import LOWER_IS_BETTER
from raybt.strategy import Strategy, checked_strategies
from raybt.sweep import run_backtests


class PermutationWarning(UserWarning):
    """Some permuted markets gave no value of the metric for any strategy; they count against the strategies."""


@dataclass(frozen=True)
class PermutationTest:
    """Outcome of :func:`permutation_test` (see the module docstring for the rules).

    ``p_value``: ``(1 + #{permuted at least as good as observed}) / (1 + n_permutations)``. ``observed``: the best
    ``metric`` among the strategies on the real data, by ``best`` (a strategy id); ``observed_by_strategy``: each
    strategy's value (index: strategy id, in the order given). ``permuted``: the best value on each permuted market
    (read-only, permutation ``i`` at position ``i``). ``n_undefined``: permuted markets without any value (counted
    as at least as good). ``n_computed`` / ``n_skipped``: backtests run now / found in ``checkpoint_dir``.
    """

    p_value: float
    observed: float
    permuted: np.ndarray = field(compare=False, repr=False)
    n_permutations: int
    metric: str
    seed: int
    best: str
    date_range: str
    observed_by_strategy: pd.Series = field(compare=False, repr=False)
    n_undefined: int = 0
    n_computed: int = 0
    n_skipped: int = 0

    def __str__(self) -> str:
        share = np.mean(_at_least_as_good(self.permuted, self.observed, self.metric))
        return (f"permutation test of {len(self.observed_by_strategy)} strategies on {self.date_range!r}: best "
                f"{self.metric} {self.observed:.4g} (strategy {self.best}); {share:.1%} of {self.n_permutations} "
                f"permuted markets did at least as well; p = {self.p_value:.4g}")


def permutation_test(strategies: Strategy | Iterable[Strategy], data: DataLike, n: int = 100, seed: int = 0,
                     date_range: DateRange | None = None, metric: str = "sharpe", *, n_workers: int | None = None,
                     checkpoint_dir: str | None = None, batch_size: int | None = None,
                     show_progress: bool = True, address: str | None = None, initial_amount: float = 10_000,
                     fees: float = 0.0, fixed_fee: float = 0.0, slippage: float = 0.0, fill: str = "close",
                     periods_per_year: float | None = None, risk_free_rate: float = 0.0) -> PermutationTest:
    """Test whether the best of ``strategies`` on ``date_range`` of ``data`` beats the same strategies on ``n``
    permuted markets drawn from ``seed`` (see the module docstring for the null hypothesis, the p-value and its
    reference). Costs and settings are those of :func:`raybt.run_backtests`; ``batch_size`` None takes its default.

    ``checkpoint_dir`` must be a directory of its own (or one a permutation test wrote): rows on permuted markets
    are not trials of a parameter search, so a sweep's directory is refused rather than mixed with them (and
    :func:`raybt.stats.count_trials` refuses a directory holding them). A job that fails stops the test with
    :class:`raybt.BacktestError` naming the strategy and the permutation.

    >>> test = raybt.stats.permutation_test(SmaCross(fast=10, slow=50), data, n=200, n_workers=-1)
    >>> test.p_value, test.observed, test.permuted.max()  # p small: the order of the bars mattered to it
    """
    strategies = checked_strategies([strategies] if isinstance(strategies, Strategy) else strategies)
    if not strategies:
        raise ValueError("permutation_test: no strategies")
    _check_arguments(n, seed, date_range, metric)
    if checkpoint_dir is not None:
        _check_own_directory(checkpoint_dir)
    market = load_ohlcv(data)
    first, end = window(market, date_range)
    if end - first < 2:
        raise DataError(f"date range {_name(date_range)!r} has {end - first} bar(s) that can be reordered (the "
                        f"data's first bar has no previous close): nothing to permute")
    check_permutable(market, date_range)
    results = run_backtests(strategies, market, date_range, initial_amount=initial_amount, fees=fees,
                            fixed_fee=fixed_fee, slippage=slippage, fill=fill, n_workers=n_workers,
                            checkpoint_dir=checkpoint_dir, show_progress=show_progress, address=address,
                            periods_per_year=periods_per_year, risk_free_rate=risk_free_rate,
                            _permutations=[None, *((seed, i) for i in range(n))],
                            **({} if batch_size is None else {"batch_size": batch_size}))
    ids = list(dict.fromkeys(s.id for s in strategies))
    # results._keys: this sweep's job keys in plan order (rows come back in storage order)
    values = _metric_by_key(results.df, metric)[np.asarray(results._keys).astype(str)].to_numpy()
    values = values.reshape(n + 1, len(ids))  # the plan's order: real data, then permutation by permutation
    observed_by_strategy = pd.Series(values[0], index=pd.Index(ids, name="strategy_id"), name=metric)
    if observed_by_strategy.isna().all():
        raise ValueError(f"permutation_test: no strategy has a {metric} value on the real data of "
                         f"{_name(date_range)!r} (e.g. none traded): there is nothing to test")
    best = _best(observed_by_strategy, metric)
    permuted = _best_per_row(values[1:], metric)
    permuted.setflags(write=False)
    observed = float(observed_by_strategy[best])
    undefined = int(np.isnan(permuted).sum())
    if undefined:
        warnings.warn(f"permutation_test: on {undefined} of {n} permuted markets no strategy has a {metric} value; "
                      f"they count as at least as good as the real data (the p-value is not understated)",
                      PermutationWarning, stacklevel=2)
    p_value = (1 + int(_at_least_as_good(permuted, observed, metric).sum())) / (1 + n)
    return PermutationTest(p_value=p_value, observed=observed, permuted=permuted, n_permutations=n, metric=metric,
                           seed=seed, best=best, date_range=_name(date_range),
                           observed_by_strategy=observed_by_strategy, n_undefined=undefined,
                           n_computed=results.n_computed, n_skipped=results.n_skipped)


def _check_arguments(n: object, seed: object, date_range: object, metric: object) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"permutation_test: n (the number of permutations) must be a positive int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"permutation_test: seed must be a non-negative int, got {seed!r}")
    if date_range is not None and not isinstance(date_range, DateRange):
        raise TypeError(f"permutation_test: date_range must be one raybt.DateRange or None, got "
                        f"{type(date_range).__name__}")
    if metric not in METRIC_NAMES:
        raise ValueError(f"permutation_test: unknown metric {metric!r}; choose one of {list(METRIC_NAMES)}")


def _check_own_directory(checkpoint_dir: str) -> None:
    sweeps = [run for run in recorded_runs(checkpoint_dir) if "permutations" not in run]
    if sweeps:
        raise ValueError(f"permutation_test: {checkpoint_dir} holds {len(sweeps)} sweep run(s) on real data; rows "
                         f"on permuted markets there would be counted as trials of that search. Give the "
                         f"permutation test a checkpoint directory of its own (e.g. {checkpoint_dir}/permutations)")


def _metric_by_key(rows: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` per row key; a failed row has none (its NaN counts like any undefined value)."""
    return rows.set_index(rows["key"].astype(str))[metric].astype("float64")


def _best(values: pd.Series, metric: str) -> str:
    """The label of the best value (ties: the first); NaN never wins."""
    return str(values.idxmin() if metric in LOWER_IS_BETTER else values.idxmax())


def _best_per_row(values: np.ndarray, metric: str) -> np.ndarray:
    """The best value of each row, NaN where a row has none (without numpy's all-NaN warning)."""
    defined = ~np.isnan(values).all(axis=1)
    best = np.full(len(values), np.nan)
    reduce = np.nanmin if metric in LOWER_IS_BETTER else np.nanmax
    best[defined] = reduce(values[defined], axis=1)
    return best


def _at_least_as_good(permuted: np.ndarray, observed: float, metric: str) -> np.ndarray:
    """Which permuted values are at least as good as ``observed``; an undefined (NaN) one counts as such."""
    with np.errstate(invalid="ignore"):
        better = permuted <= observed if metric in LOWER_IS_BETTER else permuted >= observed
    return better | np.isnan(permuted)


def _name(date_range: DateRange | None) -> str:
    return date_range.name if date_range is not None else "all data"
