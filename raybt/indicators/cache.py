"""The per-process result cache of the indicators and the inspection of their inputs (rules in the
:mod:`raybt.indicators` docstring)."""

from __future__ import annotations

import numbers
import os
import threading
import warnings
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import pandas as pd

from raybt._accel import frames as _frames
from raybt._accel import slabs as _slabs

_CACHE_ENV_VAR = "RAYBT_INDICATOR_CACHE_MB"
_DEFAULT_CACHE_MB = 256.0
_BYTES_PER_MB = 1 << 20


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


class CacheInfo(NamedTuple):
    """Statistics of this process's indicator cache.

    ``hits`` and ``misses`` count lookups with cache-eligible (read-only)
    inputs only; calls on writable inputs bypass the cache and are not
    counted.  ``bytes`` is the memory the stored outputs hold (their size;
    outputs carved from huge-page slabs count as whole slabs, see the module
    docstring) and ``limit`` the bound in bytes.
    """

    hits: int
    misses: int
    entries: int
    bytes: int
    limit: int


class _Handout(NamedTuple):
    """How a cached result object looked when it was handed out.

    Hits return the very same object, which a caller may have changed in
    place since (``df.columns = ...``, ``df["A"] = ...``, ``arr.shape = ...``;
    its memory is read-only, so only labels, layout or the memory itself can
    change).  A hit checks the object against its handout and replaces it
    by a fresh wrapper of the cached memory if it no longer matches, so one
    caller's edits never reach another caller.
    """

    # What the check compares: operand.state (for a DataFrame, its
    # raybt._accel.frames.stamp instead).  Its ids stay valid: the cache entry holds
    # the object, its root (the kernel output) and, through its operands, the
    # labels.
    state: tuple[object, ...]
    # What _operand() finds for the object as handed out (its root is the
    # kernel output): a later call taking the object as an input reuses this
    # while the object is untouched.
    operand: _Operand


def _handout(
    obj: object, values: np.ndarray, labels: tuple[object, object]
) -> _Handout:
    """The :class:`_Handout` of ``obj``, which presents ``values`` (what
    :func:`_operand` finds for it) and ``labels``."""
    root, state = _root_and_state(obj, values, labels)
    operand = _new_tuple(_Operand, (obj, values, root, labels, state))
    if type(obj) is pd.DataFrame:  # checked by what it presents (see raybt._accel.frames): cheaper
        state = _frames.stamp(obj)
    return _new_tuple(_Handout, (state, operand))


def _untouched(obj: object, handout: _Handout) -> bool:
    """True if ``obj`` still presents the memory, layout and labels it was
    handed out with."""
    if type(obj) is np.ndarray:
        # An array's state (see _root_and_state) without the walk: numpy keeps
        # a view's ``base`` at the array owning the memory, the root.
        state = handout.state
        return (
            obj.base is handout.operand.root
            and obj.shape == state[0]
            and obj.strides == state[1]
            and obj.dtype == state[2]
        )
    if type(obj) is pd.DataFrame:
        return _frames.unchanged(obj, handout.state)
    try:
        op = _operand(obj, "result")
    except ValueError:  # e.g. an array reshaped to 3-D
        return False
    return op.state == handout.state and op.root is handout.operand.root


class _Entry(NamedTuple):
    operands: tuple[_Operand, ...]  # held: keeps the ids in the key valid
    raws: tuple[np.ndarray, ...]  # the read-only kernel outputs
    result: tuple[object, ...]  # their wrappers, as handed out
    handouts: tuple[_Handout, ...]
    nbytes: int  # of the outputs not carved from slabs
    slabs: tuple[object, ...]  # the slabs the others were carved from (see raybt._accel.slabs)


class _Parked(NamedTuple):
    """A result computed ahead of its call (see :meth:`_ResultCache.park`)."""

    key: tuple[object, ...]
    operands: tuple[_Operand, ...]
    raw: np.ndarray


class _ResultCache:
    """Thread-safe LRU map from call keys to read-only results, bounded in bytes.

    A key is ``(name, params, states)`` with the :attr:`_Operand.state` of
    each input, so a lookup that finds an entry has found one made from the
    very same, unchanged inputs.  Beside the LRU it keeps one *parked*
    result (see :func:`_crossed`), computed ahead of the call that will most
    likely ask for it next.

    ``nbytes`` is the memory the entries hold: the size of their outputs,
    except that outputs carved from slabs count as whole slabs
    (:data:`raybt._accel.slabs.SLAB_BYTES` for each slab holding an entry's output,
    however little of it), so the bound holds for what stays mapped.
    """

    def __init__(self, limit_bytes: int) -> None:
        self._entries: OrderedDict[tuple[object, ...], _Entry] = OrderedDict()
        self._slab_entries: dict[int, list] = {}  # id(slab) -> [slab, entries holding outputs in it]
        # id(result object) -> its _Handout, for the arrays and DataFrames the entries hand out (see operand_of)
        self._handouts: dict[int, _Handout] = {}
        self._parked: _Parked | None = None
        self._lock = threading.Lock()
        self.limit = limit_bytes
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def lookup(self, key: tuple[object, ...]) -> _Entry | None:
        """The entry of ``key``, if any.

        The caller checks the result objects against their handouts (see
        :class:`_Handout`); a hit means that nothing needs computing.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def take_parked(self, key: tuple[object, ...]) -> np.ndarray | None:
        """The result parked under ``key`` (see :meth:`park`), handed over
        and no longer held; None (a miss) if another is parked."""
        with self._lock:
            parked = self._parked
            if parked is not None and parked.key == key:
                self._parked = None
                self.hits += 1
                return parked.raw
            self.misses += 1
            return None

    def take_parked_over(
        self, name: str, params: tuple[object, ...], arrays: tuple[object, ...]
    ) -> tuple[np.ndarray, tuple[_Operand, ...]] | None:
        """The result parked for ``name`` and ``params`` over the very numpy arrays ``arrays``, handed over with its
        operands, or None (nothing counted) when the inputs must be inspected: :meth:`take_parked` without
        building the key.  For exact ndarrays the key's state is theirs when they are the same objects with the
        same shape, strides and dtype (their base, hence root, cannot change) and the root is still read-only,
        which is what is checked here."""
        with self._lock:
            parked = self._parked
            if parked is None or parked.key[0] != name or parked.key[1] != params:
                return None
            operands = parked.operands
            if len(operands) != len(arrays):
                return None
            for op, x in zip(operands, arrays):
                state = op.state
                if (
                    x is not op.obj or type(x) is not np.ndarray or x.shape != state[0]
                    or x.strides != state[1] or x.dtype != state[2] or op.root.flags.writeable
                ):
                    return None
            self._parked = None
            self.hits += 1
            return parked.raw, operands

    def store(
        self,
        key: tuple[object, ...],
        operands: tuple[_Operand, ...],
        raws: tuple[np.ndarray, ...],
        result: tuple[object, ...],
        handouts: tuple[_Handout, ...],
        nbytes: int,
        slabs: tuple[object, ...],
    ) -> None:
        """Store (or replace) the entry of ``key``: ``raws`` are the frozen
        kernel outputs and ``result`` their wrappers, being handed out;
        ``nbytes`` the size of the outputs not carved from ``slabs``."""
        entry = _new_tuple(_Entry, (operands, raws, result, handouts, nbytes, slabs))
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._uncount(old)
            self._entries[key] = entry
            self.nbytes += nbytes
            for obj, handout in zip(result, handouts):
                # only the kinds _untouched checks directly: for others it calls _operand, which consults this
                if type(obj) is np.ndarray or type(obj) is pd.DataFrame:
                    self._handouts[id(obj)] = handout
            for slab in slabs:
                users = self._slab_entries.get(id(slab))
                if users is None:
                    self._slab_entries[id(slab)] = [slab, 1]
                    self.nbytes += _slabs.SLAB_BYTES
                else:
                    users[1] += 1
            self._evict()

    def _uncount(self, entry: _Entry) -> None:
        """Take a removed entry out of :attr:`nbytes` (a slab leaves it with its last entry) and its result objects
        out of the handouts."""
        for obj in entry.result:
            handout = self._handouts.get(id(obj))
            if handout is not None and handout.operand.obj is obj:
                del self._handouts[id(obj)]
        self.nbytes -= entry.nbytes
        for slab in entry.slabs:
            users = self._slab_entries[id(slab)]
            users[1] -= 1
            if users[1] == 0:
                del self._slab_entries[id(slab)]
                self.nbytes -= _slabs.SLAB_BYTES

    def park(
        self, key: tuple[object, ...], operands: tuple[_Operand, ...], raw: np.ndarray
    ) -> None:
        """Hold one result computed ahead of its call (the other crossing of
        a pair) until that call takes it or the next :meth:`park` replaces it:
        a single slot, so at most one such result is ever kept.  ``operands``
        are held so that the ids in ``key`` stay valid meanwhile."""
        parked = _new_tuple(_Parked, (key, operands, raw))
        with self._lock:
            self._parked = parked

    def set_limit(self, limit_bytes: int) -> None:
        with self._lock:
            self.limit = limit_bytes
            if limit_bytes <= 0:
                self._parked = None
            self._evict()

    def operand_of(self, obj: object) -> _Operand | None:
        """The :class:`_Operand` of ``obj`` if it is an array or DataFrame a stored entry handed out and it is
        untouched since; else None."""
        handout = self._handouts.get(id(obj))
        if handout is None or handout.operand.obj is not obj or not _untouched(obj, handout):
            return None
        return handout.operand

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._slab_entries.clear()
            self._handouts.clear()
            self._parked = None
            self.nbytes = 0
            self.hits = 0
            self.misses = 0

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._entries), self.nbytes, self.limit)

    def _evict(self) -> None:
        while self.nbytes > self.limit and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._uncount(entry)


def _limit_from_env() -> int:
    """Cache bound in bytes from ``RAYBT_INDICATOR_CACHE_MB`` (default 256)."""
    raw = os.environ.get(_CACHE_ENV_VAR)
    if raw is None or not raw.strip():
        return int(_DEFAULT_CACHE_MB * _BYTES_PER_MB)
    try:
        megabytes = float(raw)
    except ValueError:
        megabytes = -1.0
    if not megabytes >= 0:
        warnings.warn(
            f"ignoring invalid {_CACHE_ENV_VAR}={raw!r}; using {_DEFAULT_CACHE_MB:g} MB",
            RuntimeWarning,
            stacklevel=2,
        )
        megabytes = _DEFAULT_CACHE_MB
    return int(megabytes * _BYTES_PER_MB)


_CACHE = _ResultCache(_limit_from_env())
_SLABS = _slabs.SlabAllocator()
# Outputs are carved from slabs (see raybt._accel.slabs) only under a bound of at least this many bytes: a slab counts
# whole against it.
_CARVE_MIN_LIMIT = 16 * _slabs.SLAB_BYTES


def set_cache_limit(megabytes: float) -> None:
    """Bound this process's cache to ``megabytes`` MiB of stored outputs.

    Least-recently-used entries are evicted immediately if the cache is over
    the new bound; 0 disables caching.
    """
    if not megabytes >= 0:
        raise ValueError(f"megabytes must be >= 0, got {megabytes!r}")
    _CACHE.set_limit(int(megabytes * _BYTES_PER_MB))
    _SLABS.release()


def clear_cache() -> None:
    """Drop every cached result (releasing its inputs and, once no result over it is held elsewhere, its memory)
    and reset hit/miss counts."""
    _CACHE.clear()
    _SLABS.release()


def cache_info() -> CacheInfo:
    """Return ``CacheInfo(hits, misses, entries, bytes, limit)`` for this process."""
    return _CACHE.info()


# ---------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------


class _Operand(NamedTuple):
    """An array-like input, inspected without copying anything."""

    obj: object  # the caller's object
    values: np.ndarray  # its numpy data
    root: np.ndarray  # the last ndarray in the chain of ``base`` arrays of values
    labels: tuple[object, object]  # (index, columns), (index, name) or _NO_LABELS
    # (shape, strides, dtype) of values and the ids of obj, root and labels
    state: tuple[object, ...]


def _operand(x: object, role: str) -> _Operand:
    """Inspect one array-like input (no copy is made).

    ``state`` is what a cache hit requires to be unchanged.  It is part of
    the cache key, so one dict lookup compares the layout and, by ``id()``,
    the very objects: a cache record holds its operands, so those ids cannot
    be reused while it lives.  The root decides whether the memory is
    read-only: if it is, no view of it can be written (numpy refuses to make
    such a view writable); a root that is not an ndarray (a foreign buffer)
    is beyond the chain, so the last ndarray decides.
    """
    known = _CACHE.operand_of(x)  # a cached result, passed on (e.g. the averages a crossing compares)
    if known is not None:
        return known
    kind = type(x)
    if kind is np.ndarray:  # the common kinds first, by exact type (cheaper than isinstance)
        values = x
        labels: tuple[object, object] = _NO_LABELS
    elif kind is pd.DataFrame or isinstance(x, pd.DataFrame):
        # What ``.values`` presents: the frame's one numpy block, or a copy
        # if it has several (then it is writable, so never cached).
        values = _frames.values(x)
        labels = (x.index, x.columns)
    elif isinstance(x, pd.Series):
        values = x.to_numpy()
        labels = (x.index, x.name)
    elif isinstance(x, np.ndarray):
        values = x
        labels = _NO_LABELS
    else:
        raise TypeError(
            f"{role} must be a pandas DataFrame/Series or numpy ndarray, "
            f"got {type(x).__name__}"
        )
    if values.ndim not in (1, 2):
        raise ValueError(f"{role} must be 1-D or 2-D, got {values.ndim}-D")
    root, state = _root_and_state(x, values, labels)
    # tuple.__new__ is what the NamedTuple constructor calls, minus a frame.
    return _new_tuple(_Operand, (x, values, root, labels, state))


def _root_and_state(
    obj: object, values: np.ndarray, labels: tuple[object, object]
) -> tuple[np.ndarray, tuple[object, ...]]:
    """The root array of ``values`` (the last ndarray in its chain of
    ``base`` arrays) and the :attr:`_Operand.state` of ``obj``, which
    presents ``values`` with ``labels``."""
    root = values
    while isinstance(root.base, np.ndarray):
        root = root.base
    state = (
        values.shape, values.strides, values.dtype, id(obj), id(root),
        id(labels[0]), id(labels[1]),
    )
    return root, state


_new_tuple = tuple.__new__
_NO_LABELS = (None, None)  # the labels of a numpy array
_FLOAT64 = np.dtype(np.float64)


def _as_float2d(values: np.ndarray) -> np.ndarray:
    """float64 2-D view of ``values`` (copies only to convert the dtype)."""
    if type(values) is np.ndarray and values.dtype == _FLOAT64:
        arr = values  # what np.asarray would return, without the call
    else:
        arr = np.asarray(values, dtype=np.float64)
    return arr.reshape(-1, 1) if arr.ndim == 1 else arr


def _positive_int(value: int, name: str) -> int:
    """Validate a window length / period."""
    if type(value) is int and value >= 1:  # the common case, without ABC checks
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)
