"""What a stored result row says about its job's inputs, and a run's settings as the manifest records them.

A row holds its strategy's parameters (the ``parameters`` JSON), its date range as the user defined it (``range``,
``range_start``, ``range_end``), its symbol and, for a permutation test's row, its permuted market
(``permutation_seed``, ``permutation``): with the strategy class, the data and the run's settings (the manifest's
``run_settings``, see :func:`settings_record`), enough to run it again (:meth:`raybt.results.Results.backtest`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any, NamedTuple

import pandas as pd

from raybt.data import DateRange
from raybt.engine import CostModel
from raybt.permute import Permutation
from raybt.plan import RunSettings


class RowInputs(NamedTuple):
    """What a result row says about its job's inputs: enough, with the strategy class, the data and the run's
    settings, to run it again (see :func:`row_inputs`)."""

    parameters: dict[str, Any]
    date_range: DateRange | None
    symbol: str | None
    permutation: Permutation | None = None
    """``(seed, i)`` of the permuted market a permutation test's row ran on (:mod:`raybt.permute`); None: the real
    data."""


def row_inputs(row: Mapping[str, Any]) -> RowInputs:
    """The parameters, date range (as the user defined it, name included), symbol and permuted market of a result
    row (a ``results.df`` row, a dict or a pandas Series), read from its ``parameters``, ``range``, ``range_start``,
    ``range_end``, ``symbol``, ``permutation_seed`` and ``permutation`` columns only (a row without the last two ran
    on the real data; one with only one of them is refused).

    >>> inputs = row_inputs(results.df.iloc[0])
    >>> raybt.run_backtest(SmaCross(**inputs.parameters), data, inputs.date_range, symbol=inputs.symbol)

    (on the real data; ``results.backtest(row, data)`` also replays a row whose ``inputs.permutation`` is set.)
    """
    name = row["range"]
    start, end = (_timestamp_or_none(row[column]) for column in ("range_start", "range_end"))
    date_range = None if name == "all" and start is None and end is None else DateRange(start, end, name=name)
    symbol = row["symbol"]
    return RowInputs(json.loads(row["parameters"]), date_range, None if _is_null(symbol) else str(symbol),
                     _permutation_of(row))


def _permutation_of(row: Mapping[str, Any]) -> Permutation | None:
    """A row's ``(permutation_seed, permutation)``; None when it has neither (the real data)."""
    seed, i = row.get("permutation_seed"), row.get("permutation")
    if _is_null(seed) and _is_null(i):
        return None
    if _is_null(seed) or _is_null(i):
        given, value, lacking = ("permutation_seed", seed, "permutation") if _is_null(i) else ("permutation", i,
                                                                                              "permutation_seed")
        raise ValueError(f"row {row.get('key', '')} has {given}={value} but no {lacking}: a permutation test's row "
                         f"has both, a row on the real data neither; it cannot be replayed")
    return int(seed), int(i)


def _timestamp_or_none(value: Any) -> pd.Timestamp | None:
    return None if _is_null(value) else pd.Timestamp(value)


def _is_null(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def settings_record(settings: RunSettings) -> dict[str, Any]:
    """A run's settings as JSON-able values (the manifest's ``run_settings``); :func:`settings_from_record` reads
    them back."""
    return {"costs": asdict(settings.costs), "periods_per_year": settings.periods_per_year,
            "risk_free_rate": settings.risk_free_rate}


def settings_from_record(record: Mapping[str, Any]) -> RunSettings:
    return RunSettings(CostModel(**record["costs"]), record["periods_per_year"], record["risk_free_rate"])
