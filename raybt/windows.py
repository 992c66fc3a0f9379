"""Train/test windows for walk-forward analysis.

:func:`rolling` cuts ``[start, end)`` into folds, each a pair of :class:`~raybt.DateRange` named ``fold-<i>/train``
and ``fold-<i>/test``::

    rolling fold i:   train [start + i·step,  start + i·step + train)      test [train end + gap, + test)
    anchored fold i:  train [start,           start + i·step + train)      test [train end + gap, + test)

Conventions:

* **Durations** are fixed lengths — anything :class:`pandas.Timedelta` reads (``"365D"``, ``"90D"``, ``"12h"``) —
  or calendar lengths: ``"<n> months"`` / ``"<n> years"`` (also ``"1 month"``, ``"1 year"``) or a plain
  :class:`pandas.DateOffset` (``pd.DateOffset(months=3)``), which move by calendar months and keep the day of the
  month (Jan 31 + 1 month = Feb 28/29). Every boundary is computed from ``start`` in one addition
  (``start + i·step + train`` adds ``i + 1`` months at once for monthly lengths, never month after month), so
  calendar folds do not drift. Anchored offsets such as ``MonthBegin`` (pandas' ``"MS"``) roll a date to the next
  boundary instead of adding a length and are refused.
* ``step`` defaults to ``test``: consecutive test windows then tile the period without overlap. ``gap`` (default 0)
  leaves time between a fold's train end and its test start (an embargo: a train window's last trades cannot
  leak into the test window's first bars).
* Folds are produced while the test window fits: a fold whose test window would end after ``end`` is not made, so
  the time after the last fold's test end is unused. A call whose first fold does not fit is an error naming it.
* **Warmup.** A strategy's ``warmup`` (bars before a range start, used only to compute signals) is taken from the
  data before each window — for a test window, from the end of its train window or gap. Windows do not shrink
  for it. It needs bars before ``start`` for the first train window: with ``data`` and ``warmup`` given,
  :func:`rolling` checks that the data has that many bars before ``start`` (raybt would otherwise quietly start
  the first fold's signals with fewer bars), and that every window lies within the data.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pandas as pd

from raybt.data import DataError, DataLike, DateRange, MarketData, load_ohlcv

Duration = str | timedelta | pd.Timedelta | pd.DateOffset
_CALENDAR = re.compile(r"^\s*(\d+)\s*(month|months|year|years)\s*$", re.IGNORECASE)


def rolling(start: object, end: object, *, train: Duration, test: Duration, step: Duration | None = None,
            gap: Duration = "0D", anchored: bool = False, data: DataLike | MarketData | None = None,
            warmup: int = 0) -> list[tuple[DateRange, DateRange]]:
    """Walk-forward folds over ``[start, end)`` (UTC; naive times are UTC): a list of ``(train, test)`` date ranges
    named ``fold-0/train``, ``fold-0/test``, ``fold-1/train``, ... See the module docstring for the rules.

    ``anchored=False`` slides a train window of fixed length; ``anchored=True`` keeps every train window starting at
    ``start`` and growing by ``step`` per fold. With ``data`` each window must select bars of it and lie within it,
    and ``warmup`` bars (the largest warmup of the strategies you will run) must exist before ``start``.

    >>> folds = rolling("2022-01-01", "2023-01-01", train="180D", test="90D")
    >>> [(t.name, str(t.start.date()), str(s.end.date())) for t, s in folds]
    [('fold-0/train', '2022-01-01', '2022-09-28'), ('fold-1/train', '2022-04-01', '2022-12-27')]
    """
    start_ts = DateRange(start, None).start
    end_ts = DateRange(None, end).end
    if start_ts is None or end_ts is None or end_ts <= start_ts:
        raise ValueError(f"rolling: need start < end, got start={start!r}, end={end!r}")
    train_d, test_d = _duration(train, "train"), _duration(test, "test")
    step_d = test_d if step is None else _duration(step, "step")
    gap_d = _duration(gap, "gap", allow_zero=True)
    if not isinstance(anchored, bool):
        raise TypeError(f"rolling: anchored must be True or False, got {anchored!r}")
    folds: list[tuple[DateRange, DateRange]] = []
    while True:
        i = len(folds)
        offset = [step_d] * i
        train_start = start_ts if anchored else _shift(start_ts, offset)
        train_end = _shift(start_ts, offset + [train_d])
        test_start = _shift(start_ts, offset + [train_d, gap_d])
        test_end = _shift(start_ts, offset + [train_d, gap_d, test_d])
        if test_end > end_ts:
            break
        folds.append((DateRange(train_start, train_end, name=f"fold-{i}/train"),
                      DateRange(test_start, test_end, name=f"fold-{i}/test")))
    if not folds:
        raise ValueError(f"rolling: window fold-0 does not fit in {start_ts} .. {end_ts}: its test window would end "
                         f"at {test_end} (train {train!r} + gap {gap!r} + test {test!r})")
    if data is not None:
        _check_against_data(folds, data if isinstance(data, MarketData) else load_ohlcv(data), start_ts, warmup)
    return folds


def _duration(value: Duration, what: str, allow_zero: bool = False) -> pd.Timedelta | pd.DateOffset:
    """A positive (or, for ``gap``, non-negative) fixed or calendar length; see the module docstring."""
    if isinstance(value, str):
        calendar = _CALENDAR.match(value)
        if calendar:
            n, unit = int(calendar.group(1)), calendar.group(2).lower()
            value = pd.DateOffset(months=n) if unit.startswith("month") else pd.DateOffset(years=n)
        else:
            try:
                value = pd.Timedelta(value)
            except ValueError as exc:
                raise ValueError(f"rolling: {what}={value!r} is not a duration; use a pandas Timedelta string such "
                                 f"as '90D' or '12h', or '<n> months' / '<n> years'") from exc
    if isinstance(value, timedelta) and not isinstance(value, pd.Timedelta):
        value = pd.Timedelta(value)
    if isinstance(value, pd.Timedelta):
        if value < pd.Timedelta(0) or (value == pd.Timedelta(0) and not allow_zero):
            raise ValueError(f"rolling: {what} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
        return value
    if type(value) is pd.DateOffset:
        probe = pd.Timestamp("2000-01-01")
        if probe + value < probe or (probe + value == probe and not allow_zero):
            raise ValueError(f"rolling: {what} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
        return value
    raise TypeError(f"rolling: {what}={value!r}: expected a Timedelta string ('90D'), '<n> months', a "
                    f"datetime.timedelta or a plain pandas.DateOffset (anchored offsets like MonthBegin roll "
                    f"dates instead of adding a length)")


def _shift(start: pd.Timestamp, lengths: list[pd.Timedelta | pd.DateOffset]) -> pd.Timestamp:
    """``start`` plus the sum of ``lengths``, calendar parts first and added at once: two 1-month lengths from
    Jan 31 end on Mar 31 (adding them one by one would give Feb 28, then Mar 28)."""
    calendar: dict[str, int] = {}
    fixed = pd.Timedelta(0)
    for length in lengths:
        if isinstance(length, pd.Timedelta):
            fixed += length
        else:
            for unit, amount in length.kwds.items():
                calendar[unit] = calendar.get(unit, 0) + amount
    # an empty DateOffset() is one day, not zero: add the calendar part only when there is one
    return (start + pd.DateOffset(**calendar) if calendar else start) + fixed


def _check_against_data(folds: list[tuple[DateRange, DateRange]], market: MarketData, start: pd.Timestamp,
                        warmup: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"rolling: warmup must be a non-negative number of bars, got {warmup!r}")
    for pair in folds:
        for window in pair:
            try:
                market.bounds(window)
                problem = market.coverage_warning(window)
            except DataError as exc:
                problem = str(exc)
            if problem is not None:
                raise DataError(f"window {window.name}: {problem}")
    available = int(market.index.searchsorted(start, side="left"))
    if available < warmup:
        raise DataError(f"window fold-0/train starts at {start}, but the data has only {available} bar(s) before it "
                        f"for a warmup of {warmup}; start later or load earlier data")
