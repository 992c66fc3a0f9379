"""The driver's fast builders equal the straightforward ones they replace: parameters JSON (json.dumps), strategy ids
and job keys (their formulas written out here), result rows (built job by job here), key sets (numpy's set
functions); batches pickle each distinct strategy once; parts a store wrote are not read back to find lost rows."""

from __future__ import annotations

import enum
import hashlib
import json
import pickle
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import raybt
from raybt import _keys
from raybt.batch import Batch, BatchResult
from raybt.checkpoint import CheckpointStore
from raybt.code_digest import class_digest
from raybt.data import load_ohlcv
from raybt.engine import CostModel
from raybt.metrics import METRIC_NAMES
from raybt.plan import RunSettings, plan_jobs
from raybt.result_rows import bar_times, job_rows, param_column
from raybt.strategy import parameters_texts, strategy_ids


class Any_(raybt.Strategy):
    """A parameter of every kind, and one that takes several."""

    i: int = 0
    x: float = 0.0
    s: str = ""
    b: bool = False
    o: int | str | float | None = None

    def signals(self, data):
        raise NotImplementedError


class Unicode(raybt.Strategy):
    """A parameter whose name json escapes, sorted among plain ones."""

    zeta: int = 1
    αλφα: str = "é"
    a: float = 1.5

    def signals(self, data):
        raise NotImplementedError


class Bare(raybt.Strategy):
    def signals(self, data):
        raise NotImplementedError


class Level(enum.IntEnum):
    LOW = 1


def _json(strategy: raybt.Strategy) -> str:
    return json.dumps(strategy._params, sort_keys=True, separators=(",", ":"))


EDGE_INTS = [0, -1, 7, -(2**63), 2**63, 2**70, -(10**30), True, False, Level.LOW]
EDGE_FLOATS = [0.0, -0.0, 0.1, 1e-7, 1e16, 1e22, -2.5e-308, 5e-324, 1.7976931348623157e308, 1 / 3, float("nan"),
               float("inf"), float("-inf"), 123456789.123]
EDGE_STRS = ["", "plain", 'quo"te', "back\\slash", "new\nline\ttab\x00\x1f", "é", "中文", "emoji 😀", "\u2028",
             "%s %d"]


def test_parameters_texts_are_json_dumps_on_edge_values():
    strategies = ([Any_(i=v) for v in EDGE_INTS if not isinstance(v, bool)] + [Any_(b=v) for v in (True, False)]
                  + [Any_(x=v) for v in EDGE_FLOATS] + [Any_(s=v) for v in EDGE_STRS]
                  + [Any_(o=v) for v in [None, 3, "3", 3.0, float("nan"), -0.0, 2**70, "ü"]]
                  + [Unicode(), Unicode(zeta=-3, αλφα='"', a=float("inf")), Bare(), Any_(i=Level.LOW)])
    texts = parameters_texts(strategies)
    assert texts == [_json(s) for s in strategies]
    assert all(json.loads(t) == s._params for t, s in zip(texts, strategies) if "NaN" not in t)
    assert parameters_texts(strategies[:1]) == texts[:1] and parameters_texts([]) == []


@pytest.mark.parametrize("name, values", [("i", EDGE_INTS[:7]), ("x", EDGE_FLOATS), ("s", EDGE_STRS),
                                          ("b", [True, False]), ("o", [None, None]), ("o", [None, 1, "1", 1.0]),
                                          ("i", EDGE_INTS[-1:] * 2)])
def test_a_column_of_one_kind_or_of_several_is_json_dumps(name, values):
    strategies = [Any_(**{name: v}) for v in values]
    assert parameters_texts(strategies) == [_json(s) for s in strategies]


def test_strategy_ids_follow_their_formula_and_are_cached():
    strategies = [Any_(i=v) for v in range(1, 7)] + [Unicode(a=v) for v in EDGE_FLOATS] + [Bare(), Any_()]
    expected = [hashlib.sha256(f"{class_digest(type(s))}\n{_json(s)}".encode()).hexdigest()[:16]
                for s in strategies]
    assert strategy_ids(strategies) == expected
    assert [s.id for s in strategies] == expected  # cached by each instance ...
    fresh = [type(s)(**s.params) for s in strategies]
    assert [s.id for s in fresh] == expected  # ... and the same computed one by one
    assert len(set(expected)) == len(expected)


def test_job_keys_follow_their_formula():
    market = load_ohlcv(raybt.synthetic_ohlcv(symbols=["A", "Ä b"], start="2023-01-01", end="2023-02-01",
                                              freq="1D", seed=1))
    settings = RunSettings(CostModel(fees=0.001))
    ranges = [raybt.DateRange("2023-01-03", "2023-01-20", name="x"), None, raybt.DateRange(None, "2023-01-10")]
    strategies = [Any_(i=i) for i in range(4)] + [Any_(i=1)]  # a duplicate: planned once
    for per_symbol in (False, True):
        plan = plan_jobs(strategies, ranges, market, settings, per_symbol=per_symbol, permutations=[None, (7, 1)])
        base = f"{market.fingerprint}|{settings.fingerprint()}|"
        real = []
        for symbol in plan.symbols:
            for s in strategies[:4]:
                for r in ranges:
                    text = f"{base}{s.id}|{f'{r.key}|{r.name}' if r is not None else 'all'}"
                    text += "" if symbol is None else f"|symbol={symbol}"
                    real.append(hashlib.blake2b(text.encode(), digest_size=12).hexdigest().encode())
        permuted = [hashlib.blake2b(k + b"|permutation=7/1", digest_size=12).hexdigest().encode() for k in real]
        assert plan.keys.dtype == np.dtype("S24") and plan.keys.tolist() == real + permuted
        assert plan.strategy_ids == tuple(s.id for s in strategies[:4])


# ----------------------------------------------------------------------------------------------- result rows

def _rows_one_by_one(batch: Batch, result: BatchResult, market) -> pa.RecordBatch:
    """The result rows built job by job, straightforwardly (what job_rows did before it was made column-wise)."""
    def instant(ts):
        return None if ts is None else int(ts.as_unit("ns").value)

    strategies, ranges, symbols = batch.strategies, batch.date_ranges, batch.symbols
    spans = [bar_times(market, r, sym) for r, sym in zip(ranges, symbols)]
    utc = pa.timestamp("ns", tz="UTC")
    columns = {"key": pa.array([k.decode() for k in batch.keys], type=pa.string()),
               "strategy_id": pa.array(batch.strategy_ids, type=pa.string()),
               "strategy": pa.array([type(s).__qualname__ for s in strategies], type=pa.string())}
    for name in dict.fromkeys(name for s in strategies for name in s._params):
        columns[name] = param_column([s._params.get(name) for s in strategies])
    columns["parameters"] = pa.array([_json(s) for s in strategies], type=pa.string())
    columns["symbol"] = pa.array(symbols, type=pa.string())
    columns["range"] = pa.array([r.name if r is not None else "all" for r in ranges], type=pa.string())
    columns["range_start"] = pa.array([instant(r.start if r is not None else None) for r in ranges], type=utc)
    columns["range_end"] = pa.array([instant(r.end if r is not None else None) for r in ranges], type=utc)
    columns["start"] = pa.array([span[0] for span in spans], type=utc)
    columns["end"] = pa.array([span[1] for span in spans], type=utc)
    permutations = batch.permutations or [None] * len(strategies)
    columns["permutation_seed"] = pa.array([p and p[0] for p in permutations], type=pa.int64())
    columns["permutation"] = pa.array([p and p[1] for p in permutations], type=pa.int64())
    for position, name in enumerate(METRIC_NAMES):
        columns[name] = pa.array(result.metrics[:, position])
    columns["error"] = pa.array(result.errors, type=pa.string())
    columns["duration_s"] = pa.array(result.durations, type=pa.float64())
    columns["worker"] = pa.array([result.worker] * len(result.jobs), type=pa.string())
    return pa.RecordBatch.from_pydict(columns)


def test_result_rows_equal_rows_built_job_by_job():
    market = load_ohlcv(raybt.synthetic_ohlcv(symbols=["A", "B"], start="2023-01-01", end="2023-02-01",
                                              freq="1h", seed=2))
    ranges = [raybt.DateRange("2023-01-05", "2023-01-20", name="mid"), None,
              raybt.DateRange("2023-03-01", "2023-04-01", name="after")]  # B alone has no bar there: null spans
    shared = [Any_(i=1, o="x"), Unicode(), Any_(x=float("nan"), o=2)]
    jobs = [(s, r, sym) for sym in ("A", None) for s in shared for r in ranges]
    jobs += [(Any_(i=1, o="x"), ranges[0], "B"), (Bare(), None, None), (Any_(o=2.5), ranges[1], "B")]  # own copies
    n = len(jobs)
    rng = np.random.default_rng(0)
    batch = Batch(np.arange(n), [j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs],
                  keys=np.array([f"{i:024x}".encode() for i in rng.integers(0, 2**62, n)], dtype="S24"),
                  strategy_ids=[s.id for s, _, _ in jobs])
    metrics = rng.normal(size=(n, len(METRIC_NAMES)))
    metrics[3] = np.nan
    result = BatchResult(batch.jobs, metrics, [None if i % 4 else f"error {i}" for i in range(n)],
                         rng.random(n), "host:1")
    shared = (3, 1)  # a permutation test's batch: the real data and permuted markets, jobs of one sharing its tuple
    permuted = replace(batch, permutations=[None if j % 3 == 0 else shared if j % 3 == 1 else (3, j) for j in range(n)])
    for each in (batch, permuted):
        rows = job_rows(each, result, market)
        expected = _rows_one_by_one(each, result, market)
        assert rows.schema == expected.schema
        for name in expected.schema.names:
            assert rows.column(name).to_pylist() == expected.column(name).to_pylist() or \
                np.array_equal(rows.column(name).to_numpy(zero_copy_only=False),
                               expected.column(name).to_numpy(zero_copy_only=False), equal_nan=True), name
        assert rows.column("o").type == pa.string()  # "x", 2 and 2.5: text, as in one column built job by job


def test_keys_between_numpy_and_arrow():
    keys = np.array([b"%024x" % i for i in (0, 5, 2**90)], dtype="S24")
    array = _keys.key_array(keys)
    array.validate(full=True)
    assert array.to_pylist() == [k.decode() for k in keys]
    assert _keys.key_bytes(pa.chunked_array([array[:1], array[1:]])).tolist() == keys.tolist()
    short = np.array([b"abc", b"d" * 24], dtype="S24")  # not a job key: through Python strings, exactly
    assert _keys.key_array(short).to_pylist() == ["abc", "d" * 24]
    assert _keys.key_array(np.array([], dtype="S24")).to_pylist() == []
    assert _keys.key_bytes(pa.array(["abc", "d" * 24])).tolist() == [b"abc", b"d" * 24]


def test_key_sets_equal_numpys_set_functions():
    rng = np.random.default_rng(1)
    stored = np.array([b"%024x" % v for v in rng.integers(0, 50, 80)], dtype="S24")
    wanted = np.array([b"%024x" % v for v in rng.integers(0, 100, 60)], dtype="S24")
    done = _keys.key_set(stored)
    assert done.tolist() == np.unique(stored).tolist()
    assert np.array_equal(_keys.contains(done, wanted), np.isin(wanted, stored))
    assert not _keys.contains(_keys.key_set(stored[:0]), wanted).any()
    failed = np.zeros(len(stored), dtype=bool)
    failed[::3] = True
    newest = _keys.newest_done([(stored[:40], failed[:40]), (stored[40:], failed[40:])], rerun_errors=True)
    last_failed = {}
    for key, fail in zip(stored, failed):
        last_failed[key] = fail
    assert newest.tolist() == sorted(k for k, fail in last_failed.items() if not fail)


# ----------------------------------------------------------------------------------------------- batches, parts

def test_a_batch_pickles_each_distinct_strategy_once(monkeypatch):
    strategies = [Any_(i=i) for i in range(3)]
    jobs = [s for s in strategies for _ in range(4)] + [Any_(i=0)]  # the last: equal, but an object of its own
    batch = Batch(np.arange(len(jobs)), jobs, [None] * len(jobs), [None] * len(jobs))
    payload = pickle.dumps(batch)
    built = []
    original = Any_.__init__

    def counting(self, **params):
        built.append(params)
        original(self, **params)

    monkeypatch.setattr(Any_, "__init__", counting)
    back = pickle.loads(payload)
    assert len(built) == 4 and back.strategies == jobs
    assert all(back.strategies[4 * k + j] is back.strategies[4 * k] for k in range(3) for j in range(4))
    assert back.strategies[-1] is not back.strategies[0]


def _sweep(ck, strategies):
    data = raybt.synthetic_ohlcv(start="2023-01-01", end="2023-03-01", freq="1D", seed=5)
    return raybt.run_backtests(strategies, data, [raybt.DateRange("2023-01-01", "2023-02-01", name="jan"), None],
                               checkpoint_dir=ck, checkpoint_batch_size=4, batch_size=2, show_progress=False)


def test_the_lost_rows_check_reads_no_part_the_sweep_wrote(tmp_path, monkeypatch):
    from raybt.demo import SmaCross

    read = []
    original = CheckpointStore._read_part
    monkeypatch.setattr(CheckpointStore, "_read_part", lambda self, path: read.append(path) or original(self, path))
    strategies = [SmaCross(fast=f, slow=20) for f in range(2, 8)]
    results = _sweep(tmp_path / "ck", strategies)
    assert results.n_computed == 12 and read == []  # three parts written, none read back
    again = _sweep(tmp_path / "ck", strategies + [SmaCross(fast=9, slow=20)])
    assert again.n_computed == 2 and len(read) == 3  # the next sweep reads each old part once, its own part not


def test_parts_dictionary_encode_only_columns_whose_values_repeat(tmp_path):
    from raybt.demo import SmaCross

    results = _sweep(tmp_path / "ck", [SmaCross(fast=f, slow=20) for f in range(2, 4)])
    part = sorted((tmp_path / "ck" / "parts").glob("*.parquet"))[0]
    chunks = pq.read_metadata(part).row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    dictionary = {name for name, used in encodings.items() if any("DICTIONARY" in e for e in used)}
    assert {"range", "parameters", "strategy", "fast", "start", "worker"} <= dictionary
    assert not {"key", "strategy_id", "sharpe", "duration_s"} & dictionary
    assert pq.read_table(part).schema.field("range").type == pa.string()  # encodings do not change the schema
    pd.testing.assert_frame_equal(results.df, CheckpointStore(tmp_path / "ck").read(results._keys))


class Required(raybt.Strategy):
    """Parameters without defaults before and after one with a default, made with keywords in other orders."""

    a: int
    b: float = 1.0
    c: str

    def signals(self, data):
        raise NotImplementedError


class OwnInit(Required):
    def __init__(self, **params):
        super().__init__(**params)
        object.__setattr__(self, "derived", self.a * 2)


@pytest.mark.parametrize("cls", [Required, OwnInit])
def test_a_worker_rebuilds_the_strategies_cls_params_would_build(cls):
    strategies = [cls(c="x", a=1), cls(b=2.5, a=3, c="y"), cls(a=1, c="x")]
    back = pickle.loads(pickle.dumps(Batch(np.arange(3), strategies, [None] * 3, [None] * 3))).strategies
    expected = [cls(**{name: s._params[name] for name in cls._param_types}) for s in strategies]  # as unpickled
    assert [list(s._params.items()) for s in back] == [list(s._params.items()) for s in expected]
    assert [list(vars(s).items()) for s in back] == [list(vars(s).items()) for s in expected]
    assert [type(s) for s in back] == [cls] * 3 and [s.id for s in back] == [s.id for s in strategies]
    # the class's order, in the driver's instances and in the rebuilt ones alike
    assert [list(s._params) for s in back] == [list(s._params) for s in strategies] == [["a", "b", "c"]] * 3
    assert getattr(back[2], "derived", 2) == 2


def test_a_part_written_with_the_former_parquet_options_resumes(tmp_path):
    """Parts written before dictionary encoding was chosen per column (pyarrow's defaults: every column) are read as
    they were: a sweep over them computes nothing and returns the same rows."""
    from raybt.demo import SmaCross

    strategies = [SmaCross(fast=f, slow=20) for f in range(2, 5)]
    fresh = _sweep(tmp_path / "new", strategies)
    (tmp_path / "old" / "parts").mkdir(parents=True)
    for position, part in enumerate(sorted((tmp_path / "new" / "parts").glob("*.parquet"))):
        pq.write_table(pq.read_table(part), tmp_path / "old" / "parts" / f"part-{position:020d}-old.parquet",
                       write_page_checksum=True)
    resumed = _sweep(tmp_path / "old", strategies)
    assert resumed.n_computed == 0 and resumed.n_skipped == 6
    pd.testing.assert_frame_equal(resumed.df, fresh.df)


def test_a_batch_pickles_each_strategy_object_once_and_keeps_jobs_order_classes_and_sharing():
    ones = [Required(a=i, c="x") for i in range(3)]
    other = OwnInit(a=7, c="z")
    twin = Required(a=1, c="x")  # equal to ones[1] but another object: rebuilt apart
    strategies = [ones[2], other, ones[0], ones[2], twin, ones[1], other, ones[0]]
    back = pickle.loads(pickle.dumps(Batch(np.arange(8), strategies, [None] * 8, [None] * 8))).strategies
    assert [(type(s), s._params) for s in back] == [(type(s), s._params) for s in strategies]
    assert back[0] is back[3] and back[2] is back[7] and back[1] is back[6]  # jobs that shared an object
    assert len({id(s) for s in back}) == 5 and back[4] is not back[5]
    assert back[1].derived == 14  # a class with its own __init__ went through it
