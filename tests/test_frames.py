"""raybt._frames: single-block DataFrames built and checked through pandas internals, and the public fallback."""

import warnings

import numpy as np
import pandas as pd
import pytest

from raybt._accel import frames as _frames

IMPLEMENTATIONS = {
    "internals": (_frames._internal_frame, _frames._internal_stamp, _frames._internal_unchanged,
                  _frames._internal_values),
    "public": (_frames._public_frame, _frames._public_stamp, _frames._public_unchanged, pd.DataFrame.values.fget),
}


def _block(n_columns: int = 2, n_bars: int = 5) -> np.ndarray:
    block = np.arange(float(n_columns * n_bars)).reshape(n_columns, n_bars)
    block.flags.writeable = False
    return block


def test_the_installed_pandas_takes_the_fast_path():
    """The import-time self-check passed on the pandas this project installs (else every frame is 5-7 µs slower)."""
    assert _frames.USES_INTERNALS
    assert _frames.frame is _frames._internal_frame


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_frame_presents_the_block_on_the_given_labels_without_a_copy(impl):
    build, stamp, unchanged, values = IMPLEMENTATIONS[impl]
    block = _block()
    index, columns = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC"), pd.Index(["A", "B"])
    frame = build(block, index, columns)
    expected = pd.DataFrame({"A": block[0], "B": block[1]}, index=index)
    pd.testing.assert_frame_equal(frame, expected)
    assert frame.index is index and frame.columns is columns
    assert np.shares_memory(frame.to_numpy(), block)
    np.testing.assert_array_equal(values(frame), block.T)
    with pytest.raises(ValueError, match="read-only"):
        frame.iloc[0, 0] = -1.0
    assert unchanged(frame, stamp(frame))


EDITS = {
    "relabel columns": lambda f: setattr(f, "columns", ["x", "y"]),
    "relabel index": lambda f: setattr(f, "index", f.index + 10),
    "add column": lambda f: f.__setitem__("C", 1.0),
    "replace column": lambda f: f.__setitem__("A", 0.0),
    "delete column": lambda f: f.__delitem__("A"),
    "insert column": lambda f: f.insert(0, "Z", 2.0),
    "pop column": lambda f: f.pop("B"),
    "rename in place": lambda f: f.rename(columns={"A": "Q"}, inplace=True),
    "drop in place": lambda f: f.drop(columns="B", inplace=True),
    "sort in place": lambda f: f.sort_index(ascending=False, inplace=True),
}


@pytest.mark.parametrize("edit", EDITS)
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_every_edit_of_what_a_frame_presents_fails_the_check(impl, edit):
    build, stamp, unchanged, _ = IMPLEMENTATIONS[impl]
    frame = build(_block(), pd.RangeIndex(5), pd.Index(["A", "B"]))
    before = stamp(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas deprecates some inplace keywords
        EDITS[edit](frame)
    assert not unchanged(frame, before)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_reading_a_frame_does_not_fail_the_check(impl):
    build, stamp, unchanged, _ = IMPLEMENTATIONS[impl]
    frame = build(_block(), pd.RangeIndex(5), pd.Index(["A", "B"]))
    before = stamp(frame)
    _ = frame.values, frame["A"], frame.iloc[1:3], frame.sum(), frame.shift(1), frame > 2, frame.copy()
    assert unchanged(frame, before)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_values_of_frames_of_any_layout_equal_pandas_values(impl):
    _, _, _, values = IMPLEMENTATIONS[impl]
    mixed = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4, 5, 6], "c": [7.0, 8.0, 9.0]})
    single = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["x", "y", "z"])
    for frame in (mixed, mixed[["c", "a"]], single, single[["z", "x"]], single.T, single.iloc[1:3], mixed[[]]):
        found = values(frame)
        assert found.shape == frame.shape
        np.testing.assert_array_equal(found, frame.values)
