"""Batch evaluation (raybt.batch_eval): one compiled call per group of jobs gives the rows of the one-by-one path
(raybt.backtest.evaluate) bit for bit; errors stay per job; the signals_many hook gives the same rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt import batch_eval, indicators
from raybt.batch import Batch, run_batch
from raybt.data import load_ohlcv
from raybt.demo import SmaCross
from raybt.engine import CostModel
from raybt.plan import RunSettings
from raybt.strategy import signal_arrays


class Rules(raybt.Strategy):
    """SMA crossings with every trading rule swept, and a warm-up."""

    fast: int = 3
    slow: int = 12
    size: float = 1.0
    direction: str = "long"
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None
    warmup = 15

    def signals(self, data):
        fast = indicators.sma(data.close, self.fast)
        slow = indicators.sma(data.close, self.slow)
        return indicators.crossed_above(fast, slow), indicators.crossed_below(fast, slow)


class Fragile(SmaCross):
    """Fails for fast == 4 (a bug in one parameter set)."""

    def signals(self, data):
        if self.fast == 4:
            raise ZeroDivisionError("fast == 4 breaks me")
        return super().signals(data)


class NoHook(SmaCross):
    """The demo strategy without its vectorised hook: one signals() call per parameter set."""

    signals_many = None


@pytest.fixture(scope="module")
def market():
    return load_ohlcv(raybt.synthetic_ohlcv(symbols=["A", "B"], start="2023-01-01", end="2023-03-01", freq="1h",
                                            seed=3))


RANGES = [raybt.DateRange("2023-01-10", "2023-02-15", name="mid"), None]


def _rule_grid() -> list[raybt.Strategy]:
    return [Rules(fast=f, slow=s, size=size, direction=d, stop_loss=sl, take_profit=tp, trailing_stop=ts)
            for f, s in ((3, 12), (5, 30)) for size in (0.5, 1.0) for d in ("long", "short", "both")
            for sl, tp, ts in ((None, None, None), (0.01, 0.02, None), (None, None, 0.015))]


def _batch(strategies, ranges, symbols, keep_curves=False) -> Batch:
    jobs = [(s, r, sym) for sym in symbols for s in strategies for r in ranges]
    return Batch(np.arange(len(jobs)), [j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs],
                 keep_curves)


def _one_by_one(market, batch: Batch, settings: RunSettings):
    """The reference: every job through raybt.backtest.evaluate (what a replay runs)."""
    return run_batch(market, Batch(batch.jobs, batch.strategies, batch.date_ranges, batch.symbols, True), settings)


def _assert_same_rows(grouped, reference) -> None:
    assert np.array_equal(grouped.metrics.view(np.int64), reference.metrics.view(np.int64))  # bits, NaN included
    assert [e is None for e in grouped.errors] == [e is None for e in reference.errors]


@pytest.mark.parametrize("fill", ["close", "next_open"])
@pytest.mark.parametrize("symbols", [[None], ["A", "B"]], ids=["portfolio", "per-symbol"])
def test_grouped_rows_are_bit_identical_to_one_by_one(market, fill, symbols):
    settings = RunSettings(CostModel(10_000, fees=0.001, fixed_fee=0.5, slippage=0.0005, fill=fill),
                           risk_free_rate=0.02)
    batch = _batch(_rule_grid() + [SmaCross(fast=f, slow=20) for f in (2, 4, 6)], RANGES, symbols)
    grouped = run_batch(market, batch, settings)
    assert all(e is None for e in grouped.errors)
    assert np.isfinite(grouped.metrics[:, 0]).all() and (grouped.metrics[:, 17] > 0).any()  # trades happened
    _assert_same_rows(grouped, _one_by_one(market, batch, settings))


class ShortWithStops(SmaCross):
    """Trading rules as class attributes: every instance has them."""

    size = 0.5
    direction = "short"
    stop_loss = 0.01
    trailing_stop = 0.015


class SizedByWindow(SmaCross):
    """A rule computed per instance (a property), not a parameter."""

    @property
    def size(self):
        return self.fast / 10


class OwnSize(SmaCross):
    """A rule set per instance by the class's own __init__."""

    def __init__(self, **params):
        super().__init__(**params)
        object.__setattr__(self, "take_profit", params.get("slow", 20) / 1000)


@pytest.mark.parametrize("cls, shared", [(ShortWithStops, True), (Rules, False), (SizedByWindow, False),
                                         (OwnSize, False)])
def test_trading_rules_are_each_instances_own_read_once_only_when_all_share_them(cls, shared):
    strategies = [cls(fast=f, slow=s) for f, s in ((2, 20), (4, 30), (6, 40))]
    rules, directions = batch_eval._trading_rules(strategies)
    off = lambda value: np.nan if value is None else float(value)  # noqa: E731 - simulate()'s reading
    expected = np.array([[off(s.size), off(s.stop_loss), off(s.take_profit), off(s.trailing_stop)]
                         for s in strategies])
    assert np.array_equal(rules, expected, equal_nan=True)
    assert directions.tolist() == [raybt.engine.DIRECTION_CODES[s.direction] for s in strategies]
    assert (batch_eval._rules_of_class(cls) is not None) is shared


@pytest.mark.parametrize("cls", [ShortWithStops, SizedByWindow, OwnSize])
def test_rules_of_the_class_or_of_each_instance_give_one_by_ones_rows(market, cls):
    settings = RunSettings(CostModel(10_000, fees=0.001))
    batch = _batch([cls(fast=f, slow=20) for f in (2, 4, 6)], RANGES, [None])
    grouped = run_batch(market, batch, settings)
    assert all(e is None for e in grouped.errors) and (grouped.metrics[:, 17] > 0).all()
    _assert_same_rows(grouped, _one_by_one(market, batch, settings))


def test_large_groups_are_cut_into_chunks_with_the_same_rows(market, monkeypatch):
    settings = RunSettings(CostModel(10_000, fees=0.001))
    batch = _batch(_rule_grid(), RANGES, [None])
    whole = run_batch(market, batch, settings)
    monkeypatch.setattr(batch_eval, "_SIGNAL_BYTES", 1)  # one job per compiled call
    _assert_same_rows(run_batch(market, batch, settings), whole)


def test_a_failing_signals_call_fails_its_job_alone(market):
    settings = RunSettings(CostModel(10_000, fees=0.001))
    batch = _batch([Fragile(fast=f, slow=20) for f in (2, 3, 4, 5, 6)], RANGES, [None])
    grouped = run_batch(market, batch, settings)
    failed = [i for i, e in enumerate(grouped.errors) if e is not None]
    assert [batch.strategies[i].fast for i in failed] == [4, 4]
    assert "ZeroDivisionError: fast == 4 breaks me" in grouped.errors[failed[0]]
    assert np.isnan(grouped.metrics[failed]).all()
    _assert_same_rows(grouped, _one_by_one(market, batch, settings))


def test_a_range_without_bars_of_a_symbol_fails_those_jobs_alone():
    data = load_ohlcv({"A": raybt.synthetic_ohlcv(start="2023-01-01", end="2023-03-01", freq="1D", seed=1)["SYN"],
                       "B": raybt.synthetic_ohlcv(start="2023-02-01", end="2023-03-01", freq="1D", seed=2)["SYN"]})
    early = raybt.DateRange("2023-01-01", "2023-01-20", name="early")
    batch = _batch([SmaCross(fast=2, slow=5)], [early], ["A", "B"])
    result = run_batch(data, batch, RunSettings(CostModel()))
    assert result.errors[0] is None and "DataError" in result.errors[1] and "selects no bars" in result.errors[1]


def test_the_hook_gives_the_rows_of_signals(market):
    settings = RunSettings(CostModel(10_000, fees=0.001))
    grid = [(f, s) for f in range(2, 12) for s in (20, 25, 40)]
    with_hook = _batch([SmaCross(fast=f, slow=s) for f, s in grid], RANGES, ["A"])
    without = _batch([NoHook(fast=f, slow=s) for f, s in grid], RANGES, ["A"])
    hooked = run_batch(market, with_hook, settings)
    assert all(e is None for e in hooked.errors)
    _assert_same_rows(hooked, run_batch(market, without, settings))
    _assert_same_rows(hooked, _one_by_one(market, with_hook, settings))


def test_the_hook_is_called_for_single_symbol_groups_only(market, monkeypatch):
    calls = []
    original = SmaCross.signals_many.__func__

    def counting(cls, data, params):
        calls.append(len(params))
        return original(cls, data, params)

    monkeypatch.setattr(SmaCross, "signals_many", classmethod(counting))
    settings = RunSettings(CostModel())
    run_batch(market, _batch([SmaCross(fast=f, slow=20) for f in (2, 3)], RANGES, [None]), settings)
    assert calls == []  # two symbols in one portfolio: signals() per set
    run_batch(market, _batch([SmaCross(fast=f, slow=20) for f in (2, 3)], RANGES, ["A"]), settings)
    assert calls == [2, 2]


class RaisingHook(SmaCross):
    @classmethod
    def signals_many(cls, data, params):
        raise ValueError("the hook cannot do fast == 4")


class ShapelessHook(SmaCross):
    @classmethod
    def signals_many(cls, data, params):
        return np.zeros((len(data), len(params) + 1), dtype=bool), np.zeros((len(data), len(params)), dtype=bool)


class DriftedHook(SmaCross):
    @classmethod
    def signals_many(cls, data, params):
        entries, exits = SmaCross.signals_many.__func__(cls, data, params)
        return exits, entries  # swapped: not what signals() computes


def test_a_raising_hook_falls_back_to_signals_per_set(market):
    settings = RunSettings(CostModel(10_000, fees=0.001))
    batch = _batch([RaisingHook(fast=f, slow=20) for f in (2, 4)], RANGES, ["B"])
    result = run_batch(market, batch, settings)
    assert all(e is None for e in result.errors)
    _assert_same_rows(result, _one_by_one(market, batch, settings))


@pytest.mark.parametrize("cls, message", [(ShapelessHook, "must be boolean of shape"),
                                          (DriftedHook, "differ from DriftedHook(fast=2, slow=20).signals()")])
def test_a_hook_with_other_signals_is_an_error_of_every_job(market, cls, message):
    batch = _batch([cls(fast=f, slow=20) for f in (2, 4)], RANGES[:1], ["A"])
    result = run_batch(market, batch, RunSettings(CostModel()))
    assert all(e is not None and "SignalError" in e and message in e for e in result.errors)
    assert np.isnan(result.metrics).all()


# ------------------------------------------------------------------------------------------------ a cheap driver

class Bare(raybt.Strategy):
    """A strategy without parameters."""

    def signals(self, data):
        close = data.arrays.close
        return close > close.mean(), close < close.mean()


def test_a_batch_travels_as_classes_and_parameter_columns():
    from ray import cloudpickle

    strategies = [SmaCross(fast=f, slow=40) if f % 3 else Rules(fast=f, direction="both") for f in range(2, 202)]
    strategies[5:5] = [Bare(), Bare()]
    batch = Batch(np.arange(len(strategies)), strategies, [RANGES[0]] * len(strategies), [None] * len(strategies))
    payload = cloudpickle.dumps(batch)
    back = cloudpickle.loads(payload)
    assert [type(s) for s in back.strategies] == [type(s) for s in strategies]
    assert back.strategies == strategies and back.date_ranges == batch.date_ranges
    assert payload.count(b"SmaCross") == 1 and payload.count(b"fast") <= 2  # each class and name once, not per job
    assert b"_rebuild" not in payload  # no pickled instances


def _sweep_batch(strategies, ranges, symbols) -> Batch:
    batch = _batch(strategies, ranges, symbols)
    keys = np.array([f"{i:024d}" for i in range(len(batch.jobs))], dtype="S24")
    return Batch(batch.jobs, batch.strategies, batch.date_ranges, batch.symbols, keys=keys,
                 strategy_ids=[s.id for s in batch.strategies])


def test_workers_build_the_result_rows(market):
    from raybt.checkpoint import schema_problem

    batch = _sweep_batch([Fragile(fast=f, slow=20) for f in (3, 4)], RANGES, ["A"])
    result = run_batch(market, batch, RunSettings(CostModel()), worker="w:1")
    rows = result.rows.to_pydict()
    assert schema_problem(result.rows.schema) is None
    assert result.rows.schema.names[:5] == ["key", "strategy_id", "strategy", "fast", "slow"]
    assert rows["key"] == [k.decode() for k in batch.keys] and rows["strategy_id"] == batch.strategy_ids
    assert rows["fast"] == [3, 3, 4, 4] and rows["parameters"][0] == '{"fast":3,"slow":20}'
    assert rows["symbol"] == ["A"] * 4 and rows["range"] == ["mid", "all", "mid", "all"]
    assert rows["start"][0] == pd.Timestamp("2023-01-10", tz="UTC") and rows["range_end"][1] is None
    assert np.array_equal(np.array(rows["sharpe"], dtype=float), result.metrics[:, 4], equal_nan=True)
    assert [e is None for e in rows["error"]] == [True, True, False, False] and rows["worker"] == ["w:1"] * 4
    assert result.without([2, 3]).rows.to_pydict()["key"] == rows["key"][:2]


class Tagged(raybt.Strategy):
    """A parameter ``p`` of another kind than Rules' fast, and an int/float union."""

    fast: str = "x"
    q: int | float = 1

    def signals(self, data):
        return Bare.signals(self, data)


def test_rows_of_several_batches_join_with_the_kinds_of_one_table(market):
    from raybt.result_rows import concat_rows

    settings = RunSettings(CostModel())
    parts = [run_batch(market, _sweep_batch(group, RANGES[:1], [None]), settings).rows
             for group in ([Rules(fast=3)], [Tagged(fast="y", q=2.5)], [Tagged(q=2)], [Bare()])]
    table = concat_rows(parts)
    assert table.column("fast").to_pylist() == ["3", "y", "x", None]  # int and str: text, as in one table
    assert table.column("q").to_pylist() == [None, 2.5, 2.0, None]  # int and float: float
    assert table.schema.names[:3] == ["key", "strategy_id", "strategy"] and table.schema.names[-1] == "worker"
    assert table.schema.names.index("q") < table.schema.names.index("parameters")


def test_a_sweep_computes_each_strategy_id_once(monkeypatch):
    import raybt.strategy

    counted = []
    original = raybt.strategy._sha256  # the id's hash (raybt.strategy.strategy_ids)

    def counting(payload):
        counted.append(payload)
        return original(payload)

    monkeypatch.setattr(raybt.strategy, "_sha256", counting)
    strategies = [SmaCross(fast=f, slow=30) for f in range(2, 12)]
    data = raybt.synthetic_ohlcv(start="2023-01-01", end="2023-04-01", freq="1D", seed=4)
    results = raybt.run_backtests(strategies, data, RANGES, show_progress=False)
    assert len(results.df) == 20 and len(counted) == len(set(counted)) == len(strategies)
    assert [s.id for s in strategies] and len(counted) == len(strategies)  # cached by the instances


def test_a_subclass_that_overrides_signals_does_not_use_the_inherited_hook():
    assert batch_eval.has_own_hook(SmaCross) and not batch_eval.has_own_hook(Fragile)
    assert not batch_eval.has_own_hook(NoHook) and not batch_eval.has_own_hook(Rules)
    assert batch_eval.has_own_hook(type("Again", (Fragile,), {"signals_many": SmaCross.signals_many}))


# ------------------------------------------------------------------------------------- the hook's calls

class Counting(SmaCross):
    """The demo hook, recording the number of sets and the index of every call's ``params``."""

    calls = []  # not annotated: not a parameter

    @classmethod
    def signals_many(cls, data, params):
        cls.calls.append((len(params), list(params.index)))
        return SmaCross.signals_many.__func__(cls, data, params)


class COrderedHook(SmaCross):
    """The demo hook's signals as C-ordered (bars, sets) arrays: each set's column is strided."""

    @classmethod
    def signals_many(cls, data, params):
        entries, exits = SmaCross.signals_many.__func__(cls, data, params)
        return np.ascontiguousarray(entries), np.ascontiguousarray(exits)


class ReadOnlyHook(SmaCross):
    """The demo hook's signals, made read-only."""

    @classmethod
    def signals_many(cls, data, params):
        entries, exits = SmaCross.signals_many.__func__(cls, data, params)
        entries.flags.writeable = exits.flags.writeable = False
        return entries, exits


HOOK_GRID = [(f, s) for f in range(2, 8) for s in (9, 20, 25, 40, 41)]


@pytest.fixture(scope="module")
def one_symbol():
    return load_ohlcv(raybt.synthetic_ohlcv(start="2023-01-01", end="2023-03-01", freq="1h", seed=8))


@pytest.mark.parametrize("cls", [Counting, COrderedHook, ReadOnlyHook])
@pytest.mark.parametrize("sets_per_call", [1, 7, 30])
def test_the_hook_called_on_chunks_gives_the_rows_of_signals(one_symbol, monkeypatch, cls, sets_per_call):
    from raybt.backtest import range_context

    settings = RunSettings(CostModel(10_000, fees=0.001))
    n_bars = len(range_context(one_symbol, RANGES[0], 0, None).view)
    monkeypatch.setattr(cls, "signals_many_cells", sets_per_call * n_bars + n_bars // 2)
    monkeypatch.setattr(Counting, "calls", [])
    hooked = run_batch(one_symbol, _batch([cls(fast=f, slow=s) for f, s in HOOK_GRID], RANGES[:1], [None]), settings)
    without = run_batch(one_symbol, _batch([NoHook(fast=f, slow=s) for f, s in HOOK_GRID], RANGES[:1], [None]),
                        settings)
    assert all(e is None for e in hooked.errors)
    _assert_same_rows(hooked, without)
    if cls is Counting:
        sizes = [min(sets_per_call, len(HOOK_GRID) - first) for first in range(0, len(HOOK_GRID), sets_per_call)]
        assert Counting.calls == [(size, list(range(size))) for size in sizes]


def test_a_hook_covering_the_chunk_hands_over_its_arrays(one_symbol, monkeypatch):
    from raybt.backtest import range_context

    ctx = range_context(one_symbol, RANGES[0], 0, None)
    strategies = [SmaCross(fast=f, slow=s) for f, s in HOOK_GRID]
    returned = []
    original = SmaCross.signals_many.__func__

    def keeping(cls, data, params):
        returned.append(original(cls, data, params))
        return returned[-1]

    monkeypatch.setattr(SmaCross, "signals_many", classmethod(keeping))
    ok, errors = np.zeros(len(strategies), dtype=bool), [None] * len(strategies)
    entries, exits = batch_eval._signals_from_hook(strategies, ctx, 1, ok, errors)
    assert ok.all() and len(returned) == 1
    assert entries.shape == exits.shape == (len(strategies), 1, len(ctx.view)) and entries.flags.c_contiguous
    assert np.shares_memory(entries, returned[0][0]) and np.shares_memory(exits, returned[0][1])  # no copy
    for j, strategy in enumerate(strategies):
        own_entries, own_exits = signal_arrays(strategy, ctx.view)
        assert np.array_equal(entries[j], own_entries) and np.array_equal(exits[j], own_exits)


@pytest.mark.parametrize("cells", [0, -5, 2.5, "many", None, True])
def test_a_bad_signals_many_cells_is_an_error_of_every_job(one_symbol, monkeypatch, cells):
    monkeypatch.setattr(Counting, "signals_many_cells", cells)
    result = run_batch(one_symbol, _batch([Counting(fast=f, slow=20) for f in (2, 3)], RANGES, [None]),
                       RunSettings(CostModel()))
    assert all("Counting.signals_many_cells must be a positive int" in e for e in result.errors)
    assert np.isnan(result.metrics).all()


class Kinds(raybt.Strategy):
    """Parameters of every kind a hook's ``params`` columns can take."""

    n: int = 1
    x: float = 0.5
    name: str = "a"
    maybe: float | None = None
    flag: bool = False
    mixed: int | float = 1
    anything: object = None

    def signals(self, data):
        return Bare.signals(self, data)


@pytest.mark.parametrize("strategies", [
    [SmaCross(fast=f, slow=s) for f, s in HOOK_GRID],
    [Kinds(n=i, x=i / 3, name="ab"[i % 2], maybe=None if i % 3 else 0.1, flag=bool(i % 2), mixed=i if i % 2 else 0.5,
           anything=[None, 2, "s"][i % 3]) for i in range(12)],
    [Kinds(n=2**63), Kinds(n=-1)],  # beyond int64
    [Kinds(n=2**64 + 1), Kinds(n=-1)],
    [Kinds(maybe=0.25), Kinds(maybe=1.5)],
    [Bare(), Bare(), Bare()],  # no parameters: three rows, no columns
], ids=["ints", "every kind", "uint64", "huge", "floats", "none"])
def test_the_hooks_params_are_what_pandas_infers(strategies):
    cls = type(strategies[0])
    expected = pd.DataFrame([s.params for s in strategies], columns=list(cls._param_types))
    pd.testing.assert_frame_equal(batch_eval._params_frame(cls, strategies), expected, check_index_type=True)


@pytest.mark.parametrize("n_bars", [0, 1, 511, 512, 513, 1100])
@pytest.mark.parametrize("layout", ["F", "C", "strided"])
def test_a_hooks_result_is_copied_set_by_set_whatever_its_layout(monkeypatch, n_bars, layout):
    monkeypatch.setattr(batch_eval, "_CACHED_CELLS", 0)  # small signals too are copied a block at a time
    signals = np.random.default_rng(n_bars).random((n_bars, 6)) < 0.5
    arranged = {"F": np.asfortranarray(signals), "C": np.ascontiguousarray(signals),
                "strided": np.ascontiguousarray(np.repeat(signals, 2, axis=1))[:, ::2]}[layout]
    into = ~signals.T.copy()
    batch_eval._copy_sets(arranged, into)
    assert np.array_equal(into, signals.T)
