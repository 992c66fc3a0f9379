"""indicators.pair_crossings: the crossings of many pairs of columns in one pass equal crossed_above/crossed_below
of each pair (and the numpy formula), NaN and ties included, on any input layout; bad input is named."""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

from raybt import indicators as ind
from raybt.indicators import functions


def _values(n_bars: int = 400, n_columns: int = 7, seed: int = 5) -> np.ndarray:
    """Columns of rounded random walks (many exact ties between columns), with NaN warm-ups of several lengths, a
    NaN gap, an all-NaN column, infinities and a column equal to another."""
    rng = np.random.default_rng(seed)
    values = np.round(np.cumsum(rng.standard_normal((n_bars, n_columns)), axis=0) / 4, 1)
    values[:30, 1] = np.nan
    values[:90, 2] = np.nan
    values[200:205, 3] = np.nan
    values[:, 4] = np.nan
    values[[50, 51, 300], 5] = np.inf
    values[[52, 301], 5] = -np.inf
    values[:, 6] = values[:, 0]
    return values


def _all_pairs(n_columns: int) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair, a column with itself included, in a shuffled sequence."""
    left, right = np.meshgrid(np.arange(n_columns), np.arange(n_columns), indexing="ij")
    order = np.random.default_rng(1).permutation(left.size)
    return left.ravel()[order], right.ravel()[order]


def _formula(a: np.ndarray, b: np.ndarray, above: bool) -> np.ndarray:
    """The crossing rule with numpy comparisons (NaN compares False); bar 0 False."""
    now, before = (np.greater, np.less_equal) if above else (np.less, np.greater_equal)
    out = np.zeros(a.shape, dtype=bool)
    out[1:] = now(a[1:], b[1:]) & before(a[:-1], b[:-1])
    return out


def test_every_pair_is_crossed_above_and_below_of_its_columns() -> None:
    values = _values()
    left, right = _all_pairs(values.shape[1])
    above, below = ind.pair_crossings(values, left, right)
    assert above.dtype == below.dtype == np.bool_
    assert above.shape == below.shape == (len(values), len(left))
    assert above.any() and below.any()  # the data has crossings
    for p, (i, j) in enumerate(zip(left, right)):
        a, b = values[:, i], values[:, j]
        np.testing.assert_array_equal(above[:, p], ind.crossed_above(a, b), err_msg=f"pair {p}: {i} vs {j}")
        np.testing.assert_array_equal(below[:, p], ind.crossed_below(a, b), err_msg=f"pair {p}: {i} vs {j}")
        np.testing.assert_array_equal(above[:, p], _formula(a, b, True))
        np.testing.assert_array_equal(below[:, p], _formula(a, b, False))


def test_ties_and_nan_follow_the_crossing_rules() -> None:
    values = np.array([[np.nan, 1.0], [2.0, 1.0], [1.0, 1.0], [2.0, 1.0], [0.0, 1.0], [np.nan, 1.0], [2.0, 1.0]])
    above, below = ind.pair_crossings(values, [0], [1])
    # bar 1: above, NaN before; bar 2: a tie, not below; bar 3: above after the tie; bar 4: below; bar 6: NaN before
    assert above[:, 0].tolist() == [False, False, False, True, False, False, False]
    assert below[:, 0].tolist() == [False, False, False, False, True, False, False]


def test_each_pairs_column_is_contiguous() -> None:
    above, below = ind.pair_crossings(_values(), [0, 1, 2], [3, 3, 0])
    for result in (above, below):
        assert result.flags.f_contiguous and result.T.flags.c_contiguous and result.flags.writeable


@pytest.mark.parametrize("layout", ["C", "F", "strided rows", "strided columns", "DataFrame", "integers"])
def test_any_input_layout_gives_the_same_crossings(layout: str) -> None:
    values = _values()
    arranged = {
        "C": np.ascontiguousarray(values),
        "F": np.asfortranarray(values),
        "strided rows": values[::2],
        "strided columns": values[:, ::-1],
        "DataFrame": pd.DataFrame(values),
        "integers": np.nan_to_num(values * 10, nan=0.0, posinf=99, neginf=-99).astype(np.int64),
    }[layout]
    left, right = _all_pairs(values.shape[1])
    above, below = ind.pair_crossings(arranged, left, right)
    plain = np.asarray(arranged, dtype=np.float64)
    for p, (i, j) in enumerate(zip(left, right)):
        np.testing.assert_array_equal(above[:, p], _formula(plain[:, i], plain[:, j], True))
        np.testing.assert_array_equal(below[:, p], _formula(plain[:, i], plain[:, j], False))


@pytest.mark.parametrize("n_bars, n_pairs", [(0, 3), (1, 3), (2, 3), (50, 0)])
def test_degenerate_shapes(n_bars: int, n_pairs: int) -> None:
    values = _values()[:n_bars, :3]
    above, below = ind.pair_crossings(values, np.zeros(n_pairs, dtype=int), np.ones(n_pairs, dtype=np.uint8))
    assert above.shape == below.shape == (n_bars, n_pairs)
    if n_bars and n_pairs:
        assert not above[0].any() and not below[0].any()


def test_more_pairs_than_a_block_visit_order_does_not_matter() -> None:
    values = _values(n_bars=400, n_columns=40, seed=9)
    rng = np.random.default_rng(3)
    left, right = rng.integers(0, 40, 500), rng.integers(0, 40, 500)
    above, below = ind.pair_crossings(values, left, right)
    for p in range(500):
        np.testing.assert_array_equal(above[:, p], _formula(values[:, left[p]], values[:, right[p]], True))
        np.testing.assert_array_equal(below[:, p], _formula(values[:, left[p]], values[:, right[p]], False))


@pytest.mark.parametrize("values, left, right, error, message", [
    (np.zeros(5), [0], [0], ValueError, "values must be 2-D"),
    (np.zeros((5, 2)), [0, 1], [1], ValueError, "same length"),
    (np.zeros((5, 2)), [0.0], [1], TypeError, "left must be a 1-D array of integer column positions"),
    (np.zeros((5, 2)), [0], [[1]], TypeError, "right must be a 1-D array"),
    (np.zeros((5, 2)), [0], [True], TypeError, "right must be a 1-D array of integer column positions, got bool"),
    (np.zeros((5, 2)), [0, 2], [1, 1], IndexError, "left holds column position 2, outside 0..1"),
    (np.zeros((5, 2)), [0], [-1], IndexError, "right holds column position -1"),
])
def test_bad_input_is_named(values, left, right, error, message) -> None:
    with pytest.raises(error, match=message):
        ind.pair_crossings(values, left, right)


def test_the_docstring_example_holds() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner()
    for test in finder.find(functions.pair_crossings, "pair_crossings", globs={}):
        runner.run(test)
    assert runner.summarize(verbose=False) == doctest.TestResults(failed=0, attempted=6)
