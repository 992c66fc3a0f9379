"""The schema of stored result rows: the columns every checkpoint part has, with their types, and the columns older
raybt did not write yet. :mod:`raybt.checkpoint` reads and writes only parts of this schema; :mod:`raybt.result_rows`
builds rows of it."""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from raybt.metrics import METRIC_NAMES

KEY_COLUMN = "key"
ERROR_COLUMN = "error"


def is_string_type(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _is_float64(t: pa.DataType) -> bool:
    return pa.types.is_float64(t)


def _is_utc_ns(t: pa.DataType) -> bool:
    return t == pa.timestamp("ns", tz="UTC")


def _is_int64(t: pa.DataType) -> bool:
    return pa.types.is_int64(t)


def _is_plain(t: pa.DataType) -> bool:
    return (pa.types.is_boolean(t) or pa.types.is_integer(t) or pa.types.is_floating(t) or is_string_type(t)
            or pa.types.is_timestamp(t) or pa.types.is_null(t))


RESULT_COLUMNS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    KEY_COLUMN: ("string", is_string_type),
    "strategy_id": ("string", is_string_type),
    "strategy": ("string", is_string_type),
    "parameters": ("string", is_string_type),
    "symbol": ("string", is_string_type),
    "range": ("string", is_string_type),
    "range_start": ("timestamp[ns, tz=UTC]", _is_utc_ns),
    "range_end": ("timestamp[ns, tz=UTC]", _is_utc_ns),
    "start": ("timestamp[ns, tz=UTC]", _is_utc_ns),
    "end": ("timestamp[ns, tz=UTC]", _is_utc_ns),
    "permutation_seed": ("int64", _is_int64),
    "permutation": ("int64", _is_int64),
    **{name: ("float64", _is_float64) for name in METRIC_NAMES},
    ERROR_COLUMN: ("string", is_string_type),
    "duration_s": ("float64", _is_float64),
    "worker": ("string", is_string_type),
}
"""The schema raybt writes: every part has these columns with these types (name → (type name, check)). Any other
column (parameters, and columns later versions add) must have a plain scalar type: bool, integer, floating,
string, timestamp or null (a column that is null in every row of a part). Binary, nested, dictionary, decimal and
extension types are never read."""

ADDED_COLUMNS: dict[str, pa.DataType] = {"permutation_seed": pa.int64(), "permutation": pa.int64()}
"""Result columns that parts written by older raybt lack (checked like the others when present): such a part reads
as if it had them, null in every row, at their place in :data:`RESULT_COLUMNS`. Older raybt wrote no permutation in
rows, so null is right for a sweep's rows; an older permutation test's permuted rows also read null, but their runs
are of another results version (``load_results`` says so) and none of their rows is reused or replayed. These
integers may be missing, so they read as pandas' nullable ``Int64`` (never as floats)."""


def schema_problem(schema: pa.Schema) -> str | None:
    """Why ``schema`` is not one raybt writes (see :data:`RESULT_COLUMNS`), or None if it is."""
    names = schema.names
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        return f"duplicate columns {duplicated}"
    missing = [n for n in RESULT_COLUMNS if n not in names and n not in ADDED_COLUMNS]
    if missing:
        return (f"missing columns {missing[:5]}{' …' if len(missing) > 5 else ''} (another results version or not "
                f"a raybt part)")
    for field in schema:
        if field.name in RESULT_COLUMNS:
            type_name, check = RESULT_COLUMNS[field.name]
            if not check(field.type):
                return f"column {field.name!r} has type {field.type}, not {type_name}"
        elif not _is_plain(field.type):
            return (f"column {field.name!r} has type {field.type} (raybt stores only bool, integer, floating, string, "
                    f"timestamp and null columns)")
    return None


def with_added_columns(table: pa.Table) -> pa.Table:
    """``table`` with the :data:`ADDED_COLUMNS` it lacks (a part of older raybt), null in every row."""
    for name, kind in ADDED_COLUMNS.items():
        if name not in table.column_names:
            table = table.add_column(_added_position(table.schema, name), name, pa.nulls(len(table), kind))
    return table


def with_added_fields(schema: pa.Schema) -> pa.Schema:
    """``schema`` with the :data:`ADDED_COLUMNS` it lacks."""
    for name, kind in ADDED_COLUMNS.items():
        if name not in schema.names:
            schema = schema.insert(_added_position(schema, name), pa.field(name, kind))
    return schema


def _added_position(schema: pa.Schema, name: str) -> int:
    """Where added column ``name`` goes: after the column before it in :data:`RESULT_COLUMNS`."""
    order = list(RESULT_COLUMNS)
    return schema.get_field_index(order[order.index(name) - 1]) + 1
