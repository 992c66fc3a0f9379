"""Single-block DataFrames, built and re-checked several times faster than through pandas' public API.

raybt hands the same DataFrames to every strategy on a range (``view.close``, cached indicator results) and builds
new ones in every backtest (crossing signals). pandas' constructor and reading ``frame.values`` to check a frame are
a sizeable part of a backtest (figures in the README, "Hot path"). This module builds a frame of one
numpy block directly from pandas' block manager (``DataFrame._from_mgr``), and checks a handed-out frame by the
identity of what it presents (its manager, blocks, block array and axes):

* :func:`frame` - a DataFrame presenting ``block.T`` (``block`` is ``(columns, bars)``, the block layout) on the
  very ``index`` and ``columns`` objects, without a copy;
* :func:`values` - the numpy data ``frame.values`` presents (for a frame of one numpy block, without the read-only
  view pandas makes each time): for reading only, the caller must not write to it;
* :func:`stamp` / :func:`unchanged` - what a frame presents now, and whether it still does: a frame relabelled
  (``df.columns = ...``, ``df.index = ...``), with a column added, replaced or deleted, or changed by an
  ``inplace=True`` method (which replaces its manager) fails the check. Setting ``name`` on its Index objects in
  place is not seen (cosmetic).

Those are pandas internals, not its public API, so they are verified once on import: if building a frame this
way or the checks do not behave exactly as required (another pandas version), or with ``RAYBT_PORTABLE=1``, the
module uses its twins, the public constructor and checks through ``frame.values`` (slower, same results).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from raybt._accel import PORTABLE

Stamp = tuple[object, ...]


def _public_frame(block: np.ndarray, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    return pd.DataFrame(block.T, index=index, columns=columns, copy=False)


def _public_stamp(frame: pd.DataFrame) -> Stamp:
    return frame.index, frame.columns, frame.shape, frame.values.base


def _public_unchanged(frame: pd.DataFrame, stamp: Stamp) -> bool:
    return (frame.index is stamp[0] and frame.columns is stamp[1] and frame.shape == stamp[2]
            and frame.values.base is stamp[3])


try:  # pandas internals (present in pandas 2.2 and 3.x); verified by _internals_work() below
    from pandas._libs.internals import BlockPlacement
    from pandas.core.internals import BlockManager
    from pandas.core.internals.blocks import NumpyBlock
except ImportError:  # pragma: no cover - another pandas layout
    BlockManager = None

_from_mgr = pd.DataFrame._from_mgr if hasattr(pd.DataFrame, "_from_mgr") else None


def _internal_frame(block: np.ndarray, index: pd.Index, columns: pd.Index) -> pd.DataFrame:
    mgr = BlockManager((NumpyBlock(block, BlockPlacement(slice(0, block.shape[0])), ndim=2),), [columns, index],
                       verify_integrity=False)
    return _from_mgr(mgr, mgr.axes)


def _internal_stamp(frame: pd.DataFrame) -> Stamp:
    mgr = frame._mgr
    blocks = mgr.blocks
    axes = mgr.axes
    return mgr, blocks, blocks[0].values, axes[0], axes[1]


def _internal_unchanged(frame: pd.DataFrame, stamp: Stamp) -> bool:
    mgr = frame._mgr
    if mgr is not stamp[0]:
        return False
    blocks = mgr.blocks
    axes = mgr.axes
    return blocks is stamp[1] and blocks[0].values is stamp[2] and axes[0] is stamp[3] and axes[1] is stamp[4]


def _internal_values(frame: pd.DataFrame) -> np.ndarray:
    blocks = frame._mgr.blocks
    if len(blocks) == 1:
        block = blocks[0].values
        if type(block) is np.ndarray:
            return block.T  # what frame.values presents (pandas: a read-only view of this)
    return frame.values


def _internals_work() -> bool:
    """Build frames the internal way and check they equal public ones and that every edit fails the check."""
    if BlockManager is None or _from_mgr is None:
        return False
    try:
        block = np.arange(6.0).reshape(2, 3)
        block.flags.writeable = False
        index, columns = pd.RangeIndex(3), pd.Index(["a", "b"])
        built = _internal_frame(block, index, columns)
        if not (type(built) is pd.DataFrame and built.index is index and built.columns is columns
                and built.equals(_public_frame(block, index, columns))
                and np.shares_memory(built.values, block) and not built.values.flags.writeable):
            return False
        mixed = pd.DataFrame({"a": [1.0, 2.0], "b": [1, 2]})
        for probe in (built, built[["b", "a"]], mixed, mixed[["a"]]):
            found = _internal_values(probe)
            if not (found.shape == probe.shape and np.array_equal(found, probe.values)
                    and (probe is mixed or np.shares_memory(found, probe.values))):
                return False
        edits = (lambda f: setattr(f, "columns", ["x", "y"]), lambda f: setattr(f, "index", [7, 8, 9]),
                 lambda f: f.__setitem__("c", 1.0), lambda f: f.__setitem__("a", 1.0),
                 lambda f: f.__delitem__("a"), lambda f: f.insert(0, "z", 1.0), lambda f: f.pop("b"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for edit in edits:
                frame = _internal_frame(block, index, columns)
                before = _internal_stamp(frame)
                if not _internal_unchanged(frame, before):
                    return False
                edit(frame)
                if _internal_unchanged(frame, before):
                    return False
        return True
    except Exception:  # noqa: BLE001 - any surprise means: use the public API
        return False


USES_INTERNALS = not PORTABLE and _internals_work()
"""True when frames are built and checked through pandas' block manager (see the module docstring); never with
``RAYBT_PORTABLE=1`` (:mod:`raybt._accel`): the public twins then."""

if USES_INTERNALS:
    frame, stamp, unchanged, values = _internal_frame, _internal_stamp, _internal_unchanged, _internal_values
else:  # pragma: no cover - depends on the pandas version
    frame, stamp, unchanged = _public_frame, _public_stamp, _public_unchanged
    values = pd.DataFrame.values.fget
