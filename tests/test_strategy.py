"""Strategy parameters, validation, immutability, ids, and signal normalisation."""

import pickle
import re
import subprocess
import sys
import textwrap
from typing import Literal, Optional

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt.demo import SmaCross, SmaCrossArrays
from raybt.strategy import SignalError, Strategy, signal_arrays


class Cross(Strategy):
    fast: int = 10
    slow: int = 50
    threshold: float = 0.0
    label: str = "x"
    stop_loss: Optional[float] = None

    def signals(self, data):
        return data.close > data.close.shift(1), data.close < data.close.shift(1)


# ------------------------------------------------------------------------------------------------ parameters

def test_params_defaults_and_overrides():
    s = Cross(fast=5)
    assert s.params == {"fast": 5, "slow": 50, "threshold": 0.0, "label": "x", "stop_loss": None}
    assert s.fast == 5 and s.slow == 50
    assert Cross(stop_loss=0.05).stop_loss == 0.05


def test_parameters_in_the_order_the_class_declares_them():
    """Keywords in any order, defaults or not: params, repr and a rebuilt instance (as a Ray worker makes one from
    packed parameter columns) list the parameters as the class declares them."""
    class Declared(Strategy):
        a: int
        b: int = 2
        c: int

    made = Declared(c=3, a=1)
    assert list(made.params) == ["a", "b", "c"] and repr(made).endswith(".Declared(a=1, b=2, c=3)")
    from raybt.batch import _pack_strategies, _unpack_strategies
    rebuilt = _unpack_strategies(*_pack_strategies([made]))[0]
    assert rebuilt == made and list(rebuilt.params) == ["a", "b", "c"]


def test_int_accepted_for_float_and_numpy_scalars_converted():
    s = Cross(threshold=1, fast=np.int64(7))
    assert s.threshold == 1.0 and isinstance(s.threshold, float)
    assert s.fast == 7 and type(s.fast) is int
    assert Cross(threshold=1).id == Cross(threshold=1.0).id


@pytest.mark.parametrize("kwargs, message", [
    ({"fast": 1.5}, "parameter 'fast' expects int, got float 1.5"),
    ({"fast": "10"}, "parameter 'fast' expects int, got str '10'"),
    ({"fast": True}, "parameter 'fast' expects int, got bool True"),
    ({"label": 3}, "parameter 'label' expects str, got int 3"),
    ({"stop_loss": "tight"}, r"parameter 'stop_loss' expects None \| float, got str 'tight'"),
    ({"fast": [1, 2]}, "parameter 'fast' must be an int, float, str, bool or None, got list"),
])
def test_wrong_types_raise_type_error_naming_the_parameter(kwargs, message):
    with pytest.raises(TypeError, match=message):
        Cross(**kwargs)


def test_unknown_and_missing_parameters():
    with pytest.raises(TypeError, match=r"Cross: unknown parameter\(s\) \['fats'\]"):
        Cross(fats=3)

    class NeedsWindow(Strategy):
        window: int

        def signals(self, data):
            return data.close > 0, data.close < 0

    with pytest.raises(TypeError, match=r"missing required parameter\(s\) \['window'\]"):
        NeedsWindow()
    assert NeedsWindow(window=3).window == 3


def test_literal_parameter():
    class Dir(Strategy):
        direction: Literal["long", "short", "both"] = "long"

        def signals(self, data):
            return data.close > 0, data.close < 0

    assert Dir(direction="short").direction == "short"
    with pytest.raises(ValueError, match="direction must be one of"):
        Dir(direction="sideways")


def test_default_of_wrong_type_is_caught_when_the_class_is_defined():
    with pytest.raises(TypeError, match="parameter 'n' expects int, got str"):
        class Broken(Strategy):
            n: int = "five"


@pytest.mark.parametrize("name", ["sharpe", "strategy_id", "error", "range", "n_trades", "id", "params"])
def test_parameter_colliding_with_a_result_column_is_an_error_at_definition(name):
    with pytest.raises(TypeError, match=f"parameter '{name}' collides"):
        type("Bad", (Strategy,), {"__annotations__": {name: int}, name: 1})


@pytest.mark.parametrize("kwargs, message", [
    ({"stop_loss": -0.1}, "stop_loss must be None or a positive fraction"),
])
def test_rule_values_validated(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Cross(**kwargs)


def test_rules_as_plain_class_attributes_are_not_parameters():
    class Fixed(Strategy):
        size = 0.5
        warmup = 20
        fast: int = 3

        def signals(self, data):
            return data.close > 0, data.close < 0

    s = Fixed()
    assert s.params == {"fast": 3} and s.size == 0.5 and s.warmup == 20
    with pytest.raises(ValueError, match="size must be a positive fraction"):
        type("Neg", (Fixed,), {"size": 0.0})()


# ------------------------------------------------------------------------------------------- immutability, id

def test_instances_are_immutable():
    s = Cross()
    with pytest.raises(AttributeError, match="immutable"):
        s.fast = 3
    with pytest.raises(AttributeError, match="immutable"):
        del s.fast
    s.params["fast"] = 99  # a copy
    assert s.fast == 10


def test_equality_hash_pickle():
    a, b = Cross(fast=3), Cross(fast=3)
    assert a == b and hash(a) == hash(b) and a != Cross(fast=4)
    c = pickle.loads(pickle.dumps(a))
    assert c == a and c.id == a.id


def test_id_depends_on_params_and_class_source():
    assert Cross(fast=3).id != Cross(fast=4).id
    assert len(Cross().id) == 16

    class Cross2(Strategy):  # same parameters, different code
        fast: int = 10
        slow: int = 50
        threshold: float = 0.0
        label: str = "x"
        stop_loss: Optional[float] = None

        def signals(self, data):
            return data.close < data.close.shift(1), data.close > data.close.shift(1)

    assert Cross2().params == Cross().params and Cross2().id != Cross().id


STRATEGY_MODULE = textwrap.dedent('''
    import raybt

    class Momentum(raybt.Strategy):
        lookback: int = 24
        size: float = 0.5

        def signals(self, data):
            change = data.close.pct_change(self.lookback)
            return change > 0, change < 0
''')


def test_id_identical_across_processes(tmp_path):
    (tmp_path / "user_strategies.py").write_text(STRATEGY_MODULE)
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from user_strategies import Momentum; "
            "print(Momentum(lookback=12).id, Momentum().id)")
    runs = [subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
            .stdout.split() for _ in range(2)]
    assert runs[0] == runs[1]
    sys.path.insert(0, str(tmp_path))
    try:
        from user_strategies import Momentum
        assert runs[0] == [Momentum(lookback=12).id, Momentum().id]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("user_strategies", None)


def test_id_of_a_class_without_source_uses_its_bytecode():
    namespace = {}
    exec(STRATEGY_MODULE, namespace)  # no source file: inspect.getsource fails
    Momentum = namespace["Momentum"]
    assert Momentum(lookback=5).id == Momentum(lookback=5).id != Momentum(lookback=6).id


# -------------------------------------------------------------------------------------------------- signals

@pytest.fixture(scope="module")
def one():
    return raybt.synthetic_ohlcv(["A"], "2024-01-01", "2024-01-03", "1h", seed=0).view(0, 48)


@pytest.fixture(scope="module")
def two():
    return raybt.synthetic_ohlcv(["A", "B"], "2024-01-01", "2024-01-03", "1h", seed=0).view(0, 48)


def make(entries, exits):
    return type("Fixed", (Strategy,), {"signals": lambda self, data: (entries(data), exits(data))})()


def test_dataframe_signals_become_symbol_major_bool_arrays(two):
    up = two.close > two.close.shift(1)
    e, x = signal_arrays(make(lambda d: up, lambda d: ~up), two)
    assert e.shape == (2, 48) and e.dtype == np.bool_
    np.testing.assert_array_equal(e[1], up["B"].to_numpy())
    np.testing.assert_array_equal(x[0], ~up["A"].to_numpy())


def test_columns_in_another_order_are_realigned(two):
    up = (two.close > two.close.shift(1))[["B", "A"]]
    e, _ = signal_arrays(make(lambda d: up, lambda d: up), two)
    np.testing.assert_array_equal(e[0], up["A"].to_numpy())


def test_series_ndarray_and_dict_forms(one, two):
    s = one.close["A"] > one.close["A"].shift(1)
    for form in (s, s.to_numpy(), s.to_numpy().astype(int), s.astype("boolean"), s.astype(object)):
        e, _ = signal_arrays(make(lambda d, f=form: f, lambda d: np.zeros(48, bool)), one)
        np.testing.assert_array_equal(e[0], s.to_numpy())
    only_b = {"B": two.close["B"] > 100}
    e, x = signal_arrays(make(lambda d: only_b, lambda d: {}), two)
    assert not e[0].any() and not x.any()
    np.testing.assert_array_equal(e[1], only_b["B"].to_numpy())


@pytest.mark.parametrize("values, offending", [
    ([np.nan, 1.0] + [0.0] * 46, "nan at bar 2024-01-01 00:00:00+00:00"),
    ([0.0, 1.0, 0.5] + [0.0] * 45, "0.5 at bar 2024-01-01 02:00:00+00:00"),
    ([0.0, 1.0] + [0.0] * 46, "0.0 at bar 2024-01-01 00:00:00+00:00"),   # floats are not yes/no, even 0.0/1.0
    ([0, 1, 0, 2] + [0] * 44, "2 at bar 2024-01-01 03:00:00+00:00"),
    ([0, 1, -1] + [0] * 45, "-1 at bar 2024-01-01 02:00:00+00:00"),
    ([True, None] + [False] * 46, "None at bar 2024-01-01 01:00:00+00:00"),
    ([True, pd.NA] + [False] * 46, "<NA> at bar 2024-01-01 01:00:00+00:00"),
])
@pytest.mark.parametrize("form", ["array", "series", "frame"])
def test_non_boolean_signals_are_rejected_naming_the_first_offending_bar(one, values, offending, form):
    array = np.array(values, dtype=object if any(v is None or v is pd.NA for v in values) else None)
    signal = {"array": array, "series": pd.Series(array, index=one.index),
              "frame": pd.DataFrame({"A": array}, index=one.index)}[form]
    with pytest.raises(SignalError, match=rf"Fixed\(\): entries must be boolean \(or integers 0/1\), got dtype "
                                          rf"\w+: first offending value {re.escape(offending)}"):
        signal_arrays(make(lambda d: signal, lambda d: np.zeros(48, bool)), one)


def test_non_boolean_signal_of_the_second_symbol_names_it(two):
    entries = pd.DataFrame({"A": np.zeros(48, int), "B": [0] * 40 + [3] + [0] * 7}, index=two.index)
    with pytest.raises(SignalError, match=r"first offending value 3 at bar 2024-01-02 16:00:00\+00:00, symbol 'B'"):
        signal_arrays(make(lambda d: entries, lambda d: np.zeros((48, 2), bool)), two)


@pytest.mark.parametrize("bad, message", [
    (lambda d: np.zeros(47, bool), r"entries has shape \(47,\), expected \(48,\)"),
    (lambda d: d.close.iloc[:-1] > 0, "entries has 47 rows, expected 48"),
    (lambda d: (d.close > 0).set_axis(d.close.index + pd.Timedelta("1h")), "entries index differs from data.close's index"),
    (lambda d: {"Z": d.close["A"] > 0}, r"entries names unknown symbol\(s\) \['Z'\]"),
    (lambda d: np.array(["a"] * 48), r"entries must be boolean \(or integers 0/1\), got dtype <U1"),
])
def test_bad_signals_name_the_strategy(one, bad, message):
    with pytest.raises(SignalError, match=rf"Fixed\(\): {message}"):
        signal_arrays(make(bad, lambda d: np.zeros(48, bool)), one)


def test_one_dimensional_signal_with_two_symbols_rejected(two):
    with pytest.raises(SignalError, match="one-dimensional but the data has 2 symbols"):
        signal_arrays(make(lambda d: np.zeros(48, bool), lambda d: np.zeros(48, bool)), two)


def test_wrong_columns_and_return_type(two):
    with pytest.raises(SignalError, match=r"columns \['A', 'C'\], expected the symbols \['A', 'B'\]"):
        signal_arrays(make(lambda d: (d.close > 0).set_axis(["A", "C"], axis=1), lambda d: d.close > 0), two)
    bad = type("Single", (Strategy,), {"signals": lambda self, data: data.close > 0})()
    with pytest.raises(SignalError, match=r"Single\(\): signals\(\) must return a tuple \(entries, exits\)"):
        signal_arrays(bad, two)


def test_indicator_frames_take_the_fast_path_without_copies(two):
    """Frames on the view's own index with the symbols as columns are used in place; equal labels give the same."""
    fast, slow = raybt.indicators.sma(two.close, 3), raybt.indicators.sma(two.close, 8)
    up, down = raybt.indicators.crossed_above(fast, slow), raybt.indicators.crossed_below(fast, slow)
    assert up.index is two.index
    e, x = signal_arrays(make(lambda d: up, lambda d: down), two)
    assert e.shape == x.shape == (2, 48) and e.dtype == x.dtype == np.bool_
    np.testing.assert_array_equal(e, up.to_numpy().T)
    np.testing.assert_array_equal(x, down.to_numpy().T)
    assert np.shares_memory(e, up.to_numpy())  # no copy on the fast path
    relabelled = up.set_axis(pd.Index(["A", "B"]), axis=1).set_axis(two.index.copy(), axis=0)
    assert relabelled.columns is not up.columns and relabelled.index is not two.index
    e2, _ = signal_arrays(make(lambda d: relabelled, lambda d: down), two)
    np.testing.assert_array_equal(e2, e)
    swapped = up.set_axis(["B", "A"], axis=1)  # same labels, other order: realigned by name
    e3, _ = signal_arrays(make(lambda d: swapped, lambda d: down), two)
    np.testing.assert_array_equal(e3, e[::-1])
    with pytest.raises(SignalError, match="expected the symbols"):
        signal_arrays(make(lambda d: up.set_axis(["A", "Z"], axis=1), lambda d: down), two)
    e4, _ = signal_arrays(make(lambda d: up, lambda d: down), two)  # the memo of checked columns changes nothing
    np.testing.assert_array_equal(e4, e)


def test_strategy_on_arrays_gives_the_signals_of_the_same_strategy_on_frames(two):
    """``data.arrays`` (numpy) and ``data.close`` (pandas) strategies agree; array outputs (bars × symbols) are
    accepted as they are."""
    for fast, slow in ((3, 8), (5, 20), (2, 30)):
        frames = signal_arrays(SmaCross(fast=fast, slow=slow), two)
        arrays = signal_arrays(SmaCrossArrays(fast=fast, slow=slow), two)
        assert frames[0].any() or frames[1].any()
        np.testing.assert_array_equal(arrays[0], frames[0])
        np.testing.assert_array_equal(arrays[1], frames[1])


def test_integer_signals_zero_and_one_are_accepted(one):
    for values in (np.array([0, 1, 1] + [0] * 45), np.array([0, 1, 1] + [0] * 45, dtype=np.uint8)):
        expected = values == 1
        e, _ = signal_arrays(make(lambda d, v=values: v, lambda d: np.zeros(48, bool)), one)
        np.testing.assert_array_equal(e[0], expected)
        frame = pd.DataFrame(values, index=one.index, columns=["A"])
        e, _ = signal_arrays(make(lambda d, f=frame: f, lambda d: np.zeros(48, bool)), one)
        np.testing.assert_array_equal(e[0], expected)
