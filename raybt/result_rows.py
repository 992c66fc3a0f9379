"""Result rows as Arrow record batches, built where the jobs ran; the driver only concatenates and writes them.

A worker knows everything a row says: the job's key and strategy id (computed once on the driver, when planning, and
sent with the batch), the strategy's class and parameters, the symbol and range, the bars simulated, the permuted
market of a permutation test's job, the metrics, the error and the timing. :func:`job_rows` turns one finished batch
into one :class:`pyarrow.RecordBatch` with the columns of :mod:`raybt.results` (``RESULT_COLUMNS`` of
:mod:`raybt.checkpoint` plus a column per parameter); :func:`concat_rows` joins the record batches of many tasks into
the table of one checkpoint part.

Parameter columns: one per parameter name, in the order of first appearance; null where a strategy has no such
parameter. A parameter whose values have different kinds (a name shared by strategy classes with different types,
``int | str`` annotations) is stored as text, within one record batch and across the batches of one part alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from raybt._keys import key_array
from raybt.data import DataError, DateRange, MarketData
from raybt.metrics import METRIC_NAMES
from raybt.permute import Permutation
from raybt.strategy import parameters_texts

if TYPE_CHECKING:
    from raybt.batch import Batch, BatchResult

_UTC_NS = pa.timestamp("ns", tz="UTC")
_LEADING = ("key", "strategy_id", "strategy")
_TRAILING = ("parameters", "symbol", "range", "range_start", "range_end", "start", "end", "permutation_seed",
             "permutation", *METRIC_NAMES, "error", "duration_s", "worker")


def job_rows(batch: Batch, result: BatchResult, market: MarketData) -> pa.RecordBatch:
    """The result rows of ``batch``'s jobs (``result``: their metrics, errors and timings), one per job in batch
    order. ``batch.keys`` and ``batch.strategy_ids`` must be set (a sweep's batches have them).

    Built column-wise, without Python per job: what depends on the strategy alone (class name, parameter columns,
    parameters JSON) is computed once per distinct strategy object, what depends on the range and symbol (range name
    and instants, first and last bar) once per distinct pair, and both are spread over the jobs with
    :meth:`pyarrow.Array.take`."""
    strategies, ranges, symbols = batch.strategies, batch.date_ranges, batch.symbols
    n = len(strategies)
    strategy_index, first = _first_seen(_identities(strategies))
    distinct = [strategies[i] for i in first]
    range_index, range_first = _first_seen(_identities(ranges))
    symbol_index, _ = _first_seen(_identities(symbols))
    pair_index, first = _first_seen(range_index * (int(symbol_index.max(initial=0)) + 1) + symbol_index)
    pairs = [(ranges[i], symbols[i]) for i in first]
    strategy_index, pair_index = pa.array(strategy_index), pa.array(pair_index)
    columns: dict[str, pa.Array] = {
        "key": key_array(batch.keys),
        "strategy_id": pa.array(batch.strategy_ids, type=pa.string()),
        "strategy": pa.array([type(s).__qualname__ for s in distinct], type=pa.string()).take(strategy_index),
    }
    # every instance has its class's parameters, in the class's order (Strategy.__init__ sets them so)
    for name in dict.fromkeys(name for cls in dict.fromkeys(map(type, distinct)) for name in cls._param_types):
        columns[name] = param_column([s._params.get(name) for s in distinct]).take(strategy_index)
    columns["parameters"] = pa.array(parameters_texts(distinct), type=pa.string()).take(strategy_index)
    spans = [bar_times(market, *pair) for pair in pairs]
    columns["symbol"] = pa.array([symbol for _, symbol in pairs], type=pa.string()).take(pair_index)
    columns["range"] = pa.array([r.name if r is not None else "all" for r, _ in pairs],
                                type=pa.string()).take(pair_index)
    columns["range_start"] = pa.array([_instant(r.start if r is not None else None) for r, _ in pairs],
                                      type=_UTC_NS).take(pair_index)
    columns["range_end"] = pa.array([_instant(r.end if r is not None else None) for r, _ in pairs],
                                    type=_UTC_NS).take(pair_index)
    columns["start"] = pa.array([span[0] for span in spans], type=_UTC_NS).take(pair_index)
    columns["end"] = pa.array([span[1] for span in spans], type=_UTC_NS).take(pair_index)
    columns["permutation_seed"], columns["permutation"] = _permutation_columns(batch.permutations, n)
    metrics = np.ascontiguousarray(result.metrics.T)  # one contiguous row per metric: each column without a copy
    for position, name in enumerate(METRIC_NAMES):
        columns[name] = pa.array(metrics[position])
    columns["error"] = pa.array(result.errors, type=pa.string())
    columns["duration_s"] = pa.array(result.durations, type=pa.float64())
    columns["worker"] = pa.repeat(pa.scalar(result.worker, type=pa.string()), n)
    return pa.RecordBatch.from_pydict(columns)


def _permutation_columns(permutations: list[Permutation | None] | None, n: int) -> tuple[pa.Array, pa.Array]:
    """The ``permutation_seed`` and ``permutation`` columns: each job's ``(seed, i)``, null on the real data (every
    job of a sweep). A permutation test's jobs on one permuted market share its tuple, so each distinct one is read
    once."""
    if permutations is None:
        return pa.nulls(n, pa.int64()), pa.nulls(n, pa.int64())
    index, first = _first_seen(_identities(permutations))
    distinct = [permutations[i] for i in first]
    index = pa.array(index)
    return tuple(pa.array([None if p is None else int(p[field]) for p in distinct], type=pa.int64()).take(index)
                 for field in (0, 1))


def _identities(objects: list) -> np.ndarray:
    """The identities of ``objects`` (equal for the same object; a batch's jobs of one strategy, range or symbol
    share its object, in the driver and, by pickle's memo, in a worker)."""
    return np.fromiter(map(id, objects), dtype=np.uint64, count=len(objects))


def _first_seen(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For integer ``codes``: each one's position among the distinct codes in order of first appearance, and where
    each distinct code first appears."""
    _, first, inverse = np.unique(codes, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[inverse.reshape(-1)], first[order]


def concat_rows(parts: Sequence[pa.RecordBatch]) -> pa.Table:
    """One table of the rows of ``parts`` (record batches of :func:`job_rows`), columns in the documented order:
    a parameter missing from some parts is null there; one whose kinds differ between parts is stored as text."""
    parts = [pa.Table.from_batches([part]) for part in parts]
    params: dict[str, list[pa.DataType]] = {}
    for part in parts:
        for field in part.schema:
            if field.name not in _LEADING and field.name not in _TRAILING:
                params.setdefault(field.name, []).append(field.type)
    textual = [name for name, kinds in params.items() if not _promotable(kinds)]
    if textual:
        parts = [_as_text(part, textual) for part in parts]
    table = pa.concat_tables(parts, promote_options="permissive")
    return table.select([*_LEADING, *params, *_TRAILING])


def _promotable(kinds: list[pa.DataType]) -> bool:
    """Whether columns of these types join without turning values into text: one type, null and one other, or
    integers and floats (ints become floats, as they do within one Arrow array)."""
    kinds = {kind for kind in kinds if not pa.types.is_null(kind)}
    return len(kinds) <= 1 or all(pa.types.is_integer(k) or pa.types.is_floating(k) for k in kinds)


def _as_text(part: pa.Table, names: list[str]) -> pa.Table:
    for name in names:
        if name in part.column_names:
            values = part.column(name).to_pylist()
            part = part.set_column(part.schema.get_field_index(name), name,
                                   pa.array([None if v is None else str(v) for v in values], type=pa.string()))
    return part


def param_column(values: list) -> pa.Array:
    """A parameter's values as one Arrow column; values of mixed kinds (a name shared by different strategy classes
    with different types) are stored as text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def bar_times(market: MarketData, date_range: DateRange | None, symbol: str | None) -> tuple[int | None, int | None]:
    """UTC nanoseconds of the first and last simulated bar; None for a symbol without a bar in the range."""
    data = market if symbol is None else market.symbol_data(symbol)
    try:
        _, start, end = data.bounds(date_range)
    except DataError:
        return None, None
    return int(data.times_ns[start]), int(data.times_ns[end - 1])


def _instant(ts: pd.Timestamp | None) -> int | None:
    return None if ts is None else int(ts.as_unit("ns").value)
