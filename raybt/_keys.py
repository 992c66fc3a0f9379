"""Job keys as arrays: between numpy's fixed-width bytes and Arrow's strings, and sets of them.

A job key (see :mod:`raybt.plan`) is the 24-character hex digest of a 12-byte blake2b. The driver holds keys as
``S24`` numpy arrays (a million keys in 24 MB, compared and sorted in C); result rows and checkpoint parts hold them
as Arrow strings. A *key set* is a sorted ``S24`` array without duplicates; membership is a binary search in it
(:func:`contains`), which for arrays of keys costs a fraction of :func:`numpy.isin` (that sorts both sides again).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

KEY_LENGTH = 24
"""Characters of a job key (the hex digest of a 12-byte blake2b, see :mod:`raybt.plan`)."""
KEY_DTYPE = np.dtype(f"S{KEY_LENGTH}")


def key_array(keys: np.ndarray) -> pa.Array:
    """``S24`` keys as an Arrow string array, built on their buffer when every key has its 24 characters (no NUL
    padding of a shorter one), else through Python strings."""
    keys = np.ascontiguousarray(keys)
    if keys.dtype == KEY_DTYPE and len(keys) and np.all(keys.view(np.uint8)):
        offsets = np.arange(0, KEY_LENGTH * (len(keys) + 1), KEY_LENGTH, dtype=np.int32)
        return pa.StringArray.from_buffers(len(keys), pa.py_buffer(offsets), pa.py_buffer(keys))
    return pa.array(keys.astype(str), type=pa.string())


def key_bytes(keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Arrow string keys as an ``S24`` array: a view of the Arrow buffer when every key has its 24 characters (the
    checked parts), else through Python strings (longer values cut, shorter ones NUL-padded)."""
    array = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if array.null_count == 0 and len(array) and pc.all(pc.equal(pc.utf8_length(array), KEY_LENGTH)).as_py():
        offset_type = np.int64 if pa.types.is_large_string(array.type) else np.int32
        offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)
        start = int(offsets[array.offset])
        return np.frombuffer(array.buffers()[2], dtype=KEY_DTYPE, count=len(array), offset=start)
    return array.to_numpy(zero_copy_only=False).astype(KEY_DTYPE)


def key_set(keys: np.ndarray) -> np.ndarray:
    """The distinct ``keys``, sorted (a key set)."""
    ordered = np.sort(np.asarray(keys, dtype=KEY_DTYPE))
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def newest_done(parts: list[tuple[np.ndarray, np.ndarray]], rerun_errors: bool) -> np.ndarray:
    """The key set of the jobs done in ``parts`` (oldest first; each its keys and whether each row failed). A key
    counts as done if its newest row is kept: with ``rerun_errors`` a key whose newest row failed is not done."""
    if not parts:
        return np.array([], dtype=KEY_DTYPE)
    keys = np.concatenate([keys for keys, _ in parts])
    if rerun_errors:
        failed = np.concatenate([failed for _, failed in parts])
        newest_first = keys[::-1]
        _, first = np.unique(newest_first, return_index=True)
        keep = ~failed[::-1][first]
        return np.sort(newest_first[first][keep])
    return key_set(keys)


def contains(keys_set: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Whether each of ``keys`` is in the key set ``keys_set`` (:func:`key_set`): ``np.isin(keys, keys_set)``."""
    keys = np.asarray(keys, dtype=KEY_DTYPE)
    if not len(keys_set):
        return np.zeros(len(keys), dtype=bool)
    where = np.searchsorted(keys_set, keys)
    return keys_set[np.minimum(where, len(keys_set) - 1)] == keys
