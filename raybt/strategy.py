"""The ``Strategy`` base class: parameters, immutability, stable ids, and turning signals into arrays.

A strategy's parameters are its annotated class attributes (with defaults, or required as keywords)::

    class SmaCross(raybt.Strategy):
        fast: int = 10
        slow: int = 50

        def signals(self, data):
            ...
            return entries, exits

Parameter values are scalars (``int``, ``float``, ``str``, ``bool`` or ``None``); a value of the wrong type raises
``TypeError`` naming the parameter (an ``int`` is accepted for a ``float`` parameter and stored as ``float``; numpy
scalars are converted). Instances are immutable.

Trading rules the engine reads from every strategy, and which a strategy may declare as parameters (annotated) to
sweep them, or set as plain class attributes to fix them: ``size`` (fraction of equity per entry, default 1.0),
``direction`` ("long", "short" or "both", default "long"), ``stop_loss``, ``take_profit``, ``trailing_stop``
(fractions of the entry price / running extreme, default None = off) and ``warmup`` (bars before a range start used
only to compute signals, default 0).

``strategy.id`` hashes the parameters and the code: the class, the user code it reaches (helpers, other modules of
yours, module-level constants) and the class attribute ``version`` (see :mod:`raybt.code_digest`).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from raybt._accel import frames as _frames
from raybt.code_digest import class_digest
from raybt.data import MarketView
from raybt.metrics import METRIC_NAMES

RESULT_COLUMNS = ("key", "strategy_id", "strategy", "parameters", "symbol", "range", "range_start", "range_end",
                  "start", "end", "permutation_seed", "permutation", "error", "duration_s", "worker")
"""Result columns besides parameters and metrics (a parameter may not take one of these names)."""
_RULE_NAMES = ("size", "direction", "stop_loss", "take_profit", "trailing_stop", "warmup")
_DIRECTIONS = ("long", "short", "both")
_SCALARS = (bool, int, float, str, type(None))


class SignalError(ValueError):
    """``Strategy.signals`` returned something the engine cannot use; the message names the strategy."""


class Strategy:
    """Base class of user strategies: subclass it, annotate parameters, implement :meth:`signals`."""

    size = 1.0
    direction = "long"
    stop_loss: ClassVar[float | None] = None
    take_profit: ClassVar[float | None] = None
    trailing_stop: ClassVar[float | None] = None
    warmup = 0

    signals_many: ClassVar[Callable[[MarketView, pd.DataFrame], tuple[Any, Any]] | None] = None
    """Optional vectorised hook, a class method ``signals_many(cls, data, params)``: the signals of many parameter
    sets at once on one symbol's data. ``params`` is a DataFrame with one row per parameter set (columns: the
    parameters); it returns ``(entries, exits)``, boolean arrays or DataFrames of shape bars × sets (column ``i`` for
    row ``i``), equal to what ``signals()`` returns for each set. Sweeps use it for single-symbol data (and fall back
    to ``signals()`` per set if it raises); results are identical either way, so it only saves time. It is checked
    against ``signals()`` on one parameter set per group of jobs (see :mod:`raybt.batch_eval`); a subclass that
    overrides ``signals()`` does not use a hook it inherits."""

    signals_many_cells: ClassVar[int] = 2**18
    """At most how many bars × parameter sets one ``signals_many`` call covers (a sweep calls it on chunks of a
    group's sets). The default suits a numpy hook with temporaries of a float or a bool per cell: they stay in the
    CPU caches. A hook whose temporaries do not grow with the sets (e.g. one average per window, then
    :func:`raybt.indicators.pair_crossings`) sets it higher, so its per-call costs are shared by more sets: 2**24
    or more gives one call per chunk of signals that batch evaluation stacks (:mod:`raybt.batch_eval`)."""

    version: ClassVar[int | str] = 0
    """Bump it (``version = 2``, not annotated) when results change for a reason raybt cannot see in the code: a data
    file the strategy reads, an installed package's upgrade. Part of the id, never a parameter."""

    _param_types: ClassVar[dict[str, Any]] = {}
    _param_defaults: ClassVar[dict[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if isinstance(cls.version, bool) or not isinstance(cls.version, (int, str)):
            raise TypeError(f"{cls.__qualname__}: version must be an int or a str, got {cls.version!r}")
        hints = typing.get_type_hints(cls)
        names = [n for klass in reversed(cls.__mro__) if klass not in (Strategy, object)
                 for n in klass.__dict__.get("__annotations__", {}) if not n.startswith("_")]
        cls._param_types, cls._param_defaults = {}, {}
        for name in dict.fromkeys(names):
            annotation = hints.get(name)
            if typing.get_origin(annotation) is ClassVar:
                continue
            if name == "version":
                raise TypeError(f"{cls.__qualname__}: 'version' is the strategy's code version, not a parameter; "
                                f"set it without an annotation (version = 2)")
            if name in RESULT_COLUMNS or name in METRIC_NAMES or name in ("params", "id", "signals", "signals_many"):
                raise TypeError(f"{cls.__qualname__}: parameter {name!r} collides with a result column or a "
                                f"Strategy attribute; rename it")
            cls._param_types[name] = annotation
            if hasattr(cls, name):
                cls._param_defaults[name] = _check_value(cls, name, annotation, getattr(cls, name))

    def __init__(self, **params: Any):
        cls = type(self)
        unknown = sorted(set(params) - set(cls._param_types))
        if unknown:
            raise TypeError(f"{cls.__qualname__}: unknown parameter(s) {unknown}; "
                            f"parameters are {list(cls._param_types)}")
        values = {}  # in the class's order of declaration, whatever the order of the keywords
        for name, annotation in cls._param_types.items():
            if name in params:
                values[name] = _check_value(cls, name, annotation, params[name])
            elif name in cls._param_defaults:
                values[name] = cls._param_defaults[name]
        missing = [n for n in cls._param_types if n not in values]
        if missing:
            raise TypeError(f"{cls.__qualname__}: missing required parameter(s) {missing}")
        object.__setattr__(self, "_params", values)
        object.__setattr__(self, "_id", None)
        for name, value in values.items():
            object.__setattr__(self, name, value)
        _check_rules(self)

    def signals(self, data: MarketView) -> Any:
        """Return ``(entries, exits)``: boolean DataFrames shaped like ``data.close`` (Series or 1-D arrays for one
        symbol, 2-D arrays, or dicts symbol → boolean Series are accepted too)."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement signals(data)")

    @property
    def params(self) -> dict[str, Any]:
        """Parameter name → value (a copy)."""
        return dict(self._params)

    @property
    def id(self) -> str:
        """Stable content hash of the code and the parameters: identical in every process and on every machine for
        the same code and values. The code is the class, the user code it reaches and its ``version``
        (:func:`raybt.code_digest.class_digest`); the id follows that digest when a sweep refreshes it after a
        helper module was edited and reloaded. The formula is :func:`strategy_ids`'."""
        code = class_digest(type(self))
        cached = self._id
        if cached is None or cached[0] is not code:
            return strategy_ids([self])[0]
        return cached[1]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__qualname__} is immutable; make a new instance with other parameters")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__qualname__} is immutable")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._params == self._params  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__qualname__, tuple(sorted(self._params.items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__qualname__}({args})"

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), self._params))


def _rebuild(cls: type[Strategy], params: dict[str, Any]) -> Strategy:
    return cls(**params)


def _rebuilt(cls: type[Strategy], rows: Iterable[tuple]) -> list[Strategy]:
    """``[cls(**dict(zip(names, row))) for row in rows]`` for parameter values an instance of ``cls`` already had (a
    batch's strategies, rebuilt in a worker), each row in the order of the class's parameters: the same instances,
    without checking the values again when ``cls`` keeps :class:`Strategy`'s ``__init__`` (checking costs
    microseconds per instance, and a worker rebuilds every strategy of every task; a class with its own
    ``__init__`` goes through it). The instance's attributes are those ``__init__`` sets, in its order."""
    names = tuple(cls._param_types)
    if cls.__init__ is not Strategy.__init__:
        return [cls(**dict(zip(names, row))) for row in rows]
    make, set_state = object.__new__, object.__setattr__
    strategies = []
    for row in rows:
        values = dict(zip(names, row))
        strategy = make(cls)
        set_state(strategy, "__dict__", {"_params": values, "_id": None, **values})
        strategies.append(strategy)
    return strategies


def checked_strategies(strategies: Iterable[Any]) -> list[Strategy]:
    """``strategies`` as a list, each a :class:`Strategy`; else a :class:`TypeError` naming the first that is not
    (its position and type)."""
    strategies = list(strategies)
    for position, strategy in enumerate(strategies):
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategies[{position}] is a {type(strategy).__name__}, not a raybt.Strategy")
    return strategies


# ------------------------------------------------------------------------------------------ ids and parameters JSON

def strategy_ids(strategies: Sequence[Strategy]) -> list[str]:
    """``[s.id for s in strategies]``, computed class by class (see :func:`parameters_texts`) and cached by each
    instance. Rule: ``sha256(f"{class digest}\\n{parameters JSON}")``, the first 16 hex digits, where the JSON is
    ``json.dumps(params, sort_keys=True, separators=(",", ":"))``; stored rows and their keys depend on this text, so
    it never changes."""
    codes = {cls: class_digest(cls) for cls in set(map(type, strategies))}
    ids = [None if cached is None or cached[0] is not codes[type(s)] else cached[1]
           for s, cached in zip(strategies, [s._id for s in strategies])]
    stale: dict[type, list[int]] = {}
    for position in [p for p, strategy_id in enumerate(ids) if strategy_id is None]:
        stale.setdefault(type(strategies[position]), []).append(position)
    for cls, positions in stale.items():
        code = codes[cls]
        members = [strategies[p] for p in positions]
        fresh = [_sha256(text.encode()).hexdigest()[:16]
                 for text in _class_parameters_texts(cls, members, prefix=f"{code}\n")]
        for position, strategy, strategy_id in zip(positions, members, fresh):
            ids[position] = strategy_id
            object.__setattr__(strategy, "_id", (code, strategy_id))
    return ids  # type: ignore[return-value]


def parameters_texts(strategies: Sequence[Strategy]) -> list[str]:
    """Each strategy's parameters as canonical JSON text: exactly ``json.dumps(params, sort_keys=True,
    separators=(",", ":"))`` (bool, int, float, str and None keep their types through :func:`json.loads`; ``5`` and
    ``5.0`` differ; NaN and infinities as Python's json writes them, non-ASCII text escaped). Built column by column
    for the strategies of one class (its parameter names are the same for every instance), not one ``json.dumps``
    per strategy."""
    texts: list[str | None] = [None] * len(strategies)
    by_class: dict[type, list[int]] = {}
    for position, strategy in enumerate(strategies):
        by_class.setdefault(type(strategy), []).append(position)
    for cls, positions in by_class.items():
        for position, text in zip(positions, _class_parameters_texts(cls, [strategies[p] for p in positions])):
            texts[position] = text
    return texts  # type: ignore[return-value]


def _class_parameters_texts(cls: type[Strategy], strategies: list[Strategy], prefix: str = "") -> list[str]:
    """The JSON texts of instances of ``cls``, each after ``prefix``: one template per class (the sorted, escaped
    parameter names) filled with each column of values as json writes it."""
    names = sorted(cls._param_types)
    if not names:
        return [prefix + "{}"] * len(strategies)
    template = (prefix.replace("%", "%%") + "{"
                + ",".join(json.dumps(name).replace("%", "%%") + ":%s" for name in names) + "}")
    columns = [_json_values([s._params[name] for s in strategies]) for name in names]
    return [template % values for values in zip(*columns)]


def _float_json(value: float) -> str:
    text = float.__repr__(value)
    return _FLOAT_JSON.get(text, text)


_sha256 = hashlib.sha256
_FLOAT_JSON = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # json's allow_nan=True spellings
_JSON_OF_TYPE: dict[type, Callable[[Any], str]] = {
    int: int.__repr__, float: _float_json, str: json.encoder.encode_basestring_ascii,
    bool: lambda value: "true" if value else "false", type(None): lambda value: "null"}


def _json_values(values: list) -> list[str]:
    """``[json.dumps(v) for v in values]`` for scalars, one formatter per column when the values share a type
    (subclasses of the scalar types, e.g. an ``IntEnum``, go through ``json.dumps`` itself)."""
    kinds = set(map(type, values))
    if len(kinds) == 1:
        kind = kinds.pop()
        if kind in _JSON_OF_TYPE:
            return list(map(_JSON_OF_TYPE[kind], values))
    return [_JSON_OF_TYPE[type(v)](v) if type(v) in _JSON_OF_TYPE else json.dumps(v) for v in values]


# ------------------------------------------------------------------------------------------------ validation

def _check_value(cls: type, name: str, annotation: Any, value: Any) -> Any:
    """Validate (and normalise) one parameter value against its annotation."""
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, _SCALARS):
        raise TypeError(f"{cls.__qualname__}: parameter {name!r} must be an int, float, str, bool or None, "
                        f"got {type(value).__name__}")
    allowed = _allowed_types(annotation)
    if allowed is None:
        return value
    if float in allowed and isinstance(value, int) and not isinstance(value, bool) and int not in allowed:
        return float(value)
    if isinstance(value, bool) and bool not in allowed:
        raise TypeError(f"{cls.__qualname__}: parameter {name!r} expects {_type_names(allowed)}, got bool {value}")
    if isinstance(value, tuple(allowed)):
        return value
    raise TypeError(f"{cls.__qualname__}: parameter {name!r} expects {_type_names(allowed)}, "
                    f"got {type(value).__name__} {value!r}")


def _allowed_types(annotation: Any) -> set[type] | None:
    """The runtime types an annotation admits, or None when it does not constrain (Any, unknown)."""
    if annotation is None or annotation is type(None):
        return {type(None)}
    if annotation in _SCALARS:
        return {annotation}
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        allowed: set[type] = set()
        for arg in typing.get_args(annotation):
            sub = _allowed_types(arg)
            if sub is None:
                return None
            allowed |= sub
        return allowed
    if origin is typing.Literal:
        return {type(a) for a in typing.get_args(annotation)}
    return None


def _type_names(allowed: set[type]) -> str:
    return " | ".join(sorted("None" if t is type(None) else t.__name__ for t in allowed))


def _check_rules(strategy: Strategy) -> None:
    problem = _rules_problem(strategy)
    if problem is not None:
        raise ValueError(f"{strategy!r}: {problem}")  # the repr only when it is needed: strategies are made by millions


def _rules_problem(strategy: Strategy) -> str | None:
    size = strategy.size
    if not isinstance(size, numbers.Real) or not size > 0:
        return f"size must be a positive fraction of equity, got {size!r}"
    if strategy.direction not in _DIRECTIONS:
        return f"direction must be one of {_DIRECTIONS}, got {strategy.direction!r}"
    for rule in ("stop_loss", "take_profit", "trailing_stop"):
        value = getattr(strategy, rule)
        if value is not None and (not isinstance(value, numbers.Real) or not value > 0):
            return f"{rule} must be None or a positive fraction, got {value!r}"
    warmup = strategy.warmup
    if not isinstance(warmup, numbers.Integral) or isinstance(warmup, bool) or warmup < 0:
        return f"warmup must be a non-negative number of bars, got {warmup!r}"
    return None


# ------------------------------------------------------------------------------------------------ signals

def signal_arrays(strategy: Strategy, view: MarketView) -> tuple[np.ndarray, np.ndarray]:
    """Call ``strategy.signals(view)`` and return ``(entries, exits)`` as boolean arrays of shape
    ``(n_symbols, len(view))`` (symbol-major, like the market data). NaN counts as False. Raises
    :class:`SignalError` naming the strategy on a shape, index or column mismatch.

    Boolean DataFrames on the view's own index object (as indicator outputs and pandas operations on ``data.close``
    are) with the symbols as columns are returned as views of their memory, without copying or re-checking labels.
    """
    result = strategy.signals(view)
    if not isinstance(result, tuple) or len(result) != 2:
        raise SignalError(f"{strategy!r}: signals() must return a tuple (entries, exits), got {type(result).__name__}")
    return _as_array(strategy, view, result[0], "entries").T, _as_array(strategy, view, result[1], "exits").T


class _Where:
    """``"<strategy repr>: <what>"`` for error messages, formatted only when a message is built."""

    __slots__ = ("strategy", "what")

    def __init__(self, strategy: Strategy, what: str):
        self.strategy, self.what = strategy, what

    def __str__(self) -> str:
        return f"{self.strategy!r}: {self.what}"


# Column Index objects already found to list exactly the symbols (id -> (columns, symbols)). pandas Index objects are
# immutable and the entry holds strong references, so an id cannot be recycled while it is stored: a hit proves the
# match without iterating the labels (slow for pandas 3 string columns). Bounded: cleared when full.
_MATCHED_COLUMNS: dict[int, tuple[pd.Index, tuple[str, ...]]] = {}
_MATCHED_COLUMNS_MAX = 256


def _columns_are_symbols(columns: pd.Index, symbols: tuple[str, ...]) -> bool:
    """``list(columns) == list(symbols)``, memoised by the identity of ``columns``."""
    entry = _MATCHED_COLUMNS.get(id(columns))
    if entry is not None and entry[0] is columns and (entry[1] is symbols or entry[1] == symbols):
        return True
    if len(columns) != len(symbols) or list(columns) != list(symbols):
        return False
    if len(_MATCHED_COLUMNS) >= _MATCHED_COLUMNS_MAX:
        _MATCHED_COLUMNS.clear()
    _MATCHED_COLUMNS[id(columns)] = (columns, symbols)
    return True


_BOOL = np.dtype(np.bool_)


def _as_array(strategy: Strategy, view: MarketView, signal: Any, what: str) -> np.ndarray:
    if type(signal) is pd.DataFrame and signal.index is view.index:
        # The common case (indicator outputs, pandas operations on data.close), checked without building anything:
        # a frame's values have one row per index label and one column per column label.
        values = _frames.values(signal)
        if values.dtype == _BOOL and _columns_are_symbols(signal.columns, view.symbols):
            return values
    n, symbols = len(view), view.symbols
    if type(signal) is np.ndarray and signal.dtype == _BOOL and signal.shape == (n, len(symbols)):
        return signal  # the common case on data.arrays
    where = _Where(strategy, what)
    if isinstance(signal, pd.DataFrame):
        index = signal.index
        if index is not view.index:
            _check_index(index, view, where)
        if not _columns_are_symbols(signal.columns, symbols):
            if sorted(map(str, signal.columns)) != sorted(symbols):
                raise SignalError(f"{where} has columns {list(signal.columns)}, expected the symbols {list(symbols)}")
            signal = signal[list(symbols)]
        values = signal.values  # DataFrame.to_numpy() with default arguments: a view of a single-block frame
    elif isinstance(signal, Mapping):
        unknown = sorted(set(map(str, signal)) - set(symbols))
        if unknown:
            raise SignalError(f"{where} names unknown symbol(s) {unknown}; the data has {list(symbols)}")
        out = np.zeros((n, len(symbols)), dtype=np.bool_)
        for col, symbol in enumerate(symbols):
            if symbol in signal:
                out[:, col] = _as_column(view, signal[symbol], f"{where}[{symbol!r}]")
        return out
    elif isinstance(signal, pd.Series) or np.ndim(signal) == 1:
        if len(symbols) != 1:
            raise SignalError(f"{where} is one-dimensional but the data has {len(symbols)} symbols {list(symbols)}; "
                              f"return a DataFrame or a dict symbol -> Series")
        return _as_column(view, signal, where).reshape(n, 1)
    else:
        values = np.asarray(signal)
    if values.shape != (n, len(symbols)):
        raise SignalError(f"{where} has shape {values.shape}, expected ({n}, {len(symbols)})")
    return _to_bool(values, where, view)


def _as_column(view: MarketView, signal: Any, where: Any) -> np.ndarray:
    """One symbol's signal (a Series on the view's index or a 1-D array) as a boolean vector."""
    if isinstance(signal, pd.Series):
        _check_index(signal.index, view, where)
        values = signal.to_numpy()
    else:
        values = np.asarray(signal)
    if values.shape != (len(view),):
        raise SignalError(f"{where} has shape {values.shape}, expected ({len(view)},)")
    return _to_bool(values, where, view)


def _check_index(index: pd.Index, view: MarketView, where: Any) -> None:
    if index is view.index or index.equals(view.index):
        return
    if len(index) != len(view):
        raise SignalError(f"{where} has {len(index)} rows, expected {len(view)} (one per bar of data.close)")
    first = int(np.argmax(np.asarray(index != view.index)))
    raise SignalError(f"{where} index differs from data.close's index at row {first}: {index[first]} != "
                      f"{view.index[first]}")


def _to_bool(values: np.ndarray, where: Any, view: MarketView) -> np.ndarray:
    """Signals as booleans: bool as they are, integers 0/1 as False/True. Anything else — floats (NaN included),
    other integers, objects that are not booleans (None, pandas' NA) — is a :class:`SignalError` naming the first
    offending bar: a signal is a yes or a no, and guessing what 0.5 or NaN meant would be silently wrong."""
    if values.dtype == np.bool_:
        return values
    if values.dtype.kind in "iu":
        offending = (values != 0) & (values != 1)
    elif values.dtype == object:
        offending = ~np.frompyfunc(_is_boolean_value, 1, 1)(values).astype(bool)
    else:
        offending = np.ones(values.shape, dtype=bool)  # floats and every other dtype: not a yes/no
        if values.dtype.kind == "f":  # point at a value that cannot be read as a yes/no, if there is one
            unclear = ~((values == 0) | (values == 1))
            offending = unclear if unclear.any() else offending
    if not offending.any():
        return np.asarray(values != 0 if values.dtype.kind in "iu" else values.astype(bool))
    bar, *column = np.unravel_index(int(np.argmax(offending)), values.shape)
    value = values[(bar, *column)]
    symbol = f", symbol {view.symbols[column[0]]!r}" if column else ""
    raise SignalError(f"{where} must be boolean (or integers 0/1), got dtype {values.dtype}: first offending value "
                      f"{value.item() if isinstance(value, np.generic) else value!r} at bar {view.index[bar]}{symbol}")


def _is_boolean_value(value: Any) -> bool:
    return isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1))
