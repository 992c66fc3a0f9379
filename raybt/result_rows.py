"""Result rows as Arrow record batches, built where the jobs ran; the driver only concatenates and writes them.

A worker knows everything a row says: the job's key and strategy id (computed once on the driver, when planning, and
sent with the batch), the strategy's class and parameters, the symbol and range, the bars simulated, the metrics,
the error and the timing. :func:`job_rows` turns one finished batch into one :class:`pyarrow.RecordBatch` with the
columns of :mod:`raybt.results` (``RESULT_COLUMNS`` of :mod:`raybt.checkpoint` plus a column per parameter);
:func:`concat_rows` joins the record batches of many tasks into the table of one checkpoint part.

Parameter columns: one per parameter name, in the order of first appearance; null where a strategy has no such
parameter. A parameter whose values have different kinds (a name shared by strategy classes with different types,
``int | str`` annotations) is stored as text, within one record batch and across the batches of one part alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from raybt.data import DataError, DateRange, MarketData
from raybt.metrics import METRIC_NAMES
from raybt.strategy import Strategy

if TYPE_CHECKING:
    from raybt.batch import Batch, BatchResult

_UTC_NS = pa.timestamp("ns", tz="UTC")
_LEADING = ("key", "strategy_id", "strategy")
_TRAILING = ("parameters", "symbol", "range", "range_start", "range_end", "start", "end", *METRIC_NAMES, "error",
             "duration_s", "worker")


def job_rows(batch: Batch, result: BatchResult, market: MarketData) -> pa.RecordBatch:
    """The result rows of ``batch``'s jobs (``result``: their metrics, errors and timings), one per job in batch
    order. ``batch.keys`` and ``batch.strategy_ids`` must be set (a sweep's batches have them)."""
    strategies, ranges, symbols = batch.strategies, batch.date_ranges, batch.symbols
    spans = {pair: bar_times(market, *pair) for pair in set(zip(ranges, symbols))}
    job_spans = [spans[pair] for pair in zip(ranges, symbols)]
    columns: dict[str, pa.Array] = {
        "key": pa.array(batch.keys.astype(str), type=pa.string()),
        "strategy_id": pa.array(batch.strategy_ids, type=pa.string()),
        "strategy": pa.array([type(s).__qualname__ for s in strategies], type=pa.string()),
    }
    for name in dict.fromkeys(name for s in strategies for name in s._params):
        columns[name] = param_column([s._params.get(name) for s in strategies])
    columns["parameters"] = pa.array([parameters_json(s) for s in strategies], type=pa.string())
    columns["symbol"] = pa.array(symbols, type=pa.string())
    columns["range"] = pa.array([r.name if r is not None else "all" for r in ranges], type=pa.string())
    columns["range_start"] = pa.array([_instant(r.start if r is not None else None) for r in ranges], type=_UTC_NS)
    columns["range_end"] = pa.array([_instant(r.end if r is not None else None) for r in ranges], type=_UTC_NS)
    columns["start"] = pa.array([span[0] for span in job_spans], type=_UTC_NS)
    columns["end"] = pa.array([span[1] for span in job_spans], type=_UTC_NS)
    for position, name in enumerate(METRIC_NAMES):
        columns[name] = pa.array(np.ascontiguousarray(result.metrics[:, position]))
    columns["error"] = pa.array(result.errors, type=pa.string())
    columns["duration_s"] = pa.array(result.durations, type=pa.float64())
    columns["worker"] = pa.array([result.worker] * len(result.jobs), type=pa.string())
    return pa.RecordBatch.from_pydict(columns)


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


def parameters_json(strategy: Strategy) -> str:
    """A strategy's parameters as canonical JSON text (keys sorted): bool, int, float, str and None keep their
    types through :func:`json.loads` (``5`` and ``5.0`` differ; NaN and infinities as Python's json writes them).

    >>> parameters_json(raybt.demo.SmaCross(fast=5, slow=20))
    '{"fast":5,"slow":20}'
    """
    return json.dumps(strategy._params, sort_keys=True, separators=(",", ":"))
