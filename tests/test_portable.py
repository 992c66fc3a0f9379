"""The portable twins (``RAYBT_PORTABLE=1``, :mod:`raybt._accel`) give the accelerations' results bit for bit.

One workload touches every acceleration: sweeps (the signal scan's intrinsics, the kernel compiled without reference
counting, the metrics scan's compress stores and bit casts, frames built through pandas internals), a backtest with
stops, every indicator on frames with gaps (the SMA's FMA division, outputs carved from huge-page slabs where the
machine has them) and the public metrics of a long curve (the sampled tail selection). It runs here and in a
subprocess in the other mode; every float must be equal bit for bit. Run under ``RAYBT_PORTABLE=1`` (CI's second
pass) the roles swap.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt import _accel, _jit
from raybt import indicators as ind
from raybt import metrics

_TESTS = Path(__file__).parent


class Probe(raybt.Strategy):
    """SMA/EMA crossings with every trading rule the engine recognises."""

    fast: int = 5
    slow: int = 40
    size: float = 1.0
    direction: str = "long"
    stop_loss: float | None = None
    take_profit: float | None = None
    trailing_stop: float | None = None

    def signals(self, data):
        fast = ind.sma(data.close, self.fast)
        slow = ind.ema(data.close, self.slow)
        return ind.crossed_above(fast, slow), ind.crossed_below(fast, slow)


def _strategies() -> list[Probe]:
    rules = [{}, {"direction": "both", "size": 0.5}, {"direction": "short", "stop_loss": 0.03, "take_profit": 0.05},
             {"trailing_stop": 0.04, "size": 0.7}, {"direction": "both", "stop_loss": 0.02, "trailing_stop": 0.03}]
    return [Probe(fast=fast, slow=slow, **rule) for fast, slow in ((3, 30), (8, 90), (20, 250)) for rule in rules]


def _indicator_values(close: pd.DataFrame, high: pd.DataFrame, low: pd.DataFrame) -> dict[str, np.ndarray]:
    values = {"sma3": ind.sma(close, 3), "sma200": ind.sma(close, 200), "wma": ind.wma(close, 30),
              "std": ind.rolling_std(close, 50), "ema": ind.ema(close, 20), "rsi": ind.rsi(close, 14),
              "atr": ind.atr(high, low, close, 14), "above": ind.crossed_above(ind.sma(close, 3), ind.sma(close, 200)),
              "below_level": ind.crossed_below(close, float(close.iloc[0, 0]))}
    for name, parts in (("bollinger", ind.bollinger(close, 20)), ("macd", ind.macd(close)),
                        ("stochastic", ind.stochastic(high, low, close))):
        values.update({f"{name}{i}": part for i, part in enumerate(parts)})
    return {name: np.asarray(value) for name, value in values.items()}


def fingerprint() -> dict[str, np.ndarray]:
    """Every result of the workload (see the module docstring) by name."""
    data = raybt.synthetic_ohlcv(["A", "B"], "2022-01-01", "2023-03-01", "1h", seed=19)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2022-11-01", "2023-03-01", name="winter")]
    out: dict[str, np.ndarray] = {}
    for fill in ("close", "next_open"):
        for per_symbol in (False, True):
            results = raybt.run_backtests(_strategies(), data, ranges, fees=0.001, slippage=0.0005, fill=fill,
                                          per_symbol=per_symbol, show_progress=False)
            rows = results.df.sort_values(["strategy_id", "range", *(["symbol"] if per_symbol else [])])
            out[f"sweep_{fill}_{per_symbol}"] = rows[list(metrics.METRIC_NAMES)].to_numpy(dtype=np.float64)
    one = raybt.run_backtest(Probe(fast=4, slow=60, direction="both", trailing_stop=0.02), data, ranges[0],
                             fees=0.001, fill="next_open")
    out["equity"] = one.equity.to_numpy()
    out["trades"] = one.trades.select_dtypes("number").to_numpy(dtype=np.float64)
    out["row"] = np.array([one.metrics[name] for name in metrics.METRIC_NAMES])
    gappy = data.close.T.copy()
    gappy[100:130, 0] = np.nan
    gappy[:500, 1] = np.nan
    gappy.flags.writeable = False  # read-only memory: eligible for the cache (and its slabs)
    frames = [pd.DataFrame(prices, index=data.index, columns=data.symbols, copy=False)
              for prices in (gappy, data.high.T, data.low.T)]
    out.update(_indicator_values(*frames))
    curve = 10_000 * np.cumprod(1 + np.random.default_rng(5).normal(0, 0.01, 50_000))
    out["curve"] = np.array([metrics.value_at_risk(curve), metrics.conditional_value_at_risk(curve, 0.01),
                             metrics.sharpe_ratio(curve, 8760), metrics.max_drawdown(curve)])
    return out


def _in_the_other_mode(tmp_path: Path) -> dict[str, np.ndarray]:
    saved = tmp_path / "other.npz"
    env = {**os.environ, "RAYBT_PORTABLE": "0" if _accel.PORTABLE else "1"}
    code = (f"import sys; sys.path.insert(0, {str(_TESTS)!r}); import numpy, test_portable as t; "
            f"numpy.savez({str(saved)!r}, **t.fingerprint())")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    with np.load(saved) as other:
        return dict(other)


def test_portable_twins_give_the_accelerations_results_bit_for_bit(tmp_path: Path) -> None:
    here, other = fingerprint(), _in_the_other_mode(tmp_path)
    assert here.keys() == other.keys()
    for name, value in here.items():
        assert value.shape == other[name].shape and value.dtype == other[name].dtype, name
        bits = value.view(np.uint64) if value.dtype == np.float64 else value
        assert np.array_equal(bits, other[name].view(np.uint64) if value.dtype == np.float64 else other[name]), name
    assert len(here["trades"]) > 10 and np.all(here["sweep_close_True"][:, metrics.METRIC_NAMES.index("n_trades")] > 0)


def test_portable_mode_uses_the_twins_and_its_own_cache_names(tmp_path: Path) -> None:
    code = ("import json, raybt; from raybt import _accel, _jit; from raybt._accel import frames, llvm, slabs; "
            "print(json.dumps([_accel.PORTABLE, _accel.NO_REFCOUNT, frames.USES_INTERNALS, slabs.SlabAllocator().enabled,"
            " llvm.signal_mask is llvm._signal_mask_plain, llvm.compress_split is llvm._compress_split_plain,"
            " llvm.divide_in_place is llvm._divide_in_place_plain, _jit.DIGEST]))")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "RAYBT_PORTABLE": "1"},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    portable, no_refcount, internals, carving, *plain, digest = json.loads(done.stdout)
    assert (portable, no_refcount, internals, carving) == (True, {}, False, False) and all(plain)
    assert digest == _jit.sources_digest(_jit.COMPILED_SOURCES, "portable") != \
        _jit.sources_digest(_jit.COMPILED_SOURCES, "fast")


@pytest.mark.parametrize("value, portable", [("", False), ("0", False), ("1", True), (" 1 ", True)])
def test_the_switch_reads_one_or_zero(monkeypatch: pytest.MonkeyPatch, value: str, portable: bool) -> None:
    monkeypatch.setenv("RAYBT_PORTABLE", value)
    assert _accel._portable_from_env() is portable


@pytest.mark.parametrize("value", ["true", "yes", "2", "on"])
def test_any_other_switch_value_is_an_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("RAYBT_PORTABLE", value)
    with pytest.raises(ValueError, match=f"RAYBT_PORTABLE must be 1 .* got '{value}'"):
        _accel._portable_from_env()
