"""Market data: load, validate, align, slice, fingerprint, and make synthetic OHLCV.

Everything a backtest reads about prices passes through :class:`MarketData`: a UTC time index and aligned float64
arrays of shape ``(n_symbols, n_bars)`` for open, high, low, close and volume. Input is validated once, on the
driver; the arrays are then read-only, so the same object can be put once into Ray's object store and read
zero-copy by every worker.

Alignment of several symbols (on the union of their timestamps):

* before a symbol's first bar every field is NaN: the symbol cannot be traded and is not valued;
* on a timestamp another symbol has but this one lacks (a gap or after its last bar), ``open/high/low`` are NaN
  (no trading on that bar), ``close`` carries the last close forward (so positions stay valued) and volume is 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import pandas as pd

from raybt._accel import frames as _frames

FIELDS = ("open", "high", "low", "close", "volume")
PRICE_FIELDS = FIELDS[:4]
_TIME_COLUMNS = ("timestamp", "date", "datetime", "time")
DEFAULT_SYMBOL = "asset"

DataLike = Union["MarketData", str, Path, pd.DataFrame, Mapping[str, pd.DataFrame]]


class DataError(ValueError):
    """Invalid market data; the message names the symbol, the column and the first offending timestamp."""


class DateRangeWarning(UserWarning):
    """A date range reaches past the data: it is shortened to the bars the data has (the message names them)."""


def _to_utc_timestamp(value: object, what: str) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{what}: cannot parse {value!r} as a timestamp") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True, init=False)
class DateRange:
    """A backtest period: ``start`` inclusive, ``end`` exclusive, both UTC (naive inputs are taken as UTC).

    ``None`` leaves that side open (the first / last bar of the data). ``name`` labels the range in results and
    defaults to ``"<start>..<end>"``.
    """

    start: pd.Timestamp | None
    end: pd.Timestamp | None
    name: str

    def __init__(self, start: object = None, end: object = None, name: str | None = None):
        start_ts = None if start is None else _to_utc_timestamp(start, "DateRange start")
        end_ts = None if end is None else _to_utc_timestamp(end, "DateRange end")
        if start_ts is not None and end_ts is not None and end_ts <= start_ts:
            raise ValueError(f"DateRange end {end_ts} must be after start {start_ts}")
        label = name if name is not None else f"{_label(start_ts)}..{_label(end_ts)}"
        object.__setattr__(self, "start", start_ts)
        object.__setattr__(self, "end", end_ts)
        object.__setattr__(self, "name", label)

    @property
    def key(self) -> str:
        """Stable text identifying the period (not the name): used in job keys."""
        return f"{_iso(self.start)}/{_iso(self.end)}"


def _label(ts: pd.Timestamp | None) -> str:
    if ts is None:
        return ""
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.isoformat()


def _iso(ts: pd.Timestamp | None) -> str:
    return "" if ts is None else ts.isoformat()


@dataclass(frozen=True, eq=False)
class MarketData:
    """Validated, aligned OHLCV for one or more symbols.

    ``index`` is a sorted, unique UTC ``DatetimeIndex``; each field is a read-only, C-contiguous float64 array of
    shape ``(n_symbols, n_bars)`` — symbol-major, so each symbol's series is contiguous for the kernel (pandas
    views of it are zero-copy transposes) — see the module docstring for NaN conventions. ``fingerprint`` is a SHA-256 content
    hash of the index, symbols and arrays: equal data gives the same fingerprint in every process.
    """

    index: pd.DatetimeIndex
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    def __post_init__(self) -> None:
        index = self.index
        if not isinstance(index, pd.DatetimeIndex) or str(index.tz) != "UTC":
            raise DataError("MarketData.index must be a UTC DatetimeIndex (load_ohlcv converts other input)")
        if not (index.is_monotonic_increasing and index.is_unique):
            raise DataError("MarketData.index must be sorted and free of duplicates (load_ohlcv sorts and checks)")
        object.__setattr__(self, "symbols", tuple(self.symbols))
        for field in FIELDS:
            # Always an owned copy: freezing a view (or the caller's own array) could not stop others writing.
            values = np.array(getattr(self, field), dtype=np.float64, order="C", copy=True)
            if values.shape != (len(self.symbols), len(self.index)):
                raise DataError(f"{field} has shape {values.shape}, expected (n_symbols, n_bars) = "
                                f"({len(self.symbols)}, {len(self.index)})")
            values.setflags(write=False)
            object.__setattr__(self, field, values)

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(self.times_ns.tobytes())
        digest.update("\x1f".join(self.symbols).encode())
        for field in FIELDS:
            digest.update(np.ascontiguousarray(getattr(self, field)).tobytes())
        return digest.hexdigest()[:32]

    @cached_property
    def times_ns(self) -> np.ndarray:
        """Bar timestamps as int64 nanoseconds since the epoch, UTC."""
        return self.index.as_unit("ns").asi8

    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f).nbytes for f in FIELDS) + self.times_ns.nbytes

    def __repr__(self) -> str:
        if not self.n_bars:
            return f"MarketData(symbols={list(self.symbols)}, empty)"
        return (f"MarketData(symbols={list(self.symbols)}, bars={self.n_bars}, "
                f"{self.index[0]} .. {self.index[-1]}, fingerprint={self.fingerprint[:12]})")

    def __getitem__(self, symbol: str) -> pd.DataFrame:
        """One symbol's OHLCV as a DataFrame (a copy), index = UTC timestamps."""
        col = self._column(symbol)
        return pd.DataFrame({f: getattr(self, f)[col] for f in FIELDS}, index=self.index)

    def _column(self, symbol: str) -> int:
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise KeyError(f"unknown symbol {symbol!r}; the data has {list(self.symbols)}") from None

    def to_frame(self) -> pd.DataFrame:
        """All symbols as one long DataFrame with a ``symbol`` column (rows where the symbol has no bar dropped)."""
        parts = [self[s].assign(symbol=s).dropna(subset=["open"]) for s in self.symbols]
        return pd.concat(parts).rename_axis("timestamp")

    def bounds(self, date_range: DateRange | None, warmup: int = 0) -> tuple[int, int, int]:
        """Bar positions ``(signal_start, start, end)`` of a range: bars ``start:end`` are simulated, and signals are
        computed from ``signal_start = max(0, start - warmup)``. Raises :class:`DataError` if no bar is selected."""
        start, end = 0, self.n_bars
        if date_range is not None:
            if date_range.start is not None:
                start = int(self.index.searchsorted(date_range.start, side="left"))
            if date_range.end is not None:
                end = int(self.index.searchsorted(date_range.end, side="left"))
        if end <= start:
            span = f"{self.index[0]} .. {self.index[-1]}" if self.n_bars else "no bars"
            name = date_range.name if date_range is not None else "all"
            raise DataError(f"date range {name!r} selects no bars (data spans {span})")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 bars, got {warmup}")
        return max(0, start - warmup), start, end

    def view(self, start: int, end: int) -> MarketView:
        """A :class:`MarketView` of bars ``start:end`` (zero-copy)."""
        return MarketView(self, start, end)

    def symbol_data(self, symbol: str) -> MarketData:
        """One symbol's own data as a single-symbol :class:`MarketData`: the bars it has (a NaN open marks a bar
        it lacks in the aligned data, see the module docstring), equal to loading that symbol's data alone. The
        unit of a per-symbol sweep. Kept per process for the last few symbols asked for.

        >>> data = synthetic_ohlcv(symbols=["A", "B"], start="2024-01-01", end="2024-01-03", freq="1D")
        >>> data.symbol_data("B").symbols
        ('B',)
        """
        key = (self.fingerprint, symbol)
        known = _SYMBOL_DATA.pop(key, None)
        if known is None:
            col = self._column(symbol)
            has_bar = ~np.isnan(self.open[col])
            known = MarketData(self.index[has_bar], (symbol,),
                               *(getattr(self, f)[col:col + 1, has_bar] for f in FIELDS))
            if len(_SYMBOL_DATA) >= _SYMBOL_DATA_KEPT:
                _SYMBOL_DATA.pop(next(iter(_SYMBOL_DATA)))
        _SYMBOL_DATA[key] = known  # most recently used last
        return known

    @cached_property
    def longest_gap_ns(self) -> int:
        """The longest time between two consecutive bars (0 with fewer than two bars), in nanoseconds."""
        return int(np.diff(self.times_ns).max()) if self.n_bars > 1 else 0

    def coverage_warning(self, date_range: DateRange | None) -> str | None:
        """Why ``date_range`` reaches past the data, naming the bars it covers; None if it does not.

        A range reaches past the data when the part of it before the first bar, or from the last bar to its
        (exclusive) end, is longer than the longest gap between two consecutive bars of the data: a range starting on
        a holiday before the first trading day does not, one asking for a year the data lacks does.
        """
        if date_range is None or not self.n_bars:
            return None
        first, last = self.index[0], self.index[-1]
        slack = pd.Timedelta(self.longest_gap_ns, unit="ns")
        before = date_range.start is not None and first - date_range.start > slack
        after = date_range.end is not None and date_range.end - last > slack
        if not (before or after):
            return None
        _, start, end = self.bounds(date_range)
        asked = f"{_label(date_range.start) or 'the first bar'} .. {_label(date_range.end) or 'the last bar'}"
        return (f"date range {date_range.name!r} ({asked}) reaches past the data ({first} .. {last}): it covers "
                f"the {end - start} bar(s) {self.index[start]} .. {self.index[end - 1]}")


_SYMBOL_DATA: dict[tuple[str, str], MarketData] = {}
_SYMBOL_DATA_KEPT = 4  # a per-symbol sweep runs its jobs symbol by symbol, so a few are enough


class OHLCVArrays(NamedTuple):
    """The fields of a :class:`MarketView` as read-only float64 numpy arrays, ``(bars, symbols)``, zero-copy."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray


class MarketView:
    """What ``Strategy.signals`` receives: bars ``start:end`` of a :class:`MarketData`.

    ``open``, ``high``, ``low``, ``close``, ``volume`` are DataFrames (UTC index, one column per symbol) built lazily,
    zero-copy and read-only, once per view; ``view["BTC/EUR"]`` is one symbol's OHLCV DataFrame (read-only, a copy
    of its rows made once per view). ``view.arrays`` holds the same fields as numpy arrays (``view.arrays.close``:
    bars × symbols, columns in ``view.symbols`` order): strategies written on them skip pandas objects (~1-3 µs each
    to build, check and read here, see :mod:`raybt._accel.frames`; ~10-15 µs per SMA-crossover backtest). Reusing one
    view for every strategy on a range lets indicator results be cached (see :mod:`raybt.indicators`), for arrays
    as for frames: the view hands out the very same objects every time (a frame a strategy edited is replaced by a
    fresh one for the next caller).
    """

    def __init__(self, market: MarketData, start: int, end: int):
        self.market, self.start, self.end = market, start, end
        # key: (frame, its raybt._accel.frames.stamp, the values it presents)
        self._frames: dict[object, tuple[pd.DataFrame, tuple[object, ...], np.ndarray]] = {}

    @property
    def symbols(self) -> tuple[str, ...]:
        return self.market.symbols

    @cached_property
    def index(self) -> pd.DatetimeIndex:
        return self.market.index[self.start:self.end]

    def __len__(self) -> int:
        return self.end - self.start

    def _field(self, field: str) -> pd.DataFrame:
        cached = self._frames.get(field)
        if cached is not None and _frames.unchanged(cached[0], cached[1]):
            return cached[0]
        return self._frame(field, getattr(self.market, field)[:, self.start:self.end].T, list(self.symbols))

    def _frame(self, key: object, values: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """A DataFrame of ``values`` (bars × columns, read-only) kept under ``key``: the fields and symbols' frames
        are built once and handed out again while unchanged (:func:`raybt._accel.frames.unchanged`, ~0.2 µs per access).
        A strategy may relabel a frame or add or replace a column (its values are read-only); the next caller then
        gets a fresh frame, so one strategy's edits never reach another."""
        frame = _frames.frame(values.T, self.index, pd.Index(columns))
        self._frames[key] = (frame, _frames.stamp(frame), values)
        return frame

    @cached_property
    def arrays(self) -> OHLCVArrays:
        """The fields as read-only float64 arrays, ``(bars, symbols)`` (views of the market's memory, no copy)."""
        return OHLCVArrays(*(getattr(self.market, field)[:, self.start:self.end].T for field in FIELDS))

    open = property(lambda self: self._field("open"), doc="Opens, DataFrame (bars × symbols).")
    high = property(lambda self: self._field("high"), doc="Highs, DataFrame (bars × symbols).")
    low = property(lambda self: self._field("low"), doc="Lows, DataFrame (bars × symbols).")
    close = property(lambda self: self._field("close"), doc="Closes, DataFrame (bars × symbols).")
    volume = property(lambda self: self._field("volume"), doc="Volumes, DataFrame (bars × symbols).")

    def __getitem__(self, symbol: str) -> pd.DataFrame:
        key = ("symbol", symbol)
        cached = self._frames.get(key)
        if cached is not None:
            if _frames.unchanged(cached[0], cached[1]):
                return cached[0]
            values = cached[2]
        else:  # one block (a copy of the symbol's five rows), so that the frame can be checked like the fields
            col = self.market._column(symbol)
            values = np.stack([getattr(self.market, f)[col, self.start:self.end] for f in FIELDS], axis=1)
            values.flags.writeable = False
        return self._frame(key, values, list(FIELDS))

    def __repr__(self) -> str:
        return f"MarketView(symbols={list(self.symbols)}, bars={len(self)})"


# --------------------------------------------------------------------------------------------------- loading

def load_ohlcv(source: DataLike, *, symbol: str | None = None) -> MarketData:
    """Load and validate OHLCV into :class:`MarketData`.

    ``source`` is a CSV or Parquet path, a single-symbol OHLCV DataFrame (named ``symbol``, default ``"asset"``), a
    dict symbol → DataFrame, a long DataFrame with a ``symbol`` column, or a ``MarketData`` (returned as is).
    Column names are case-insensitive; timestamps come from a DatetimeIndex or a ``timestamp``/``date``/``datetime``
    /``time`` column (numeric epochs are rejected: convert them with ``pd.to_datetime(unit=...)``); naive timestamps
    are taken as UTC, aware ones converted to UTC. Unsorted rows are sorted; ``volume`` is optional
    (missing → 0). Raises :class:`DataError` naming the symbol, column and first offending timestamp.
    """
    if isinstance(source, MarketData):
        return source
    if isinstance(source, (str, Path)):
        return load_ohlcv(_read_file(Path(source)), symbol=symbol)
    if isinstance(source, Mapping):
        if not source:
            raise DataError("no symbols: the dict of DataFrames is empty")
        frames = {str(sym): _normalise(df, str(sym)) for sym, df in source.items()}
    elif isinstance(source, pd.DataFrame):
        frames = _split_frame(source, symbol)
    else:
        raise TypeError(f"cannot load OHLCV from {type(source).__name__}: pass a path, a DataFrame, a dict "
                        f"symbol -> DataFrame or MarketData")
    return _align(frames)


def _read_file(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if suffix in (".csv", ".txt") or path.name.lower().endswith(".csv.gz"):
        return pd.read_csv(path)
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")


def _split_frame(df: pd.DataFrame, symbol: str | None) -> dict[str, pd.DataFrame]:
    lower = {str(c).lower(): c for c in df.columns}
    if "symbol" not in lower:
        name = symbol or DEFAULT_SYMBOL
        return {name: _normalise(df, name)}
    sym_col = lower["symbol"]
    if df[sym_col].isna().any():
        raise DataError("column 'symbol' has missing values")
    body = df.drop(columns=[sym_col])
    return {str(sym): _normalise(part, str(sym)) for sym, part in body.groupby(df[sym_col].astype(str), sort=True)}


def _normalise(df: pd.DataFrame, symbol: str) -> pd.DataFrame:
    """One symbol's frame → float64 OHLCV columns on a sorted, validated UTC index."""
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"symbol {symbol!r}: expected a DataFrame, got {type(df).__name__}")
    columns = {str(c).lower().strip(): c for c in df.columns}
    index = _time_index(df, columns, symbol)
    missing = [f for f in PRICE_FIELDS if f not in columns]
    if missing:
        raise DataError(f"symbol {symbol!r}: missing column(s) {missing} (have {list(df.columns)})")
    out = {}
    for field in FIELDS:
        if field not in columns:
            out[field] = np.zeros(len(df))
            continue
        raw = df[columns[field]]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        bad = np.isnan(values) & raw.notna().to_numpy()
        if bad.any():
            at = int(np.argmax(bad))
            raise DataError(f"symbol {symbol!r}: column {field!r} has a non-numeric value {raw.iloc[at]!r} "
                            f"at {index[at]}")
        out[field] = values
    frame = pd.DataFrame(out, index=index)
    if not frame.index.is_monotonic_increasing:
        frame = frame.sort_index(kind="stable")
    _validate(frame, symbol)
    return frame


def _time_index(df: pd.DataFrame, columns: dict[str, object], symbol: str) -> pd.DatetimeIndex:
    if isinstance(df.index, pd.DatetimeIndex):
        raw = df.index
    else:
        name = next((c for c in _TIME_COLUMNS if c in columns), None)
        if name is None:
            raise DataError(f"symbol {symbol!r}: no timestamps: use a DatetimeIndex or a column named one of "
                            f"{list(_TIME_COLUMNS)}")
        column = df[columns[name]]
        if pd.api.types.is_numeric_dtype(column):
            raise DataError(f"symbol {symbol!r}: column {name!r} holds numbers, not timestamps; convert epoch "
                            f"values with pd.to_datetime(..., unit='s' or 'ms') first")
        try:
            raw = pd.DatetimeIndex(pd.to_datetime(column, utc=False, format="mixed"))
        except (ValueError, TypeError) as exc:
            raise DataError(f"symbol {symbol!r}: column {name!r} has values that are not timestamps: {exc}") from exc
    if raw.tz is None:
        index = raw.tz_localize("UTC")
    else:
        index = raw.tz_convert("UTC")
    if index.hasnans:
        raise DataError(f"symbol {symbol!r}: missing timestamp at row {int(np.argmax(index.isna()))}")
    return index.as_unit("ns").rename("timestamp")


def _validate(frame: pd.DataFrame, symbol: str) -> None:
    if frame.empty:
        raise DataError(f"symbol {symbol!r}: no rows")
    index = frame.index
    dup = index.duplicated()
    if dup.any():
        raise DataError(f"symbol {symbol!r}: duplicate timestamp {index[int(np.argmax(dup))]}")
    for field in FIELDS:
        values = frame[field].to_numpy()
        _fail_first(~np.isfinite(values), symbol, field, index, "is NaN or infinite")
    for field in PRICE_FIELDS:
        _fail_first(frame[field].to_numpy() <= 0, symbol, field, index, "is not positive")
    _fail_first(frame["volume"].to_numpy() < 0, symbol, "volume", index, "is negative")
    o, h, l, c = (frame[f].to_numpy() for f in PRICE_FIELDS)
    _fail_first(h < np.maximum(o, c), symbol, "high", index, "is below max(open, close)")
    _fail_first(l > np.minimum(o, c), symbol, "low", index, "is above min(open, close)")


def _fail_first(mask: np.ndarray, symbol: str, field: str, index: pd.DatetimeIndex, problem: str) -> None:
    if mask.any():
        raise DataError(f"symbol {symbol!r}: column {field!r} {problem} at {index[int(np.argmax(mask))]}")


def _align(frames: dict[str, pd.DataFrame]) -> MarketData:
    symbols = tuple(frames)
    union = frames[symbols[0]].index
    for frame in list(frames.values())[1:]:
        union = union.union(frame.index)
    n, k = len(union), len(symbols)
    arrays = {f: np.full((k, n), np.nan) for f in FIELDS}
    for row, symbol in enumerate(symbols):
        frame = frames[symbol]
        pos = union.get_indexer(frame.index)
        for field in FIELDS:
            arrays[field][row, pos] = frame[field].to_numpy()
        # Gaps after the first bar: close carried forward (valuation), volume 0; open/high/low stay NaN.
        first = pos[0]
        arrays["close"][row, first:] = pd.Series(arrays["close"][row, first:]).ffill().to_numpy()
        volume = arrays["volume"][row, first:]
        volume[np.isnan(volume)] = 0.0
    return MarketData(index=union, symbols=symbols, **arrays)


# ------------------------------------------------------------------------------------------------- synthetic

def synthetic_ohlcv(symbols: str | list[str] | tuple[str, ...] = ("SYN",), start: object = "2022-01-01",
                    end: object = "2024-01-01", freq: str = "1h", seed: int = 0, *, start_price: float = 100.0,
                    annual_drift: float = 0.05, annual_volatility: float = 0.6) -> MarketData:
    """Deterministic synthetic OHLCV: geometric Brownian motion closes, per symbol.

    Bars run from ``start`` (inclusive) to ``end`` (exclusive) every ``freq``. Each bar's open is the previous close
    times a small gap (±0.05 % noise), high ≥ max(open, close) and low ≤ min(open, close) by a random intrabar
    range, volume is positive (log-normal). Drift and volatility are annual, scaled by a 365-day year. The same
    arguments give the same data (and fingerprint) on every machine.
    """
    names = [symbols] if isinstance(symbols, str) else list(symbols)
    if not names:
        raise ValueError("synthetic_ohlcv needs at least one symbol")
    index = pd.date_range(_to_utc_timestamp(start, "start"), _to_utc_timestamp(end, "end"), freq=freq,
                          inclusive="left", name="timestamp").as_unit("ns")
    if len(index) < 2:
        raise ValueError(f"synthetic_ohlcv: {start}..{end} at {freq} gives fewer than 2 bars")
    years_per_bar = (index[1] - index[0]) / pd.Timedelta(days=365)
    rng = np.random.default_rng(seed)
    n, k = len(index), len(names)
    sigma = annual_volatility * np.sqrt(years_per_bar)
    log_ret = (annual_drift - 0.5 * annual_volatility**2) * years_per_bar + sigma * rng.standard_normal((n, k))
    close = start_price * np.exp(np.cumsum(log_ret, axis=0))
    prev_close = np.vstack([np.full((1, k), start_price), close[:-1]])
    open_ = prev_close * (1.0 + 0.0005 * rng.standard_normal((n, k)))
    body_top, body_bottom = np.maximum(open_, close), np.minimum(open_, close)
    high = body_top * (1.0 + np.abs(rng.normal(0.0, 0.5 * sigma, (n, k))))
    low = body_bottom * (1.0 - np.minimum(np.abs(rng.normal(0.0, 0.5 * sigma, (n, k))), 0.5))
    volume = rng.lognormal(mean=10.0, sigma=0.5, size=(n, k))
    return MarketData(index=index, symbols=tuple(names), open=open_.T, high=high.T, low=low.T, close=close.T,
                      volume=volume.T)
