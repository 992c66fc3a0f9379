"""Evaluation of an indicator: cache lookup, kernel call, output wrapping."""

from __future__ import annotations

from collections.abc import Callable
from itertools import starmap

import numpy as np
import pandas as pd

from raybt._accel import frames as _frames
from raybt.indicators.cache import (
    _CACHE,
    _CARVE_MIN_LIMIT,
    _Handout,
    _Operand,
    _SLABS,
    _as_float2d,
    _handout,
    _operand,
    _untouched,
)


# ---------------------------------------------------------------------------
# Evaluation: cache lookup, kernel call, output wrapping
# ---------------------------------------------------------------------------

_Kernel = Callable[..., None]


def _freeze(arr: np.ndarray) -> None:
    """Make ``arr`` and every ndarray it views read-only."""
    node: object = arr
    while isinstance(node, np.ndarray):
        node.setflags(write=False)
        node = node.base


def _present(raw: np.ndarray, like: _Operand) -> tuple[object, np.ndarray]:
    """Present a 2-D kernel output as the same kind of object as ``like``:
    ``(object, the numpy data it presents)``.

    pandas objects reuse the input's very index and columns (or index and
    name) objects, so that e.g. ``signal_arrays`` recognises the labels by
    identity, and keep the kernel's memory (no copy): a DataFrame's
    ``values`` present ``raw`` itself, a Series' ``to_numpy()`` its one
    column.  Arrays are handed out as new views, never as ``raw`` itself,
    which the cache keeps pristine for re-wrapping.
    """
    obj = like.obj
    labels = like.labels
    if isinstance(obj, pd.DataFrame):
        return _frames.frame(raw.T, labels[0], labels[1]), raw  # raw.T: the block, (columns, bars)
    if isinstance(obj, pd.Series):
        values = raw[:, 0]
        return pd.Series(values, index=labels[0], name=labels[1], copy=False), values
    values = raw.view() if like.values.ndim == 2 else raw[:, 0]
    return values, values


def _wrap(raw: np.ndarray, like: _Operand) -> tuple[object, _Handout]:
    """:func:`_present` a cached output: the object and its :class:`_Handout`."""
    out, values = _present(raw, like)
    return out, _handout(out, values, like.labels)


def _wrap_all(
    raws: tuple[np.ndarray, ...], like: _Operand
) -> tuple[tuple[object, ...], tuple[_Handout, ...]]:
    """:func:`_wrap` each of ``raws``: ``(objects, handouts)``."""
    wrapped = [_wrap(raw, like) for raw in raws]
    return tuple([w[0] for w in wrapped]), tuple([w[1] for w in wrapped])


def _inspect(
    name: str, params: tuple[object, ...], inputs: tuple[tuple[object, str], ...]
) -> tuple[tuple[_Operand, ...], tuple[object, ...] | None]:
    """Operands of ``inputs`` ((object, role) pairs), checked to have one
    shape, and the cache key of the call (see :class:`_ResultCache`), or
    None if it may not use the cache: only read-only memory is eligible
    (see the module docstring)."""
    # Written out for one and two inputs (nearly every call): loops and
    # comprehensions cost microseconds per call here.
    first = _operand(*inputs[0])
    if len(inputs) == 1:
        if first.root.flags.writeable or _CACHE.limit <= 0:
            return (first,), None
        return (first,), (name, params, (first.state,))
    if len(inputs) == 2:
        second = _operand(*inputs[1])
        _check_shape(second, inputs[1][1], first, inputs[0][1])
        writable = first.root.flags.writeable or second.root.flags.writeable
        if writable or _CACHE.limit <= 0:
            return (first, second), None
        return (first, second), (name, params, (first.state, second.state))
    operands = (first, *starmap(_operand, inputs[1:]))
    for op, (_, role) in zip(operands[1:], inputs[1:]):
        _check_shape(op, role, first, inputs[0][1])
    if _CACHE.limit <= 0 or any(op.root.flags.writeable for op in operands):
        return operands, None
    return operands, (name, params, tuple([op.state for op in operands]))


def _check_shape(op: _Operand, role: str, first: _Operand, first_role: str) -> None:
    """Raise unless ``op`` has the shape of the call's first input."""
    if op.values.shape != first.values.shape:
        raise ValueError(
            f"{role} has shape {op.values.shape}, expected {first.values.shape} "
            f"like {first_role}"
        )


def _new_outputs(
    count: int, nrows: int, ncols: int, carve: bool
) -> tuple[tuple[np.ndarray, ...], int, tuple[object, ...]]:
    """``count`` uninitialised float64 ``(nrows, ncols)`` outputs with contiguous columns, the bytes of those
    allocated on their own, and the slabs the others were carved from (see :mod:`raybt._accel.slabs`; only if
    ``carve``)."""
    outputs = []
    own_bytes = 0
    slabs: list[object] = []
    for _ in range(count):
        carved = _SLABS.carve(ncols, nrows) if carve else None
        if carved is None:
            out = np.empty((ncols, nrows)).T
            own_bytes += out.nbytes
        else:
            out = carved[0].T
            if not any(slab is carved[1] for slab in slabs):
                slabs.append(carved[1])
        outputs.append(out)
    return tuple(outputs), own_bytes, tuple(slabs)


def _evaluate(
    name: str,
    params: tuple[object, ...],
    inputs: tuple[tuple[object, str], ...],
    kernel: _Kernel,
    n_outputs: int = 1,
) -> tuple[object, ...]:
    """Compute ``kernel`` on ``inputs`` or fetch the cached result.

    ``inputs`` are (object, role) pairs; ``kernel`` receives their float64
    2-D arrays and then ``n_outputs`` arrays of the same shape to write its
    outputs to, which are wrapped like the first input.  Outputs to be cached
    are carved from huge-page slabs where they fit (see :mod:`raybt._accel.slabs`).
    A hit returns the cached result objects, or fresh wrappers of the cached
    memory if a caller changed one of them in place (see :class:`_Handout`).
    """
    operands, key = _inspect(name, params, inputs)
    cache = _CACHE
    first = operands[0]
    if key is not None:
        entry = cache.lookup(key)
        if entry is not None:
            result = entry.result
            for obj, handout in zip(result, entry.handouts):
                if not _untouched(obj, handout):
                    raws = entry.raws
                    result, handouts = _wrap_all(raws, first)
                    cache.store(key, operands, raws, result, handouts, entry.nbytes, entry.slabs)
                    break
            return result

    arrays = [_as_float2d(op.values) for op in operands]
    nrows, ncols = arrays[0].shape
    carve = key is not None and cache.limit >= _CARVE_MIN_LIMIT
    raws, nbytes, slabs = _new_outputs(n_outputs, nrows, ncols, carve)
    kernel(*arrays, *raws)
    if key is None or nbytes > cache.limit:
        return _wrap_all(raws, first)[0]
    for raw in raws:
        _freeze(raw)
    result, handouts = _wrap_all(raws, first)
    cache.store(key, operands, raws, result, handouts, nbytes, slabs)
    return result
