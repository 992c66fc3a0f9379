"""Rows on permuted markets among result rows, and the rule of the entry points that pick, rank or test strategies.

A result row ran on the real data when its ``permutation_seed`` and ``permutation`` are both null (every sweep's
row, and a permutation test's rows on the real data); else on the permuted market ``(permutation_seed,
permutation)`` of a :func:`raybt.stats.permutation_test` (see :mod:`raybt.permute`). A row on a permuted market is
not another candidate or another trial of the real data, so the entry points that pick, rank or test strategies
(:meth:`Results.best <raybt.results.Results.best>`, ``rank``, ``report``, the ``plot_*`` methods,
:func:`raybt.verdict.verdict`, the ``raybt results`` top list) never mix markets. :func:`rows_of_one_market` is
their rule:

* rows all on one market — every sweep's rows; rows read with a filter on one permuted market — are used as they
  are, without a word (so an ordinary sweep behaves exactly as before the permutation columns existed);
* rows on the real data and on permuted markets (``raybt.load_results`` of a permutation test's directory): the
  real data's rows are used and the others left out, with a :class:`PermutedRowsWarning` naming how many rows of
  which seed(s);
* rows on several permuted markets and none on the real data: a ``ValueError`` naming the columns and how to pick
  one market.

Why the real data's rows and a warning rather than an error: in a permutation test's directory "the best
strategy" or "is this row real?" can only be asked of the real data — the permuted markets are the null
hypothesis, already summed up by the test's p-value — so that is what such a call answers; the warning says what
was set aside, and :meth:`Results.summary <raybt.results.Results.summary>` shows every market, one line per
strategy and market. Rows a user names explicitly (a verdict's row or ``candidates=``) are not left out but refused
when they ran on a permuted market.
"""

from __future__ import annotations

import warnings

import pandas as pd

PERMUTATION_COLUMNS = ("permutation_seed", "permutation")
"""The columns naming the permuted market a row ran on (both null: the real data)."""

_REAL_ROWS_ONLY = 'filter=pyarrow.compute.field("permutation").is_null()'


class PermutedRowsWarning(UserWarning):
    """Rows on permuted markets were left out: the call used the rows on the real data alone."""


def permutation_columns(frame: pd.DataFrame) -> list[str]:
    """The permutation columns, when some row of ``frame`` ran on a permuted market (a permutation test's rows);
    else none (a sweep's rows, all on the real data)."""
    present = [c for c in PERMUTATION_COLUMNS if c in frame.columns]
    return present if on_permuted_market(frame).any() else []


def on_permuted_market(frame: pd.DataFrame) -> pd.Series:
    """Per row of ``frame``: True when it ran on a permuted market (either permutation column set; a frame without
    them holds rows on the real data)."""
    present = [c for c in PERMUTATION_COLUMNS if c in frame.columns]
    if not present:
        return pd.Series(False, index=frame.index)
    return frame[present].notna().any(axis=1)


def rows_of_one_market(frame: pd.DataFrame, caller: str, *, stacklevel: int = 2) -> pd.DataFrame:
    """The rows of ``frame`` that ``caller`` (its name, for the messages) may pick, rank or test together, by the
    rule of the module docstring: ``frame`` itself when its rows ran on one market; its real data's rows, with a
    :class:`PermutedRowsWarning` (attributed ``stacklevel`` frames up), when it also holds rows on permuted markets;
    a ``ValueError`` when it holds rows on several permuted markets and none on the real data."""
    permuted = on_permuted_market(frame)
    if not permuted.any():
        return frame
    if permuted.all():
        markets = _markets(frame)
        if len(markets) == 1:
            return frame
        raise ValueError(f"{caller}: these {len(frame):,} rows ran on {len(markets):,} permuted markets of a "
                         f"permutation test ({_by_seed(frame)}) and none on the real data; comparing them would mix "
                         f"markets. Pick one market by its columns permutation_seed and permutation, e.g. "
                         f"raybt.load_results(directory, filter=[('permutation_seed', '==', {markets[0][0]}), "
                         f"('permutation', '==', {markets[0][1]})]), or read the real data's rows "
                         f"({_REAL_ROWS_ONLY})")
    return real_data_rows(frame, caller, stacklevel=stacklevel + 1)


def real_data_rows(frame: pd.DataFrame, caller: str, *, stacklevel: int = 2) -> pd.DataFrame:
    """The rows of ``frame`` on the real data; when others are left out, a :class:`PermutedRowsWarning` says how
    many, of which seed(s), and how to read the real data's rows alone."""
    permuted = on_permuted_market(frame)
    if not permuted.any():
        return frame
    left_out = frame[permuted]
    warnings.warn(f"{caller}: left out {len(left_out):,} rows on permuted markets ({_by_seed(left_out)}) of a "
                  f"permutation test; used the {int((~permuted).sum()):,} rows on the real data alone (rows on "
                  f"permuted markets are neither candidates nor trials on the real data). results.summary() shows "
                  f"every market; raybt.load_results(directory, {_REAL_ROWS_ONLY}) reads the real data's rows "
                  f"alone", PermutedRowsWarning, stacklevel=stacklevel + 1)
    return frame[~permuted]


def _markets(frame: pd.DataFrame) -> list[tuple]:
    """The distinct ``(seed, i)`` of the rows (a missing column counts as null)."""
    columns = frame.reindex(columns=list(PERMUTATION_COLUMNS))
    return list(columns.drop_duplicates().itertuples(index=False, name=None))


def _by_seed(frame: pd.DataFrame) -> str:
    """``seed 5: 3 markets, 6 rows; seed 7: ...`` for rows on permuted markets."""
    columns = frame.reindex(columns=list(PERMUTATION_COLUMNS))
    parts = []
    for seed, rows in columns.groupby("permutation_seed", dropna=False, sort=True):
        n_markets = rows["permutation"].nunique(dropna=False)
        parts.append(f"seed {'unknown' if pd.isna(seed) else seed}: {n_markets:,} market{'s' * (n_markets != 1)}, "
                     f"{len(rows):,} row{'s' * (len(rows) != 1)}")
    return "; ".join(parts)
