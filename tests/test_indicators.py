"""Tests for raybt.indicators: values against plain pandas references, and the cache."""

from __future__ import annotations

import gc
import mmap
import weakref
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from raybt._accel import llvm
from raybt._accel import slabs as _slabs
from raybt import indicators as ind

N_BARS = 2_000
COLUMNS = ["A", "B", "C"]
LEADING_NAN = 50  # column "C" starts trading late
KINDS = ["frame", "series", "array2d", "array1d"]
RTOL = ATOL = 1e-9


# ---------------------------------------------------------------------------
# Data: read-only random walks, like market data coming from Ray's object store
# ---------------------------------------------------------------------------


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def _random_walks(seed: int) -> dict[str, np.ndarray]:
    """close/high/low/other as read-only (N_BARS, 3) arrays; column C leads with NaN."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((N_BARS, 3)), axis=0))
    high = close + np.abs(rng.normal(0.0, 0.5, close.shape))
    low = close - np.abs(rng.normal(0.0, 0.5, close.shape))
    # A second series that keeps crossing close.
    other = close + np.cumsum(0.3 * rng.standard_normal(close.shape), axis=0) * 0.05
    data = {"close": close, "high": high, "low": low, "other": other}
    for a in data.values():
        a[:LEADING_NAN, 2] = np.nan
    return {name: _readonly(a) for name, a in data.items()}


INDEX = pd.date_range("2024-01-01", periods=N_BARS, freq="h")
ARRAYS = _random_walks(seed=7)


def _as_kind(a: np.ndarray, kind: str) -> pd.DataFrame | pd.Series | np.ndarray:
    """Present a read-only (N_BARS, 3) array as ``kind``, without copying where possible."""
    if kind == "frame":
        return pd.DataFrame(a, index=INDEX, columns=COLUMNS, copy=False)
    if kind == "series":  # a strided, read-only view of column C
        return pd.Series(a[:, 2], index=INDEX, name="C", copy=False)
    if kind == "array2d":
        return a
    if kind == "array1d":  # a contiguous read-only column
        return _readonly(a[:, 2].copy())
    raise ValueError(kind)


def _inputs(kind: str) -> SimpleNamespace:
    return SimpleNamespace(**{name: _as_kind(a, kind) for name, a in ARRAYS.items()})


def _frames() -> SimpleNamespace:
    """Writable DataFrame copies for the pandas references."""
    return SimpleNamespace(
        **{name: pd.DataFrame(a.copy(), index=INDEX, columns=COLUMNS) for name, a in ARRAYS.items()}
    )


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test starts with an empty cache and the default limit."""
    limit_mb = ind.cache_info().limit / 2**20
    ind.clear_cache()
    yield
    ind.set_cache_limit(limit_mb)
    ind.clear_cache()


# ---------------------------------------------------------------------------
# Plain references
# ---------------------------------------------------------------------------


def _seeded_ewm(s: pd.Series, n: int, alpha: float) -> pd.Series:
    """Seed with the mean of the first n valid values, then pandas ewm(adjust=False).

    NaN bars are dropped first (the documented skip rule) and restored after.
    """
    valid = s.dropna()
    out = pd.Series(np.nan, index=s.index)
    if len(valid) < n:
        return out
    seeded = valid.iloc[n - 1 :].copy()
    seeded.iloc[0] = valid.iloc[:n].mean()
    out.loc[seeded.index] = seeded.ewm(alpha=alpha, adjust=False).mean()
    return out


def _ref_ema(df: pd.DataFrame, n: int) -> pd.DataFrame:
    return df.apply(lambda s: _seeded_ewm(s, n, 2.0 / (n + 1)))


def _wilder_loop(values: list[float], n: int) -> list[float]:
    """Wilder's smoothing written out: SMA seed, then (prev * (n - 1) + v) / n."""
    out = [np.nan] * len(values)
    for i in range(n - 1, len(values)):
        if i == n - 1:
            out[i] = sum(values[:n]) / n
        else:
            out[i] = (out[i - 1] * (n - 1) + values[i]) / n
    return out


def _ref_rsi(df: pd.DataFrame, n: int) -> pd.DataFrame:
    def one(s: pd.Series) -> pd.Series:
        valid = s.dropna()
        change = valid.diff().iloc[1:]
        gain = _wilder_loop(change.clip(lower=0).tolist(), n)
        loss = _wilder_loop((-change).clip(lower=0).tolist(), n)
        out = pd.Series(np.nan, index=s.index)
        out.loc[change.index] = [_rsi_value(g, l) for g, l in zip(gain, loss)]
        return out

    return df.apply(one)


def _rsi_value(avg_gain: float, avg_loss: float) -> float:
    if np.isnan(avg_gain):
        return np.nan
    if avg_loss > 0:
        return 100 - 100 / (1 + avg_gain / avg_loss)
    return 100.0 if avg_gain > 0 else 50.0


def _ref_atr(high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, n: int) -> pd.DataFrame:
    out = pd.DataFrame(np.nan, index=close.index, columns=close.columns)
    for col in close.columns:
        h, lo, c = high[col], low[col], close[col]
        ok = h.notna() & lo.notna() & c.notna()
        h, lo, c = h[ok], lo[ok], c[ok]
        prev = c.shift()
        tr = [
            max(hi - lw, abs(hi - pc), abs(lw - pc))
            for hi, lw, pc in zip(h.iloc[1:], lo.iloc[1:], prev.iloc[1:])
        ]
        out.loc[h.index[1:], col] = _wilder_loop(tr, n)
    return out


def _ref_stochastic(
    high: pd.DataFrame, low: pd.DataFrame, close: pd.DataFrame, k: int, d: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    hh = high.rolling(k).max()
    ll = low.rolling(k).min()
    pct_k = (100 * (close - ll) / (hh - ll)).mask(hh == ll, 50.0)
    return pct_k, pct_k.rolling(d).mean()


def _ref_macd(df: pd.DataFrame, fast: int, slow: int, signal: int) -> tuple[pd.DataFrame, ...]:
    line = _ref_ema(df, fast) - _ref_ema(df, slow)
    sig = _ref_ema(line, signal)
    return line, sig, line - sig


def _ref_bollinger(df: pd.DataFrame, n: int, k: float) -> tuple[pd.DataFrame, ...]:
    mid = df.rolling(n).mean()
    sd = df.rolling(n).std(ddof=0)
    return mid, mid + k * sd, mid - k * sd


def _ref_crossed(a: pd.DataFrame, b, above: bool) -> pd.DataFrame:
    b_prev = b.shift() if isinstance(b, pd.DataFrame) else b
    if above:
        return (a > b) & (a.shift() <= b_prev)
    return (a < b) & (a.shift() >= b_prev)


def _weights_mean(n: int) -> Callable[[np.ndarray], float]:
    w = np.arange(1.0, n + 1)
    return lambda window: float(window @ w / w.sum())


# name -> (call on inputs of one kind, reference on writable DataFrames)
CASES: dict[str, tuple[Callable, Callable]] = {
    "sma": (lambda d: ind.sma(d.close, 20), lambda r: r.close.rolling(20).mean()),
    "sma_1": (lambda d: ind.sma(d.close, 1), lambda r: r.close),
    "ema": (lambda d: ind.ema(d.close, 12), lambda r: _ref_ema(r.close, 12)),
    "wma": (
        lambda d: ind.wma(d.close, 10),
        lambda r: r.close.rolling(10).apply(_weights_mean(10), raw=True),
    ),
    "rolling_std": (
        lambda d: ind.rolling_std(d.close, 20),
        lambda r: r.close.rolling(20).std(),
    ),
    "rolling_std_ddof0": (
        lambda d: ind.rolling_std(d.close, 15, ddof=0),
        lambda r: r.close.rolling(15).std(ddof=0),
    ),
    "rsi": (lambda d: ind.rsi(d.close, 14), lambda r: _ref_rsi(r.close, 14)),
    "atr": (
        lambda d: ind.atr(d.high, d.low, d.close, 14),
        lambda r: _ref_atr(r.high, r.low, r.close, 14),
    ),
    "bollinger": (
        lambda d: ind.bollinger(d.close, 20, 2.0),
        lambda r: _ref_bollinger(r.close, 20, 2.0),
    ),
    "macd": (lambda d: ind.macd(d.close), lambda r: _ref_macd(r.close, 12, 26, 9)),
    "stochastic": (
        lambda d: ind.stochastic(d.high, d.low, d.close, 14, 3),
        lambda r: _ref_stochastic(r.high, r.low, r.close, 14, 3),
    ),
    "crossed_above": (
        lambda d: ind.crossed_above(d.close, d.other),
        lambda r: _ref_crossed(r.close, r.other, above=True),
    ),
    "crossed_below": (
        lambda d: ind.crossed_below(d.close, d.other),
        lambda r: _ref_crossed(r.close, r.other, above=False),
    ),
    "crossed_above_level": (
        lambda d: ind.crossed_above(d.close, 100.0),
        lambda r: _ref_crossed(r.close, 100.0, above=True),
    ),
    "crossed_below_level": (
        lambda d: ind.crossed_below(d.close, 100),
        lambda r: _ref_crossed(r.close, 100.0, above=False),
    ),
}


@cache
def _reference(case: str) -> tuple[pd.DataFrame, ...]:
    expected = CASES[case][1](_frames())
    return expected if isinstance(expected, tuple) else (expected,)


def _expected_as_kind(expected: pd.DataFrame, kind: str) -> pd.DataFrame | pd.Series:
    return expected["C"] if kind in ("series", "array1d") else expected


def _assert_like(result, expected: pd.DataFrame | pd.Series, like) -> None:
    """Same kind/labels as ``like`` and values of ``expected`` to 1e-9."""
    assert type(result) is type(like)
    assert result.shape == like.shape
    if isinstance(like, pd.DataFrame):
        assert result.index.equals(like.index) and result.columns.equals(like.columns)
    if isinstance(like, pd.Series):
        assert result.index.equals(like.index) and result.name == like.name
    values = np.asarray(result)
    want = expected.to_numpy()
    if want.dtype == bool:
        assert values.dtype == bool
        np.testing.assert_array_equal(values, want)
    else:
        assert values.dtype == np.float64
        np.testing.assert_allclose(values, want.astype(float), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pandas_reference(case: str, kind: str) -> None:
    data = _inputs(kind)
    result = CASES[case][0](data)
    results = result if isinstance(result, tuple) else (result,)
    expected = _reference(case)
    assert len(results) == len(expected)
    for res, exp in zip(results, expected):
        _assert_like(res, _expected_as_kind(exp, kind), data.close)


def test_references_are_not_trivial() -> None:
    crossings = _reference("crossed_above")[0]
    assert 20 < crossings.to_numpy().sum() < N_BARS
    assert _reference("crossed_above_level")[0].to_numpy().sum() > 0
    assert _reference("rsi")[0].notna().to_numpy().sum() > 5_000


@pytest.mark.parametrize("case", list(CASES))
def test_writable_input_gives_same_values(case: str) -> None:
    """Kernels accept writable as well as read-only arrays (a separate numba type)."""
    writable = SimpleNamespace(**{name: a.copy() for name, a in ARRAYS.items()})
    readonly = SimpleNamespace(**ARRAYS)
    got, want = CASES[case][0](writable), CASES[case][0](readonly)
    for g, w in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, want))):
        assert g.flags.writeable
        np.testing.assert_array_equal(g, w)


def test_warm_up_starts_at_first_valid_value() -> None:
    close = _inputs("frame").close
    n = 20
    for result, first in [
        (ind.sma(close, n), n - 1),
        (ind.wma(close, n), n - 1),
        (ind.rolling_std(close, n), n - 1),
        (ind.ema(close, n), n - 1),
        (ind.rsi(close, n), n),
        (ind.atr(close, close, close, n), n),
    ]:
        valid = result.notna().to_numpy()
        assert not valid[:first, 0].any() and valid[first:, 0].all()
        start = LEADING_NAN + first
        assert not valid[:start, 2].any() and valid[start:, 2].all()


def test_ema_first_value_is_sma_seed() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    out = ind.ema(x, 3)
    assert np.isnan(out[:2]).all()
    assert out[2] == 2.0
    assert out[3] == pytest.approx(0.5 * 2.0 + 0.5 * 4.0)
    assert out[4] == pytest.approx(0.5 * 3.0 + 0.5 * 10.0)


def test_interior_nan_rules() -> None:
    """Rolling windows containing NaN are NaN; recursive indicators skip NaN bars."""
    x = ARRAYS["close"][:, 0].copy()
    x[[300, 301, 700]] = np.nan
    s = pd.Series(x)
    np.testing.assert_allclose(ind.sma(x, 10), s.rolling(10).mean(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ind.rolling_std(x, 10), s.rolling(10).std(), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(ind.ema(x, 10), _seeded_ewm(s, 10, 2 / 11), rtol=RTOL, atol=ATOL)
    frame = pd.DataFrame({"x": x})
    np.testing.assert_allclose(ind.rsi(x, 14), _ref_rsi(frame, 14)["x"], rtol=RTOL, atol=ATOL)


def test_long_series_stays_accurate() -> None:
    """Running sums are refreshed: no drift after a volatile, high-priced stretch."""
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [
            50_000 + np.cumsum(100 * rng.standard_normal(20_000)),
            10 + np.cumsum(0.01 * rng.standard_normal(23_800)),
        ]
    )
    windows = np.lib.stride_tricks.sliding_window_view(x, 20)[-5_000:]
    exact_mean = windows.mean(axis=1)
    exact_std = windows.std(axis=1, ddof=1)
    w = np.arange(1.0, 21)
    exact_wma = windows @ w / w.sum()
    np.testing.assert_allclose(ind.sma(x, 20)[-5_000:], exact_mean, rtol=1e-11)
    np.testing.assert_allclose(ind.rolling_std(x, 20)[-5_000:], exact_std, rtol=1e-9)
    np.testing.assert_allclose(ind.wma(x, 20)[-5_000:], exact_wma, rtol=1e-11)


def _assert_sma_is_rolling_mean(x: np.ndarray, n: int) -> None:
    """sma of a 1-D or 2-D array equals pandas' rolling(n).mean(): NaN at the same bars, values to 1e-11."""
    expected = pd.DataFrame(x).rolling(n).mean().to_numpy().reshape(x.shape)
    got = ind.sma(x, n)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=0.0)


@pytest.mark.parametrize("n", [1, 3, 20, 1023, 1024, 1500])
def test_sma_of_long_series_with_gaps_matches_pandas(n: int) -> None:
    """Series far longer than the running sums' refresh interval (max(n, 1024) bars), with NaN gaps of different
    lengths (a window containing a NaN is NaN; the warm-up restarts after it) and a full stretch to the end."""
    rng = np.random.default_rng(n)
    x = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal(40_000)))
    for start, length in ((0, 7), (9_000, 1), (9_003, 2), (17_500, 40), (30_001, 1_200)):
        x[start:start + length] = np.nan
    _assert_sma_is_rolling_mean(x, n)


def test_sma_division_is_bit_exact() -> None:
    """sma divides its window sums through the reciprocal with an FMA correction: every quotient must equal
    numpy's division (IEEE, correctly rounded) bit for bit, for windows 1..3000 and sums of any magnitude and sign."""
    rng = np.random.default_rng(11)
    sums = np.concatenate([rng.uniform(-1.0, 1.0, 600) * 10.0 ** rng.integers(-300, 300, 600),
                           rng.uniform(0.0, 1e7, 400), [0.0, -0.0, 1.0, 3.0, 2.0**52, 5e-324]])
    for n in range(1, 3001):
        for divide in (llvm._divide_in_place_fast, llvm._divide_in_place_plain):
            got = sums.copy()
            divide(got, 0, got.size, n)
            assert np.array_equal(got.view(np.int64), (sums / n).view(np.int64)), f"n={n}"


@pytest.mark.parametrize("layout", ["contiguous columns", "strided columns"])
def test_sma_of_several_long_columns_matches_pandas(layout: str) -> None:
    """Both kernels (contiguous columns, and any layout) on 3 columns of 20,000 bars with gaps and a late start."""
    rng = np.random.default_rng(5)
    wide = 100.0 * np.exp(np.cumsum(0.01 * rng.standard_normal((3, 20_100)), axis=1))
    wide[1, 7_000:7_003] = np.nan
    wide[2, :900] = np.nan
    x = np.ascontiguousarray(wide[:, 100:]).T if layout == "contiguous columns" else wide[:, 100:].T
    assert x.T.flags.c_contiguous == (layout == "contiguous columns")
    for n in (4, 30, 1100):
        _assert_sma_is_rolling_mean(x, n)


def test_flat_prices() -> None:
    flat = np.full(50, 7.0)
    assert (ind.rsi(flat, 14)[14:] == 50.0).all()
    assert (ind.rsi(np.arange(50.0), 14)[14:] == 100.0).all()
    pct_k, pct_d = ind.stochastic(flat, flat, flat, 5, 3)
    assert (pct_k[4:] == 50.0).all() and (pct_d[6:] == 50.0).all()
    np.testing.assert_allclose(ind.rolling_std(flat, 5)[4:], 0.0, atol=1e-12)


def test_input_validation() -> None:
    close = ARRAYS["close"]
    with pytest.raises(ValueError):
        ind.sma(close, 0)
    with pytest.raises(TypeError):
        ind.sma(close, 2.5)
    with pytest.raises(ValueError):
        ind.rolling_std(close, 3, ddof=3)
    with pytest.raises(ValueError, match="shape"):
        ind.atr(close, close[:-1], close)
    with pytest.raises(TypeError):
        ind.sma([1.0, 2.0, 3.0], 2)
    with pytest.raises(ValueError):
        ind.sma(np.zeros((2, 2, 2)), 1)


# ---------------------------------------------------------------------------
# Fast paths: fused crossing kernel, output wrapping
# ---------------------------------------------------------------------------


def _np_crossed(a: np.ndarray, b, above: bool) -> np.ndarray:
    """The crossing formula with numpy ufuncs (NaN compares False), bar 0 False."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    cur_b, prev_b = (b, b) if b.ndim == 0 else (b[1:], b[:-1])
    now, before = (np.greater, np.less_equal) if above else (np.less, np.greater_equal)
    out = np.zeros(a.shape, dtype=bool)
    if len(a):
        out[1:] = now(a[1:], cur_b) & before(a[:-1], prev_b)
    return out


def _crossing_inputs() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Pairs with ties, NaN, infinities and every memory layout the kernel may meet."""
    rng = np.random.default_rng(11)
    a = np.round(rng.standard_normal((300, 3)), 1)  # rounded: many exact ties
    b = np.round(rng.standard_normal((300, 3)), 1)
    a[[5, 6, 40], 0] = np.nan
    b[[7, 41], 1] = np.nan
    a[[60, 90], 2] = np.inf
    b[[61, 91], 2] = -np.inf
    return [
        ("C-ordered", a, b),
        ("F-ordered", np.asfortranarray(a), np.asfortranarray(b)),
        ("mixed orders", a, np.asfortranarray(b)),
        ("strided rows", a[::3], b[1::3]),
        ("strided columns", a[:, ::2], b[:, 1:]),
        ("one row", a[:1], b[:1]),
        ("two rows", a[:2], b[:2]),
        ("no rows", a[:0], b[:0]),
        ("integers", np.arange(-6, 6).reshape(4, 3), np.zeros((4, 3), dtype=np.int64)),
        ("1-D", a[:, 0].copy(), b[:, 0].copy()),
    ]


@pytest.mark.parametrize("above", [True, False])
@pytest.mark.parametrize("label, a, b", _crossing_inputs(), ids=[c[0] for c in _crossing_inputs()])
def test_crossings_match_the_formula_on_any_layout(label: str, a, b, above: bool) -> None:
    fn = ind.crossed_above if above else ind.crossed_below
    got = fn(a, b)
    assert got.dtype == np.bool_ and got.shape == a.shape
    np.testing.assert_array_equal(got, _np_crossed(a, b, above))
    for level in (0.0, 0, np.inf, -np.inf, np.nan, True):
        np.testing.assert_array_equal(fn(a, level), _np_crossed(a, level, above))


def test_dataframe_outputs_keep_the_input_labels_and_one_block() -> None:
    """A wrapped output is a plain DataFrame on the input's very index/columns objects, one block, no copy."""
    close = _inputs("frame").close
    other = _inputs("frame").other
    for result, expected in [
        (ind.sma(close, 20), _frames().close.rolling(20).mean()),
        (ind.crossed_above(close, other), _ref_crossed(_frames().close, _frames().other, above=True)),
        (ind.crossed_below(close, 100.0), _ref_crossed(_frames().close, 100.0, above=False)),
    ]:
        assert type(result) is pd.DataFrame
        assert result.index is close.index and result.columns is close.columns
        pd.testing.assert_frame_equal(result, expected, check_exact=expected.dtypes.iloc[0] == bool,
                                      rtol=RTOL, atol=ATOL)
        assert len({id(dtype) for dtype in result.dtypes}) == 1  # one dtype: one block
        values = result.to_numpy()
        assert np.shares_memory(values, result.to_numpy())  # a view, not an interleaved copy
        assert values.flags.f_contiguous  # each symbol's column contiguous
    series = ind.crossed_above(_inputs("series").close, 100.0)
    assert series.index is INDEX and series.name == "C"


def test_crossings_are_not_cached() -> None:
    """Each call hands out a new writable result; the cache neither keeps nor counts crossings."""
    close = _inputs("frame").close
    fast, slow = ind.sma(close, 5), ind.sma(close, 20)
    assert ind.cache_info()[:3] == (0, 2, 2)
    bytes_before = ind.cache_info().bytes
    first = ind.crossed_above(fast, slow)
    pd.testing.assert_frame_equal(first, _ref_crossed(fast, slow, above=True))
    again = ind.crossed_above(fast, slow)
    assert again is not first and not np.shares_memory(again.to_numpy(), first.to_numpy())
    pd.testing.assert_frame_equal(again, first)
    assert _root_writeable(first.to_numpy())  # the caller's own array
    info = ind.cache_info()
    assert (info.entries, info.bytes) == (2, bytes_before)
    first.iloc[0, 0] = True  # the caller may write it: nobody else sees it
    assert not ind.crossed_above(fast, slow).iloc[0, 0]


@pytest.mark.parametrize("level", [None, 100.0])
def test_the_other_crossing_of_a_pair_is_computed_ahead(level) -> None:
    """crossed_below(f, s) right after crossed_above(f, s) (or the reverse) is served from the same pass."""
    close = _inputs("frame").close
    fast, slow = ind.sma(close, 5), ind.sma(close, 20)
    rhs = slow if level is None else level
    ref = _ref_crossed(fast, rhs if level is None else level, above=False)
    up = ind.crossed_above(fast, rhs)
    misses = ind.cache_info().misses
    down = ind.crossed_below(fast, rhs)
    assert ind.cache_info().misses == misses  # taken, not computed
    pd.testing.assert_frame_equal(down, ref)
    assert down.index is close.index and down.columns is close.columns
    assert not np.shares_memory(down.to_numpy(), up.to_numpy())
    misses = ind.cache_info().misses
    pd.testing.assert_frame_equal(ind.crossed_below(fast, rhs), ref)  # taken once: computed again
    assert ind.cache_info().misses == misses + 1
    # the reverse order, and only for the very same inputs
    ind.clear_cache()
    fast, slow = ind.sma(close, 5), ind.sma(close, 20)
    rhs = slow if level is None else level
    ind.crossed_below(fast, rhs)
    other = ind.sma(close, 6)
    misses = ind.cache_info().misses
    ind.crossed_above(other, rhs)
    assert ind.cache_info().misses == misses + 1
    up = ind.crossed_above(fast, rhs)  # the slot now holds other's pair: computed again
    assert ind.cache_info().misses == misses + 2
    pd.testing.assert_frame_equal(up, _ref_crossed(fast, rhs, above=True))


def test_a_computed_ahead_crossing_is_not_used_for_changed_inputs() -> None:
    frame = _frame(ARRAYS["close"])
    other = _frame(ARRAYS["other"])
    ind.crossed_above(frame, other)
    frame.columns = ["x", "y", "z"]  # relabelled in place: same object, other labels
    misses = ind.cache_info().misses
    down = ind.crossed_below(frame, other)
    assert ind.cache_info().misses == misses + 1
    assert list(down.columns) == ["x", "y", "z"]
    expected = _ref_crossed(_frames().close, _frames().other, above=False)
    np.testing.assert_array_equal(down.to_numpy(), expected.to_numpy())


def test_crossings_of_writable_inputs_are_not_computed_ahead() -> None:
    a, b = ARRAYS["close"].copy(), ARRAYS["other"].copy()
    up = ind.crossed_above(a, b)
    assert ind.crossed_below(a, b) is not None and ind.cache_info()[:3] == (0, 0, 0)
    assert up.flags.writeable and ind.crossed_above(a, b) is not up
    a[:] = 0.0
    b[:] = 1.0
    assert not ind.crossed_below(a, b).any()  # nothing computed ahead from the old values


def _read_only(values: np.ndarray) -> np.ndarray:
    out = np.array(values, dtype=float)
    out.flags.writeable = False
    return out


@pytest.mark.parametrize("level", [None, 75.0])
def test_the_other_crossing_over_the_same_arrays_is_taken_and_right(level) -> None:
    """The same two read-only arrays (or an array and a level): the second call takes the parked crossing."""
    a, b = _read_only(ARRAYS["close"]), _read_only(ARRAYS["other"])
    rhs = b if level is None else level
    ind.crossed_above(a, rhs)
    hits, misses = ind.cache_info()[:2]
    down = ind.crossed_below(a, rhs)
    assert ind.cache_info()[:2] == (hits + 1, misses)
    np.testing.assert_array_equal(down, _np_crossed(a, rhs, above=False))
    ind.crossed_below(a, rhs)  # taken once: computed again
    assert ind.cache_info()[:2] == (hits + 1, misses + 1)


@pytest.mark.parametrize("change", ["made writable and written", "another layout", "another level"])
def test_the_other_crossing_is_not_taken_for_arrays_changed_since(change) -> None:
    a, b = _read_only(ARRAYS["close"]), _read_only(ARRAYS["other"])
    rhs_before, rhs_after = (70.0, 80.0) if change == "another level" else (b, b)
    ind.crossed_above(a, rhs_before)
    if change == "made writable and written":
        b.flags.writeable = True  # its owner breaks the promise: the flag is checked again
        b[:] = 100.0
    elif change == "another layout":
        a.shape = b.shape = (a.size,)  # the same objects and memory
    down = ind.crossed_below(a, rhs_after)
    np.testing.assert_array_equal(down, _np_crossed(a, rhs_after, above=False))
    assert down.shape == a.shape and down.any()


# ---------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------


def _root_writeable(a: np.ndarray) -> bool:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return bool(a.flags.writeable)


def _frame(a: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(a, index=INDEX, columns=COLUMNS, copy=False)


OUTPUT_BYTES = N_BARS * 3 * 8  # one float64 frame like close


@pytest.mark.parametrize("kind", KINDS)
def test_repeat_call_is_a_hit_returning_the_same_object(kind: str) -> None:
    close = _inputs(kind).close
    first = ind.sma(close, 20)
    assert ind.cache_info()[:3] == (0, 1, 1)
    for _ in range(3):
        assert ind.sma(close, 20) is first
    info = ind.cache_info()
    assert (info.hits, info.misses, info.entries) == (3, 1, 1)
    assert info.bytes == np.asarray(first).nbytes


def test_tuple_results_are_cached_whole() -> None:
    close = _inputs("frame").close
    bands = ind.bollinger(close, 20)
    again = ind.bollinger(close, 20)
    assert again is bands and ind.cache_info().hits == 1
    assert ind.cache_info().bytes == 3 * OUTPUT_BYTES
    assert ind.macd(close) is ind.macd(close)


def test_other_params_slices_and_data_are_recomputed() -> None:
    close = _inputs("frame").close
    reference = _frames().close
    ind.sma(close, 20)
    cases = [
        (ind.sma(close, 10), reference.rolling(10).mean()),
        (ind.sma(close.iloc[100:], 20), reference.iloc[100:].rolling(20).mean()),
        (ind.ema(close, 20), _ref_ema(reference, 20)),
    ]
    other = _frame(ARRAYS["other"])
    cases.append((ind.sma(other, 20), _frames().other.rolling(20).mean()))
    same_memory_new_object = _frame(ARRAYS["close"])
    cases.append((ind.sma(same_memory_new_object, 20), reference.rolling(20).mean()))
    info = ind.cache_info()
    assert (info.hits, info.misses, info.entries) == (0, 6, 6)
    for result, expected in cases:
        _assert_like(result, expected, expected)


@pytest.mark.parametrize("kind", ["frame", "array2d"])
def test_writable_inputs_are_never_cached(kind: str) -> None:
    memory = ARRAYS["close"].copy()
    x = _frame(memory) if kind == "frame" else memory
    first = ind.sma(x, 5)
    second = ind.sma(x, 5)
    assert second is not first
    assert ind.cache_info()[:3] == (0, 0, 0)
    assert _root_writeable(np.asarray(first))  # the caller owns uncached results
    memory[100:200] *= 2.0  # mutate in place; the frame sees it too
    expected = pd.DataFrame(memory.copy()).rolling(5).mean().to_numpy()
    np.testing.assert_allclose(np.asarray(ind.sma(x, 5)), expected, rtol=RTOL, atol=ATOL)


def test_read_only_view_of_writable_memory_is_not_cached() -> None:
    """pandas 3 to_numpy() is a read-only view even of writable memory: the root decides."""
    memory = ARRAYS["close"].copy()
    view = memory.view()
    view.setflags(write=False)
    frame = pd.DataFrame(memory, copy=False)
    if int(pd.__version__.split(".")[0]) >= 3:  # pandas 2 hands out a writable view, which is not cached either
        assert not frame.to_numpy().flags.writeable
    for x in (view, frame):
        ind.sma(x, 5)
        ind.sma(x, 5)
    assert ind.cache_info()[:3] == (0, 0, 0)
    memory[:] = 1.0
    np.testing.assert_allclose(ind.sma(view, 5)[4:], 1.0)


def test_cached_outputs_are_read_only() -> None:
    data = _inputs("frame")
    outputs = [
        ind.sma(data.close, 5),
        *ind.bollinger(data.close),
        *ind.stochastic(data.high, data.low, data.close),
    ]
    for out in outputs:
        assert not _root_writeable(out.to_numpy())
    arr = ind.ema(ARRAYS["close"], 5)
    with pytest.raises(ValueError):
        arr[10, 0] = 0.0
    column = ind.ema(_inputs("array1d").close, 5)
    assert not _root_writeable(column)


def test_chained_calls_are_cached() -> None:
    close = _inputs("frame").close
    first = ind.rsi(ind.sma(close, 5), 14)
    assert ind.cache_info()[:3] == (0, 2, 2)
    assert ind.rsi(ind.sma(close, 5), 14) is first
    assert ind.cache_info().hits == 2
    expected = _ref_rsi(_frames().close.rolling(5).mean(), 14)
    _assert_like(first, expected, close)


def test_multi_input_keys() -> None:
    data = _inputs("frame")
    first = ind.atr(data.high, data.low, data.close)
    assert ind.atr(data.high, data.low, data.close) is first
    assert ind.atr(data.low, data.high, data.close) is not first  # order matters
    writable_close = _frame(ARRAYS["close"].copy())
    ind.atr(data.high, data.low, writable_close)
    assert ind.cache_info()[:3] == (1, 2, 2)
    for level, same_level in ((100.0, 100), (np.nan, float("nan"))):  # the computed-ahead slot's key
        ind.crossed_above(data.close, level)
        misses = ind.cache_info().misses
        ind.crossed_below(data.close, same_level)
        assert ind.cache_info().misses == misses
    ind.crossed_above(data.close, 101.0)
    misses = ind.cache_info().misses
    ind.crossed_below(data.close, 100.0)
    assert ind.cache_info().misses == misses + 1


def test_lru_eviction_respects_limit() -> None:
    close = _inputs("frame").close
    ind.set_cache_limit(2.5 * OUTPUT_BYTES / 2**20)
    limit = ind.cache_info().limit
    first = {n: ind.sma(close, n) for n in (2, 3, 4)}  # 2 is evicted
    info = ind.cache_info()
    assert info.entries == 2 and info.bytes == 2 * OUTPUT_BYTES <= limit
    assert ind.sma(close, 3) is first[3]  # hit; 4 is now least recently used
    ind.sma(close, 5)  # evicts 4
    assert ind.sma(close, 3) is first[3]
    assert ind.sma(close, 4) is not first[4]
    assert ind.sma(close, 2) is not first[2]
    assert ind.cache_info().bytes <= limit

    too_big = ind.bollinger(close, 20)  # 3 frames > limit: returned, not stored
    assert ind.bollinger(close, 20) is not too_big
    assert ind.cache_info().bytes <= limit
    _assert_like(too_big[0], _frames().close.rolling(20).mean(), close)

    ind.set_cache_limit(0)
    assert ind.cache_info().entries == 0
    assert ind.sma(close, 3) is not ind.sma(close, 3)


LONG_BARS = 43_800  # one float64 column of it (350 KB) is carved from a slab


def _long_close() -> np.ndarray:
    rng = np.random.default_rng(7)
    return _readonly(100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, LONG_BARS))))


def _slab_of(result: np.ndarray) -> mmap.mmap | None:
    """The slab a result's memory was carved from (the end of its chain of bases), None if it has its own."""
    node: object = result
    while isinstance(node, (np.ndarray, memoryview)):
        node = node.base if isinstance(node, np.ndarray) else node.obj
    return node if isinstance(node, mmap.mmap) else None


@pytest.fixture
def carving(monkeypatch: pytest.MonkeyPatch) -> None:
    """Carve outputs on any machine (huge pages make carved outputs cheaper to fault in, not different)."""
    monkeypatch.setattr(ind._SLABS, "enabled", True)


def test_cached_long_outputs_are_carved_from_slabs_counted_whole(carving: None) -> None:
    close = _long_close()
    per_slab = _slabs.SLAB_BYTES // (LONG_BARS * 8)
    results = {n: ind.sma(close, n) for n in range(2, 3 + per_slab)}  # one more than a slab holds
    slabs = [_slab_of(r) for r in results.values()]
    assert slabs[0] is not None and all(slab is slabs[0] for slab in slabs[:-1])
    assert slabs[-1] is not None and slabs[-1] is not slabs[0]
    assert ind.cache_info().bytes == 2 * _slabs.SLAB_BYTES  # two slabs hold stored outputs
    for n, result in results.items():
        np.testing.assert_allclose(result, pd.Series(close).rolling(n).mean(), rtol=RTOL, atol=ATOL)
        assert not result.flags.writeable and ind.sma(close, n) is result
    assert _slab_of(ind.sma(close.copy(), 5)) is None  # writable input: not cached, not carved
    ind.set_cache_limit(_slabs.SLAB_BYTES * 15 / 2**20)  # under the least bound that carves
    assert _slab_of(ind.sma(close, 100)) is None
    assert ind.cache_info().bytes == 2 * _slabs.SLAB_BYTES + LONG_BARS * 8  # counted at its size


def test_eviction_frees_slabs_within_the_limit(carving: None) -> None:
    close = _long_close()
    ind.set_cache_limit(ind._CARVE_MIN_LIMIT / 2**20)
    limit = ind.cache_info().limit
    per_slab = _slabs.SLAB_BYTES // (LONG_BARS * 8)
    n_slabs = limit // _slabs.SLAB_BYTES + 3
    first_slab = weakref.ref(_slab_of(ind.sma(close, 2)))
    windows = range(3, 2 + n_slabs * per_slab)
    for n in windows:
        ind.sma(close, n)
        info = ind.cache_info()
        assert info.bytes <= limit
    kept = [n for n in (2, *windows) if ind._CACHE.lookup(("sma", (n,), (ind._operand(close, "x").state,)))]
    assert kept == list(range(kept[0], windows[-1] + 1))  # the most recent ones, in LRU order
    assert len(kept) >= (limit // _slabs.SLAB_BYTES - 1) * per_slab  # a slab is freed whole: at most one is short
    gc.collect()
    assert first_slab() is None  # its outputs were all evicted and nothing else holds them
    distinct = {id(_slab_of(ind.sma(close, n))) for n in kept}
    assert ind.cache_info().bytes == len(distinct) * _slabs.SLAB_BYTES


def test_outputs_fall_back_to_numpy_when_no_slab_can_be_mapped(carving: None, monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_mappings() -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(_slabs, "_map_slab", out_of_mappings)
    close = _long_close()
    result = ind.sma(close, 20)
    assert _slab_of(result) is None and ind.sma(close, 20) is result
    assert ind.cache_info().bytes == LONG_BARS * 8
    np.testing.assert_allclose(result, pd.Series(close).rolling(20).mean(), rtol=RTOL, atol=ATOL)


def test_clear_cache_unmaps_the_slabs(carving: None) -> None:
    close = _long_close()
    slab = weakref.ref(_slab_of(ind.sma(close, 20)))
    ind.clear_cache()
    gc.collect()
    assert slab() is None


def test_cache_keeps_inputs_alive_until_cleared() -> None:
    frame = _frame(ARRAYS["close"])
    ref = weakref.ref(frame)
    ind.sma(frame, 5)
    del frame
    gc.collect()
    assert ref() is not None  # id() cannot be reused while the entry lives
    ind.clear_cache()
    gc.collect()
    assert ref() is None
    assert ind.cache_info() == (0, 0, 0, 0, ind.cache_info().limit)


def test_in_place_changes_to_the_input_object_miss() -> None:
    frame = _frame(ARRAYS["close"])
    first = ind.sma(frame, 5)
    frame.columns = ["x", "y", "z"]
    relabelled = ind.sma(frame, 5)
    assert relabelled is not first and list(relabelled.columns) == ["x", "y", "z"]

    arr = ARRAYS["close"].view()
    first = ind.sma(arr, 5)
    arr.shape = (N_BARS // 2, 6)
    reshaped = ind.sma(arr, 5)
    assert reshaped is not first and reshaped.shape == (N_BARS // 2, 6)


def test_a_caller_changing_a_cached_frame_in_place_does_not_reach_later_calls() -> None:
    """A hit hands out the cached object only if it is as it was handed out; else a fresh wrapper."""
    close = _inputs("frame").close
    expected = _frames().close.rolling(20).mean()
    first = ind.sma(close, 20)
    first.columns = ["x", "y", "z"]  # relabelled in place by one caller
    second = ind.sma(close, 20)
    assert second is not first and second.columns is close.columns and second.index is close.index
    _assert_like(second, expected, close)
    assert np.shares_memory(second.to_numpy(), first.to_numpy())  # the cached memory, not a recomputation
    assert ind.sma(close, 20) is second  # the fresh wrapper is what hits hand out from now on
    second["A"] = 0.0  # a column replaced: same labels, other memory
    third = ind.sma(close, 20)
    assert third is not second
    _assert_like(third, expected, close)
    third["D"] = 1.0  # a column added
    fourth = ind.sma(close, 20)
    assert fourth is not third and list(fourth.columns) == COLUMNS
    fourth.index = INDEX + pd.Timedelta("1D")  # re-indexed
    fifth = ind.sma(close, 20)
    assert fifth.index is close.index
    _assert_like(fifth, expected, close)
    info = ind.cache_info()
    assert (info.hits, info.misses, info.entries) == (5, 1, 1)  # never recomputed


@pytest.mark.parametrize("kind", ["frame", "array2d"])
def test_a_cached_result_passed_on_is_inspected_once(kind: str) -> None:
    """A cached result taken as an input (the averages a crossing compares) reuses what was found when it was
    handed out, while it is untouched; changed in place, it is inspected afresh."""
    close = _inputs(kind).close
    fast, slow = ind.sma(close, 5), ind.sma(close, 20)
    known = ind._CACHE.operand_of(fast)
    assert known is not None and known.obj is fast and ind._operand(fast, "a") is known
    rsi = ind.rsi(fast, 14)
    assert ind.rsi(fast, 14) is rsi  # the same key from that record: a hit
    expected = _ref_rsi(_frames().close.rolling(5).mean(), 14).to_numpy()
    np.testing.assert_allclose(np.asarray(rsi), expected, rtol=RTOL, atol=ATOL)
    if kind == "frame":
        fast.columns = ["x", "y", "z"]
        assert ind._CACHE.operand_of(fast) is None
        again = ind.rsi(fast, 14)
        assert again is not rsi and list(again.columns) == ["x", "y", "z"]
        np.testing.assert_allclose(again.to_numpy(), expected, rtol=RTOL, atol=ATOL)
    else:
        fast.shape = (N_BARS, 3, 1)
        assert ind._CACHE.operand_of(fast) is None
        with pytest.raises(ValueError, match="1-D or 2-D"):
            ind.rsi(fast, 14)
    ref = weakref.ref(slow)
    del fast, slow, rsi, known
    ind.clear_cache()
    gc.collect()
    assert ref() is None  # the record of what was handed out goes with the entry


def test_a_changed_cached_series_array_or_tuple_is_replaced_too() -> None:
    series = _inputs("series").close
    first = ind.ema(series, 10)
    first.name = "renamed"
    again = ind.ema(series, 10)
    assert again is not first and again.name == "C" and again.index is series.index
    _assert_like(again, _ref_ema(_frames().close, 10)["C"], series)

    arr = ARRAYS["close"]
    first = ind.sma(arr, 5)
    first.shape = (N_BARS, 3, 1)  # reshaped in place (a view: the cached memory is untouched)
    again = ind.sma(arr, 5)
    assert again is not first and again.shape == (N_BARS, 3)
    np.testing.assert_allclose(again, _frames().close.rolling(5).mean().to_numpy(), rtol=RTOL, atol=ATOL)

    close = _inputs("frame").close
    bands = ind.bollinger(close, 20)
    bands[1]["A"] = 0.0  # one of the three changed: all three are wrapped afresh
    again = ind.bollinger(close, 20)
    assert all(a is not b for a, b in zip(again, bands))
    for got, want in zip(again, _ref_bollinger(_frames().close, 20, 2.0)):
        _assert_like(got, want, close)


def test_crossings_of_ties_between_infinities_and_signed_zeros() -> None:
    """Equal infinities and 0.0 == -0.0 are ties (at or above and at or below), not unordered."""
    inf = np.inf
    a = np.array([inf, inf, 1.0, inf, -inf, -inf, 0.0, -0.0, 1.0, 0.0, np.nan, 1.0])
    b = np.array([inf, 0.0, inf, inf, -inf, 0.0, -0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    for above in (True, False):
        fn = ind.crossed_above if above else ind.crossed_below
        np.testing.assert_array_equal(fn(a, b), _np_crossed(a, b, above))
        for level in (inf, -inf, 0.0, -0.0):
            np.testing.assert_array_equal(fn(a, level), _np_crossed(a, level, above))


def test_cache_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYBT_INDICATOR_CACHE_MB", "3")
    assert ind._limit_from_env() == 3 * 2**20
    monkeypatch.delenv("RAYBT_INDICATOR_CACHE_MB")
    assert ind._limit_from_env() == 256 * 2**20
    monkeypatch.setenv("RAYBT_INDICATOR_CACHE_MB", "lots")
    with pytest.warns(RuntimeWarning):
        assert ind._limit_from_env() == 256 * 2**20
    with pytest.raises(ValueError):
        ind.set_cache_limit(-1)


COMPILES_OF_IMPORT_THEN_SMA = """
import numpy as np
from numba.core import event

def compiled(action):
    with event.install_recorder("numba:compile") as recorder:
        action()
    return sorted({str(e.data["dispatcher"]).split(" ")[1] for _, e in recorder.buffer if e.is_start})

print(compiled(lambda: __import__("raybt")))
import raybt
print(compiled(lambda: raybt.indicators.sma(np.arange(60.0).reshape(30, 2), 5)))
"""


def test_importing_raybt_compiles_nothing_and_an_indicator_compiles_its_own_kernels(tmp_path):
    """With an empty numba cache (a fresh install), ``import raybt`` compiles no kernel: the indicator kernels,
    declared with one signature each, compile on their first call (a first sweep of SMA crossings does not wait
    for the stochastic oscillator's). The first ``sma`` call compiles the SMA kernels only."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    done = subprocess.run([sys.executable, "-c", COMPILES_OF_IMPORT_THEN_SMA], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    at_import, at_sma = done.stdout.splitlines()
    assert at_import == "[]"
    others = ("_wma_", "_ema_", "_std_", "_bollinger_", "_macd_", "_rsi_", "_atr_", "_stochastic_", "_crossings_")
    assert "_sma_" in at_sma and not any(name in at_sma for name in others), at_sma
