"""results.verdict(row, data): its numbers against independent computations, its decisions at the thresholds, and
examples/is_it_real.py's two markets on a small grid (the random walk's best row is rejected, the planted trend's
accepted)."""

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

import raybt
from raybt import stats
from raybt.verdict import THRESHOLDS, Verdict

sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
import is_it_real as example  # noqa: E402  (the example module, run here on a small grid)

pytest.importorskip("arch", reason="the SPA and Reality Check lines need the stats extra: pip install 'raybt[stats]'")

PPY = 8760.0
GRID = dict(n_fast=6, n_slow=6, step=15)
"""36 strategies spanning the example's full grid (fast 2–77, slow up to 617)."""


@dataclass(frozen=True)
class StandInPermutation:
    """What the verdict reads of raybt.stats.permutation_test's result."""

    p_value: float
    n_permutations: int = 200
    observed: float = 1.5
    metric: str = "sharpe"
    seed: int = 0


@dataclass(frozen=True)
class StandInWalkForward:
    """What the verdict reads of a raybt.WalkForward."""

    efficiency: float
    rank_correlation: float
    folds: tuple = (0, 1, 2)  # only its length is read


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The example's random walk, 36 strategies in a checkpoint directory that also holds an earlier run of 5 other
    strategies on the same data (so the directory has 41 trials, the Results of the second call 36 rows)."""
    directory = tmp_path_factory.mktemp("verdict")
    data = example.market(**example.CASES["a pure random walk (no strategy can have an edge)"])
    date_range = raybt.DateRange(example.START, example.END, name="2y")
    options = dict(fees=example.FEES, checkpoint_dir=str(directory), show_progress=False)
    raybt.run_backtests([example.SmaCross(fast=3, slow=s) for s in (700, 710, 720, 730, 740)], data, [date_range],
                        **options)
    strategies = example.sma_grid(**GRID)
    results = raybt.run_backtests(strategies, data, [date_range], **options)
    best = results.best("sharpe", n=1).iloc[0]
    return data, date_range, strategies, results, best


def judged(sweep, **options):
    data, _, _, results, best = sweep
    return results.verdict(best, data, reps=200, **options)


def bar_returns(backtest, initial=10_000.0):
    equity = backtest.equity.to_numpy()
    return pd.Series(np.diff(np.concatenate([[initial], equity])) / np.concatenate([[initial], equity[:-1]]),
                     index=backtest.equity.index)


def daily_compounded(r):
    return (1 + r).groupby(r.index.floor("D")).prod() - 1


def daily_returns(sweep, rows):
    """Daily returns of ``rows``, each run again with run_backtest (not Results.returns)."""
    data, date_range, strategies, _, _ = sweep
    by_id = {s.id: s for s in strategies}
    return pd.DataFrame({
        key: daily_compounded(bar_returns(raybt.run_backtest(by_id[sid], data, date_range, fees=example.FEES)))
        for key, sid in zip(rows["key"], rows["strategy_id"])})


def test_sharpe_trials_and_dsr_equal_a_computation_by_hand(sweep):
    data, date_range, strategies, results, best = sweep
    verdict = judged(sweep)
    by_id = {s.id: s for s in strategies}
    r = bar_returns(raybt.run_backtest(by_id[best["strategy_id"]], data, date_range, fees=example.FEES)).to_numpy()
    sr = best["sharpe"] / math.sqrt(PPY)
    assert sr == pytest.approx(r.mean() / r.std(ddof=1), rel=1e-9)  # the stored Sharpe is the replayed one
    c = r - r.mean()
    skew, kurt = np.mean(c**3) / np.mean(c**2) ** 1.5, np.mean(c**4) / np.mean(c**2) ** 2
    n_trials = 41  # 36 of this call + 5 of the earlier run stored in the same directory
    variance = np.var(results.df["sharpe"].to_numpy() / math.sqrt(PPY), ddof=1)
    gamma, z = 0.5772156649015329, NormalDist().inv_cdf
    sr0 = math.sqrt(variance) * ((1 - gamma) * z(1 - 1 / n_trials) + gamma * z(1 - 1 / (n_trials * math.e)))
    scale = math.sqrt(1 - skew * sr + (kurt - 1) / 4 * sr**2)
    dsr = NormalDist().cdf((sr - sr0) * math.sqrt(len(r) - 1) / scale)
    psr = NormalDist().cdf(sr * math.sqrt(len(r) - 1) / scale)

    assert (verdict.n_trials, verdict.n_periods, verdict.periods_per_year) == (n_trials, len(r), PPY)
    assert "checkpoint directory" in verdict.trials_source
    assert verdict.sharpe == best["sharpe"] and verdict.sharpe_per_period == pytest.approx(sr, rel=1e-12)
    assert verdict["dsr"].value == pytest.approx(dsr, rel=1e-9)
    assert verdict["psr"].value == pytest.approx(psr, rel=1e-9)
    assert f"after {n_trials:,} trials" in verdict["dsr"].reading
    assert results.verdict(best, data, reps=50, n_trials=10_000)["dsr"].value < dsr  # more trials, more deflation


def test_pbo_and_bootstrap_tests_are_those_of_the_top_candidates_daily_returns(sweep):
    data, date_range, strategies, results, best = sweep
    verdict = judged(sweep, candidates=10, benchmark="buy_and_hold")
    top = results.df.sort_values(["sharpe", "key"], ascending=[False, True]).head(10)
    assert top["key"].iloc[0] == best["key"]
    daily = daily_returns(sweep, top)
    close = pd.Series(data.close[0], index=data.index)
    held = close.pct_change().loc[daily.index[0]:]
    benchmark = daily_compounded(held[held.index < pd.Timestamp(example.END, tz="UTC")]).to_numpy()

    assert verdict.n_candidates == 10
    assert verdict["pbo"].value == stats.probability_of_backtest_overfitting(daily).pbo
    assert verdict["spa"].value == pytest.approx(stats.spa_test(daily, benchmark, reps=200).pvalue, abs=0.01)
    assert verdict["reality_check"].value == pytest.approx(
        stats.reality_check(daily, benchmark, reps=200).pvalue, abs=0.01)
    assert "buy and hold" in verdict["spa"].reading


def test_decisions_at_the_thresholds_and_the_optional_checks(sweep):
    base = judged(sweep, permutation=StandInPermutation(p_value=0.05),
                  walk_forward=StandInWalkForward(efficiency=0.5, rank_correlation=0.2))
    assert [c.name for c in base.checks] == ["psr", "dsr", "pbo", "spa", "reality_check", "permutation",
                                             "wf_efficiency", "wf_rank_correlation"]
    assert base.not_run == ()
    for name in ("permutation", "wf_efficiency", "wf_rank_correlation"):  # exactly at the threshold: passes
        assert base[name].status == "pass", base[name]
    dsr, pbo = base["dsr"].value, base["pbo"].value
    at = judged(sweep, thresholds={"dsr": dsr, "pbo": pbo, "psr": math.nextafter(base["psr"].value, 1)})
    assert at["dsr"].status == "pass" and "unlikely to be luck" in at["dsr"].reading
    assert at["pbo"].status == "fail" and "overfit" in at["pbo"].reading  # PBO must be below its threshold
    assert at["psr"].status == "fail" and "track record needed" in at["psr"].reading
    above = judged(sweep, thresholds={"dsr": math.nextafter(dsr, 1), "pbo": math.nextafter(pbo, 1)},
                   permutation=StandInPermutation(p_value=0.0501),
                   walk_forward=StandInWalkForward(efficiency=0.49, rank_correlation=float("nan")))
    assert above["dsr"].status == "fail" and "likely luck" in above["dsr"].reading
    assert above["pbo"].status == "pass" and "generalises" in above["pbo"].reading
    assert above["permutation"].status == "fail" and "adds nothing" in above["permutation"].reading
    assert above["wf_efficiency"].status == "fail" and "lost most" in above["wf_efficiency"].reading
    negative = judged(sweep, walk_forward=StandInWalkForward(efficiency=-0.3, rank_correlation=-0.1))
    assert "turned negative" in negative["wf_efficiency"].reading and negative["wf_rank_correlation"].status == "fail"
    assert above["wf_rank_correlation"].status == "unknown" and math.isnan(above["wf_rank_correlation"].value)
    assert above.passed is False and "NOT CONVINCING" in above.conclusion and "dsr" in above.conclusion


def test_without_arch_the_bootstrap_lines_say_how_to_install_it(sweep, monkeypatch):
    monkeypatch.setitem(sys.modules, "arch", None)  # import arch.bootstrap now raises ImportError
    monkeypatch.setitem(sys.modules, "arch.bootstrap", None)
    verdict = judged(sweep, thresholds={"dsr": 0.0, "psr": 0.0, "pbo": 1.0})
    for name in ("spa", "reality_check"):
        assert verdict[name].status == "unknown" and "pip install 'raybt[stats]'" in verdict[name].reading
    assert verdict.passed is None and verdict.conclusion.startswith("UNDECIDED")


def test_printing_html_and_frame(sweep):
    verdict = judged(sweep)
    text = str(verdict)
    assert text.splitlines()[0].startswith("Is it real? SmaCross")
    for check in verdict.checks:
        assert f"{check.status.upper()}" in text and check.reading in text
    assert "not run: permutation test" in text and "not run: walk-forward" in text
    assert text.splitlines()[-1] == f"Verdict: {verdict.conclusion}"
    frame = verdict.to_frame()
    assert list(frame.columns) == ["check", "value", "rule", "threshold", "status", "reading"]
    assert frame.set_index("check").loc["dsr", "threshold"] == THRESHOLDS["dsr"]
    page = verdict._repr_html_()
    assert page.count("<tr>") == len(verdict.checks) + 1 and "&quot;fast&quot;" in page  # parameters escaped


def test_bad_calls_are_errors_naming_the_problem(sweep):
    data, _, _, results, best = sweep
    with pytest.raises(KeyError, match="unknown threshold"):
        results.verdict(best, data, thresholds={"dsrr": 0.9})
    with pytest.raises(ValueError, match="benchmark must be"):
        results.verdict(best, data, benchmark="spy")
    with pytest.raises(ValueError, match="candidates must be"):
        results.verdict(best, data, candidates=1)
    with pytest.raises(ValueError, match="n_trials must be"):
        results.verdict(best, data, n_trials=0)
    with pytest.raises(raybt.DataError, match="not the one the sweep ran on"):
        results.verdict(best, example.market(seed=5))


@pytest.mark.parametrize("title", list(example.CASES))
def test_the_example_rejects_the_random_walk_and_accepts_the_planted_trend(title, tmp_path):
    best, verdict = example.is_it_real(example.market(**example.CASES[title]), example.sma_grid(**GRID), str(tmp_path))
    assert isinstance(verdict, Verdict) and verdict.n_trials == 36
    if "random walk" in title:
        assert best["total_return"] > best["buy_and_hold_return"]  # in sample, the best row looks good
        assert verdict.passed is False
        assert verdict["dsr"].value < 0.5
        assert verdict["spa"].value > 0.05 and verdict["reality_check"].value > 0.05
        assert verdict["wf_efficiency"].value < 0.2
    else:
        assert verdict.passed is True, str(verdict)


def test_an_effective_number_of_trials_and_a_lower_is_better_metric(sweep):
    data, _, _, results, best = sweep
    verdict = judged(sweep, n_trials=12.5)
    assert verdict.n_trials == 12.5 and "after 12.5 trials" in verdict["dsr"].reading
    calm = judged(sweep, metric="volatility", candidates=5)  # candidates: the 4 least volatile rows besides `best`
    others = results.df[results.df["key"] != best["key"]]
    me = results.df[results.df["key"] == best["key"]]
    least, most = (pd.concat([me, pick(4, "volatility")]) for pick in (others.nsmallest, others.nlargest))
    assert calm["pbo"].value == stats.probability_of_backtest_overfitting(daily_returns(sweep, least)).pbo
    assert calm["pbo"].value != stats.probability_of_backtest_overfitting(daily_returns(sweep, most)).pbo
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        results.verdict(best, data, metric="nope")
