"""raybt.windows.rolling: folds checked against dates worked out by hand."""

import warnings

import pandas as pd
import pytest

import raybt
from raybt.demo import SmaCross
from raybt.windows import rolling


class SmaCrossWarm(SmaCross):
    warmup = 10


def spans(folds):
    """(name, start, end) of every window, dates as text, in fold order."""
    out = []
    for train, test in folds:
        for window in (train, test):
            out.append((window.name, str(window.start.date()), str(window.end.date())))
    return out


def test_rolling_folds_slide_by_the_test_length():
    # train 4 days, test 2 days, step = test: train [1,5) test [5,7); train [3,7) test [7,9); train [5,9) test
    # [9,11); a 4th fold would test [11,13), past the end (Jan 12).
    folds = rolling("2024-01-01", "2024-01-12", train="4D", test="2D")
    assert spans(folds) == [
        ("fold-0/train", "2024-01-01", "2024-01-05"), ("fold-0/test", "2024-01-05", "2024-01-07"),
        ("fold-1/train", "2024-01-03", "2024-01-07"), ("fold-1/test", "2024-01-07", "2024-01-09"),
        ("fold-2/train", "2024-01-05", "2024-01-09"), ("fold-2/test", "2024-01-09", "2024-01-11"),
    ]
    assert all(isinstance(w, raybt.DateRange) for pair in folds for w in pair)
    assert str(folds[0][0].start.tz) == "UTC"


def test_anchored_folds_grow_the_train_window_and_gap_embargoes_the_test():
    # anchored, train 4 days, test 2, step 3, gap 1: fold i trains [1, 5+3i) and tests [6+3i, 8+3i).
    folds = rolling("2024-01-01", "2024-01-15", train="4D", test="2D", step="3D", gap="1D", anchored=True)
    assert spans(folds) == [
        ("fold-0/train", "2024-01-01", "2024-01-05"), ("fold-0/test", "2024-01-06", "2024-01-08"),
        ("fold-1/train", "2024-01-01", "2024-01-08"), ("fold-1/test", "2024-01-09", "2024-01-11"),
        ("fold-2/train", "2024-01-01", "2024-01-11"), ("fold-2/test", "2024-01-12", "2024-01-14"),
    ]


def test_rolling_with_gap_and_hours():
    folds = rolling("2024-01-01 00:00", "2024-01-01 12:00", train="4h", test="2h", step="3h", gap="1h")
    got = [(str(t.start.time()), str(t.end.time()), str(s.start.time()), str(s.end.time())) for t, s in folds]
    # fold i: train [3i, 3i+4) gap 1h, test [3i+5, 3i+7); 3i+7 <= 12 → i = 0, 1
    assert got == [("00:00:00", "04:00:00", "05:00:00", "07:00:00"), ("03:00:00", "07:00:00", "08:00:00", "10:00:00")]


def test_calendar_months_keep_the_day_and_do_not_drift():
    # Boundaries are Jan 31 + k months: Feb 28 (2023 is no leap year), Mar 31, Apr 30, May 31 — each computed from
    # start in one addition, so the 31st comes back after February (month after month would give Mar 28, Apr 28).
    folds = rolling("2023-01-31", "2023-06-01", train="1 month", test="1 month")
    assert spans(folds) == [
        ("fold-0/train", "2023-01-31", "2023-02-28"), ("fold-0/test", "2023-02-28", "2023-03-31"),
        ("fold-1/train", "2023-02-28", "2023-03-31"), ("fold-1/test", "2023-03-31", "2023-04-30"),
        ("fold-2/train", "2023-03-31", "2023-04-30"), ("fold-2/test", "2023-04-30", "2023-05-31"),
    ]
    same = rolling("2023-01-31", "2023-06-01", train=pd.DateOffset(months=1), test=pd.DateOffset(months=1))
    assert spans(same) == spans(folds)


def test_a_window_that_does_not_fit_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"fold-0 does not fit .* test window would end at 2024-01-07"):
        rolling("2024-01-01", "2024-01-06", train="4D", test="2D")


@pytest.mark.parametrize("kwargs, message", [
    (dict(train="0D", test="2D"), "train must be > 0"),
    (dict(train="4D", test="2D", gap="-1D"), "gap must be >= 0"),
    (dict(train="4D", test="two days"), "test='two days' is not a duration"),
    (dict(train="4D", test=pd.offsets.MonthBegin(1)), "anchored offsets"),
])
def test_bad_durations_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rolling("2024-01-01", "2024-03-01", **kwargs)


def test_start_must_precede_end():
    with pytest.raises(ValueError, match="need start < end"):
        rolling("2024-02-01", "2024-01-01", train="4D", test="2D")


@pytest.fixture(scope="module")
def daily():
    return raybt.synthetic_ohlcv(symbols=["A"], start="2024-01-01", end="2024-03-01", freq="1D", seed=1)


def test_windows_outside_the_data_are_errors_naming_the_window(daily):
    # fold-1 tests [Mar 1, Mar 31): no bar of the data (Jan 1 .. Feb 29)
    with pytest.raises(raybt.DataError, match=r"window fold-1/test: .*selects no bars"):
        rolling("2024-01-01", "2024-06-01", train="30D", test="30D", data=daily)
    # fold-0 tests [Feb 20, Mar 11): past the last bar by more than a bar's spacing
    with pytest.raises(raybt.DataError, match=r"window fold-0/test: .*reaches past the data"):
        rolling("2024-01-01", "2024-03-11", train="50D", test="20D", data=daily)
    with pytest.raises(raybt.DataError, match=r"window fold-0/train: .*reaches past the data"):
        rolling("2023-10-01", "2024-02-01", train="100D", test="10D", data=daily)


def test_warmup_needs_bars_before_the_first_window(daily):
    message = r"fold-0/train starts at .* only 5 bar\(s\) before it for a warmup of 10"
    with pytest.raises(raybt.DataError, match=message):
        rolling("2024-01-06", "2024-03-01", train="20D", test="10D", data=daily, warmup=10)
    folds = rolling("2024-01-11", "2024-03-01", train="20D", test="10D", data=daily, warmup=10)
    assert len(folds) == 3  # the last tests [Feb 20, Mar 1): the data's last bar is Feb 29


def test_folds_run_as_date_ranges_with_warmup_from_before_each_window(daily):
    """A test window's warmup bars come from the data before it (its train window): the test backtest equals one on
    the same range computed with the signals of the longer history."""
    folds = rolling("2024-01-11", "2024-03-01", train="20D", test="10D", data=daily, warmup=10)
    strategy = SmaCrossWarm(fast=2, slow=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = raybt.run_backtests([strategy], daily, [w for pair in folds for w in pair], show_progress=False)
    assert sorted(results.df["range"]) == sorted(w.name for pair in folds for w in pair)
    test_window = folds[0][1]
    one = raybt.run_backtest(strategy, daily, test_window)
    row = results.df.set_index("range").loc["fold-0/test"]
    assert row["final_value"] == pytest.approx(one.metrics["final_value"])
    assert one.equity.index[0] == test_window.start
