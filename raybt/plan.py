"""Plan a sweep: jobs = strategies × (symbols, when swept one by one) × date ranges, each with a content key.

A job's key hashes everything its result depends on: the strategy id (parameters, and the code: the class, the user
code it reaches and its ``version``, see :mod:`raybt.code_digest`), the symbol of a per-symbol job, the date range
(its instants and its name, so that a renamed range comes back under its new name), the data fingerprint, the run's
settings (cost model, fill, initial amount, periods per year, risk-free rate) and :data:`RESULTS_VERSION`. An
unchanged job has the same key in every process and on every machine, so it is skipped on resume; any change makes
the old result *stale* and the job reruns.

Jobs are kept as parallel arrays (strategy, symbol and range positions, key) rather than objects, so planning a
million jobs stays cheap in time and memory. Their order is symbol by symbol, then strategy by strategy, then range
by range, so that a batch's jobs mostly share one symbol's data.
"""

from __future__ import annotations

import binascii
import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from raybt.code_digest import raybt_digest
from raybt.data import DateRange, DateRangeWarning, MarketData
from raybt.engine import CostModel
from raybt.permute import Permutation
from raybt.strategy import Strategy, checked_strategies, strategy_ids

_blake2b = hashlib.blake2b

RESULTS_VERSION: str = raybt_digest()
"""Derived from raybt's result-affecting source (:func:`raybt.code_digest.raybt_digest`), so it moves with any change
of the engine, metrics, indicators, signal conversion or data alignment, without anyone remembering to bump it; a
new value makes every stored result stale."""


@dataclass(frozen=True)
class RunSettings:
    """Everything besides the strategy and the range that a result depends on."""

    costs: CostModel
    periods_per_year: float | None = None
    risk_free_rate: float = 0.0
    results_version: str = field(default_factory=lambda: RESULTS_VERSION)
    """The driver's raybt code; a Ray worker whose raybt differs refuses to run (its rows would be stored under keys
    of other code)."""

    def fingerprint(self) -> str:
        text = repr((self.results_version, sorted(asdict(self.costs).items()), self.periods_per_year,
                     float(self.risk_free_rate)))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Plan:
    """All jobs of a sweep: job ``i`` runs ``strategies[strategy_index[i]]`` on ``date_ranges[range_index[i]]``,
    with the data of ``symbols[symbol_index[i]]`` alone, or of every symbol (one shared-cash portfolio) where that
    symbol is None."""

    strategies: Sequence[Strategy]
    date_ranges: tuple[DateRange | None, ...]
    symbols: tuple[str | None, ...]
    strategy_index: np.ndarray
    range_index: np.ndarray
    symbol_index: np.ndarray
    keys: np.ndarray  # fixed-width ASCII bytes, one per job
    strategy_ids: tuple[str, ...] = ()
    """``strategies[i].id``, computed once when planning (an id hashes the parameters as JSON: not free)."""
    # Permutation tests (raybt.stats.permutation_test): job i runs on permuted market permutations[permutation_index[i]]
    # (None: the real data). Only a permutation test's plan has any.
    permutations: tuple[Permutation | None, ...] = (None,)
    permutation_index: np.ndarray | None = None  # None: every job on the real data

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self, job: int) -> str:
        """``Strategy(params) on range 'name'`` (and ``symbol 'X'``) for error messages."""
        strategy = self.strategies[self.strategy_index[job]]
        strategy_id = self.strategy_ids[self.strategy_index[job]] if self.strategy_ids else strategy.id
        date_range = self.date_ranges[self.range_index[job]]
        symbol = self.symbols[self.symbol_index[job]]
        name = date_range.name if date_range is not None else "all data"
        where = f" of symbol {symbol!r}" if symbol is not None else ""
        if self.permutation_index is not None and self.permutations[self.permutation_index[job]] is not None:
            seed, i = self.permutations[self.permutation_index[job]]
            where += f" permuted (permutation {i} of seed {seed})"
        return f"{strategy!r} (id {strategy_id}) on range {name!r}{where}"


def plan_jobs(strategies: Iterable[Strategy], date_ranges: Iterable[DateRange | None] | DateRange | None,
              market: MarketData, settings: RunSettings, per_symbol: bool = False,
              permutations: Sequence[Permutation | None] | None = None) -> Plan:
    """Cross strategies with date ranges (and with the data's symbols, each alone, if ``per_symbol``) and key every
    job. Duplicate strategies (same id) and duplicate ranges are planned once. Every range must select at least one
    bar of the data (checked here, before any work starts; a per-symbol job whose symbol has no bar in its range
    fails on its own, naming both); a range that reaches past the data is reported once with a
    :class:`~raybt.data.DateRangeWarning`.

    ``permutations`` (for :func:`raybt.stats.permutation_test`) crosses the jobs once more, with markets permuted
    by ``(seed, i)`` (:mod:`raybt.permute`; None: the real data), outermost, so that a batch's jobs mostly share
    one permuted market; the permutation is part of a permuted job's key."""
    strategies = checked_strategies(strategies)
    if not strategies:
        raise ValueError("no strategies to run")
    ranges = _as_ranges(date_ranges)
    for date_range in ranges:
        market.bounds(date_range)  # raises a DataError naming an empty range
        problem = market.coverage_warning(date_range)
        if problem is not None:
            warnings.warn(problem, DateRangeWarning, stacklevel=3)
    unique: dict[str, Strategy] = {}  # id -> the first strategy with that id
    for strategy_id, strategy in zip(strategy_ids(strategies), strategies):
        unique.setdefault(strategy_id, strategy)
    kept = list(unique.values())
    symbols: tuple[str | None, ...] = tuple(market.symbols) if per_symbol else (None,)
    keys = job_keys(f"{market.fingerprint}|{settings.fingerprint()}|", unique, ranges, symbols)
    n_ranges, n_strategies = len(ranges), len(kept)
    symbol_index = np.repeat(np.arange(len(symbols), dtype=np.int64), n_strategies * n_ranges)
    strategy_index = np.tile(np.repeat(np.arange(n_strategies, dtype=np.int64), n_ranges), len(symbols))
    range_index = np.tile(np.arange(n_ranges, dtype=np.int64), n_strategies * len(symbols))
    plan = Plan(kept, ranges, symbols, strategy_index, range_index, symbol_index, keys, tuple(unique))
    return plan if permutations is None else _permuted(plan, tuple(permutations))


def job_keys(base: str, ids: Iterable[str], ranges: Sequence[DateRange | None],
             symbols: Sequence[str | None]) -> np.ndarray:
    """The keys of the jobs ``ids × ranges`` (strategy ids × date ranges, range fastest), for each of ``symbols``
    in turn, as fixed-width ASCII bytes (``S24``). Rule (stored keys depend on it, so it never changes): the hex
    digest of a 12-byte blake2b of ``f"{base}{strategy id}|{range key}|{range name}"`` (``"all"`` for the whole data)
    followed by ``f"|symbol={symbol}"`` for a per-symbol job, where ``base`` is ``"{data fingerprint}|{settings
    fingerprint}|"``. The hash state of the shared ``base`` is computed once and copied for each job (blake2b is
    incremental, so the digest is the same as hashing the whole text); the digests are joined and hex-encoded at
    once, not one string per job."""
    range_keys = [(f"{r.key}|{r.name}" if r is not None else "all") for r in ranges]
    ids = list(ids)
    base_state = _blake2b(base.encode(), digest_size=12)
    digests: list[bytes] = []
    for symbol in symbols:
        symbol_key = "" if symbol is None else f"|symbol={symbol}"
        tails = [f"|{range_key}{symbol_key}".encode() for range_key in range_keys]
        for strategy_id in ids:
            strategy_state = base_state.copy()
            strategy_state.update(strategy_id.encode())
            for tail in tails:
                job_state = strategy_state.copy()
                job_state.update(tail)
                digests.append(job_state.digest())
    return np.frombuffer(binascii.hexlify(b"".join(digests)), dtype="S24").copy()


def _permuted(plan: Plan, permutations: tuple[Permutation | None, ...]) -> Plan:
    """``plan``'s jobs once per permutation (permutation-major); a permuted job's key hashes its real key with the
    permutation."""
    if not permutations or len(set(permutations)) != len(permutations):
        raise ValueError(f"permutations must be distinct and at least one, got {permutations!r}")
    suffixes = [None if p is None else f"|permutation={int(p[0])}/{int(p[1])}".encode() for p in permutations]
    keys = [key if suffix is None else hashlib.blake2b(key + suffix, digest_size=12).hexdigest().encode()
            for suffix in suffixes for key in plan.keys]
    n_jobs, n = len(plan), len(permutations)
    return Plan(plan.strategies, plan.date_ranges, plan.symbols, np.tile(plan.strategy_index, n),
                np.tile(plan.range_index, n), np.tile(plan.symbol_index, n), np.array(keys, dtype="S24"),
                plan.strategy_ids, permutations, np.repeat(np.arange(n, dtype=np.int64), n_jobs))


def _as_ranges(date_ranges: Iterable[DateRange | None] | DateRange | None) -> tuple[DateRange | None, ...]:
    """The distinct ranges to plan. ``DateRange(None, None, name="all")`` is the whole data, stored exactly like
    ``None`` (range "all", no bounds), so it is planned as ``None``: its rows then replay from what they store."""
    if date_ranges is None or isinstance(date_ranges, DateRange):
        date_ranges = (date_ranges,)
    ranges = tuple(dict.fromkeys(None if _is_whole_data(r) else r for r in date_ranges))
    if not ranges:
        raise ValueError("date_ranges is empty")
    for r in ranges:
        if r is not None and not isinstance(r, DateRange):
            raise TypeError(f"date_ranges must hold raybt.DateRange objects, got {type(r).__name__}")
    names = [r.name for r in ranges if r is not None]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"several date ranges share the name(s) {duplicated}; give each range its own name")
    return ranges


def _is_whole_data(date_range: object) -> bool:
    return (isinstance(date_range, DateRange) and date_range.start is None and date_range.end is None
            and date_range.name == "all")
