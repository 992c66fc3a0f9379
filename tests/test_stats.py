"""raybt.stats against independent references: the deflated Sharpe ratio's published example, second
implementations written here from the papers' formulas (with scipy's distributions and moments), Monte Carlo, and
constructed cases for the bootstrap tests (which arch computes)."""

import itertools
import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

import raybt
from raybt import stats
from sweeps import DATA, RANGES, FailsOn, SmaCross, run

# ---------------------------------------------------------------------------------------- references (independent)


def reference_psr(returns, benchmark=0.0):
    """PSR from Bailey & López de Prado (2012), with scipy's moments and normal distribution."""
    sr = np.mean(returns) / np.std(returns, ddof=1)
    g3 = sps.skew(returns)                    # biased (population) skewness
    g4 = sps.kurtosis(returns, fisher=False)  # biased, non-excess kurtosis
    z = (sr - benchmark) * np.sqrt(len(returns) - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
    return sps.norm.cdf(z)


def reference_min_trl(sr, g3, g4, benchmark, confidence):
    return 1 + (1 - g3 * sr + (g4 - 1) / 4 * sr**2) * (sps.norm.ppf(confidence) / (sr - benchmark)) ** 2


def reference_dsr(sr, t, g3, g4, n_trials, variance):
    e = np.euler_gamma
    sr0 = np.sqrt(variance) * ((1 - e) * sps.norm.ppf(1 - 1 / n_trials) + e * sps.norm.ppf(1 - 1 / (n_trials * np.e)))
    return sps.norm.cdf((sr - sr0) * np.sqrt(t - 1) / np.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2))


def sharpe_or_zero(x):
    """Per-column Sharpe ratio; 0 for a column of zero returns (a candidate that did not trade)."""
    with np.errstate(invalid="ignore"):
        sharpe = x.mean(axis=0) / x.std(axis=0, ddof=1)
    return np.where((x == 0).all(axis=0), 0.0, sharpe)


def reference_pbo(m, s):
    """CSCV written plainly from Bailey, Borwein, López de Prado & Zhu (2015): one combination at a time."""
    t = (len(m) // s) * s
    m = m[len(m) - t:]
    blocks = np.split(m, s)
    logits = []
    for inside in itertools.combinations(range(s), s // 2):
        j = np.vstack([blocks[i] for i in inside])
        jbar = np.vstack([blocks[i] for i in range(s) if i not in inside])
        r_is, r_oos = sharpe_or_zero(j), sharpe_or_zero(jbar)
        best = int(np.argmax(r_is))
        omega = sps.rankdata(r_oos)[best] / (m.shape[1] + 1)
        logits.append(np.log(omega / (1 - omega)))
    logits = np.array(logits)
    return np.mean(logits <= 0), logits


# ---------------------------------------------------------------------------------------- PSR, MinTRL, DSR


def skewed_returns(seed, n=750, drift=0.0005):
    rng = np.random.default_rng(seed)
    return drift + 0.01 * (rng.standard_t(5, n) + 0.3 * (rng.exponential(1.0, n) - 1))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("benchmark", [0.0, 0.02])
def test_psr_equals_a_second_implementation(seed, benchmark):
    r = skewed_returns(seed)
    moments = stats.sharpe_moments(r)
    assert moments.n_periods == 750
    assert moments.skew == pytest.approx(sps.skew(r), rel=1e-12)
    assert moments.kurtosis == pytest.approx(sps.kurtosis(r, fisher=False), rel=1e-12)
    got = stats.probabilistic_sharpe_ratio(*moments, benchmark=benchmark)
    assert got == pytest.approx(reference_psr(r, benchmark), rel=1e-10)


def test_psr_is_one_half_at_the_benchmark_and_grows_with_the_track_record():
    assert stats.probabilistic_sharpe_ratio(0.1, 500, -1.0, 6.0, benchmark=0.1) == pytest.approx(0.5)
    short, long = (stats.probabilistic_sharpe_ratio(0.05, n) for n in (100, 1000))
    assert 0.5 < short < long < 1


@pytest.mark.parametrize("sr, g3, g4, benchmark, confidence", [
    (0.1, 0.0, 3.0, 0.0, 0.95), (0.05, -1.5, 8.0, 0.0, 0.95), (0.2, 0.5, 4.0, 0.1, 0.99)])
def test_min_track_record_length_equals_a_second_implementation_and_inverts_psr(sr, g3, g4, benchmark, confidence):
    n = stats.min_track_record_length(sr, g3, g4, benchmark=benchmark, confidence=confidence)
    assert n == pytest.approx(reference_min_trl(sr, g3, g4, benchmark, confidence), rel=1e-12)
    # a track record of exactly MinTRL periods gives PSR = confidence
    assert stats.probabilistic_sharpe_ratio(sr, n, g3, g4, benchmark=benchmark) == pytest.approx(confidence)


def test_min_track_record_length_is_infinite_without_an_edge_over_the_benchmark():
    assert stats.min_track_record_length(0.1, benchmark=0.1) == math.inf
    assert stats.min_track_record_length(-0.1) == math.inf


def test_deflated_sharpe_ratio_reproduces_the_papers_numerical_example():
    """Bailey & López de Prado (2014), numerical example: annualised SR 2.5 over 5 years of daily returns
    (T = 1,250, 250 days a year), N = 100 trials whose annualised Sharpe ratios have variance 1/2, skewness −3,
    kurtosis 10. The paper finds SR0 ≈ 0.1132 (per day) and DSR ≈ 0.9004: not significant at 95%."""
    sr = 2.5 / math.sqrt(250)
    variance = 0.5 / 250
    assert stats.expected_max_sharpe(100, variance) == pytest.approx(0.1132, abs=5e-5)
    dsr = stats.deflated_sharpe_ratio(sr, 1250, -3.0, 10.0, n_trials=100, sharpe_variance=variance)
    assert dsr == pytest.approx(0.9004, abs=5e-5)
    assert dsr == pytest.approx(reference_dsr(sr, 1250, -3.0, 10.0, 100, variance), rel=1e-10)


@pytest.mark.parametrize("n_trials", [2, 10, 1000, 250_000])
def test_deflated_sharpe_ratio_equals_a_second_implementation(n_trials):
    got = stats.deflated_sharpe_ratio(0.08, 2000, -0.7, 5.5, n_trials=n_trials, sharpe_variance=4e-4)
    assert got == pytest.approx(reference_dsr(0.08, 2000, -0.7, 5.5, n_trials, 4e-4), rel=1e-10)


def test_expected_max_sharpe_approximates_the_maximum_of_independent_normals():
    """The approximation overstates E[max] by ~2.3% at N=10, ~1% at 100, ~0.4% at 1000 (exact values 1.5388, 2.5076,
    3.2414); the simulation's own error is ~0.3%."""
    rng = np.random.default_rng(7)
    for n, tolerance in ((10, 0.04), (100, 0.02), (1000, 0.01)):
        simulated = rng.standard_normal((4000, n)).max(axis=1).mean()
        assert stats.expected_max_sharpe(n, 1.0) == pytest.approx(simulated, rel=tolerance)
    assert stats.expected_max_sharpe(1, 1.0) == 0.0
    assert stats.expected_max_sharpe(100, 4.0) == pytest.approx(2 * stats.expected_max_sharpe(100, 1.0))


def test_more_trials_deflate_more():
    values = [stats.deflated_sharpe_ratio(0.1, 1000, n_trials=n, sharpe_variance=1e-3) for n in (1, 10, 100, 10_000)]
    assert values == sorted(values, reverse=True)
    assert values[0] == pytest.approx(stats.probabilistic_sharpe_ratio(0.1, 1000))


@pytest.mark.parametrize("call, message", [
    (lambda: stats.sharpe_moments([0.1, np.nan, 0.2, 0.3]), "1 NaN value.*position 1"),
    (lambda: stats.sharpe_moments([0.01] * 10), "constant"),
    (lambda: stats.probabilistic_sharpe_ratio(0.1, 1), "n_periods must be >= 2"),
    (lambda: stats.probabilistic_sharpe_ratio(1.0, 100, 0.0, -3.0), "inconsistent.*excess"),
    (lambda: stats.deflated_sharpe_ratio(0.1, 100, n_trials=0, sharpe_variance=1e-3), "n_trials must be >= 1"),
    (lambda: stats.min_track_record_length(0.1, confidence=95), "confidence must be between 0 and 1"),
])
def test_bad_inputs_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------- effective trials


def participation_ratio_from_eigenvalues(x):
    eig = np.linalg.eigvalsh(np.corrcoef(x, rowvar=False))
    return eig.sum() ** 2 / np.sum(eig**2)


@pytest.mark.parametrize("shape", [(200, 30), (20, 60)])  # more periods than trials, and fewer
def test_effective_trials_equals_the_eigenvalue_participation_ratio(shape):
    rng = np.random.default_rng(3)
    common = rng.standard_normal((shape[0], 1))
    x = 0.6 * common + rng.standard_normal(shape) * rng.uniform(0.2, 2.0, shape[1])
    assert stats.effective_trials(x) == pytest.approx(participation_ratio_from_eigenvalues(x), rel=1e-9)


def test_effective_trials_limits():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((500, 1))
    assert stats.effective_trials(np.hstack([base, 2 * base, base + 1])) == pytest.approx(1.0)
    assert stats.effective_trials(rng.standard_normal((100_000, 5))) == pytest.approx(5.0, rel=1e-3)
    with pytest.raises(ValueError, match="column 1 is constant"):
        stats.effective_trials(np.hstack([base, np.zeros((500, 1))]))


# ---------------------------------------------------------------------------------------- PBO


@pytest.mark.parametrize("seed, periods, splits", [(0, 160, 8), (1, 203, 10), (2, 96, 4)])
def test_pbo_equals_a_second_implementation(seed, periods, splits):
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((periods, 9)) * 0.01 + rng.normal(0, 0.001, 9)
    got = stats.probability_of_backtest_overfitting(m, n_splits=splits, chunk=7)  # several chunks
    pbo, logits = reference_pbo(m, splits)
    assert got.pbo == pbo
    np.testing.assert_allclose(got.logits, logits, rtol=1e-9)
    assert got.n_periods_used == (periods // splits) * splits
    assert len(got.logits) == math.comb(splits, splits // 2)


def test_pbo_of_pure_noise_is_about_one_half_and_a_real_edge_is_not_overfit():
    rng = np.random.default_rng(11)
    noise = rng.standard_normal((1600, 50)) * 0.01
    assert 0.3 < stats.probability_of_backtest_overfitting(noise).pbo < 0.7
    edge = noise.copy()
    edge[:, 7] += 0.004  # a persistent edge of 0.4 standard deviations per period
    result = stats.probability_of_backtest_overfitting(edge)
    assert result.pbo == 0.0
    assert (result.logits > 0).all()


def test_pbo_counts_a_candidate_that_never_trades_as_sharpe_zero():
    rng = np.random.default_rng(5)
    m = rng.standard_normal((64, 3)) * 0.01
    m[:, 0] = 0.0           # flat: Sharpe 0 in every half
    m[:32, 1] = 0.0         # flat in the first half only
    got = stats.probability_of_backtest_overfitting(m, n_splits=4)
    # column 1's mean is not zero, so its shifted sums over the flat half leave rounding noise: still Sharpe 0
    pbo, logits = reference_pbo(m, 4)
    np.testing.assert_allclose(got.logits, logits, rtol=1e-9)
    assert got.pbo == pbo


def test_pbo_bad_inputs_are_named():
    frame = pd.DataFrame({"a": [0.1, 0.2] * 20, "b": [0.1, np.nan] * 20})
    with pytest.raises(ValueError, match="column 'b' contains NaN"):
        stats.probability_of_backtest_overfitting(frame, n_splits=4)
    with pytest.raises(ValueError, match="even number"):
        stats.probability_of_backtest_overfitting(np.zeros((40, 2)), n_splits=5)
    with pytest.raises(ValueError, match="too few"):
        stats.probability_of_backtest_overfitting(np.ones((20, 2)), n_splits=16)


# ---------------------------------------------------------------------------------------- Reality Check, SPA


def candidates(edge, seed=0, periods=1000, n=20):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.standard_normal((periods, n)) * 0.01, columns=[f"s{i}" for i in range(n)])
    frame["s3"] += edge
    return frame


@pytest.mark.parametrize("test", [stats.reality_check, stats.spa_test])
def test_a_planted_edge_is_significant_and_noise_is_not(test):
    real = test(candidates(edge=0.002), reps=500, seed=1)     # 0.2 standard deviations per period
    assert real.pvalue < 0.01
    assert real.best == "s3"
    for seed in (1, 2, 3):
        assert test(candidates(edge=0.0, seed=seed), reps=500, seed=1).pvalue > 0.1


@pytest.mark.parametrize("test", [stats.reality_check, stats.spa_test])
def test_bootstrap_tests_are_deterministic_by_seed(test):
    frame = candidates(edge=0.0005, seed=9)
    first, again = test(frame, reps=300, seed=42), test(frame, reps=300, seed=42)
    assert first == again
    assert set(first.pvalues) == {"lower", "consistent", "upper"}


def test_against_a_benchmark_series_only_the_excess_counts():
    rng = np.random.default_rng(8)
    market = pd.Series(rng.standard_normal(1000) * 0.01 + 0.003)   # a strong market every candidate rides
    riders = candidates(edge=0.0, seed=8).add(market, axis=0)
    assert stats.spa_test(riders, reps=500, seed=0).pvalue < 0.01                     # beats cash
    assert stats.spa_test(riders, benchmark=market, reps=500, seed=0).pvalue > 0.1    # not the market
    assert stats.reality_check(riders, benchmark=market, reps=500, seed=0).pvalue > 0.1


def test_spa_is_less_diluted_by_poor_candidates_than_the_reality_check():
    frame = candidates(edge=0.0012, seed=2)
    poor = pd.DataFrame(np.random.default_rng(2).standard_normal((1000, 200)) * 0.03 - 0.003)
    diluted = pd.concat([frame, poor.add_prefix("poor")], axis=1)
    assert stats.spa_test(diluted, reps=500, seed=0).pvalue <= stats.reality_check(diluted, reps=500, seed=0).pvalue


def test_arch_does_not_studentize_so_spa_differs_from_the_reality_check_only_in_recentring():
    """The documented reading of arch (raybt/stats/bootstrap.py): if a new arch studentizes, this fails and the
    docs must change. Candidates with very different volatilities: a studentized statistic would rank them
    differently from their means."""
    from arch.bootstrap import SPA
    rng = np.random.default_rng(12)
    losses = -(rng.standard_normal((800, 6)) * np.array([0.001, 0.002, 0.01, 0.02, 0.05, 0.1]) + 0.0003)
    plain = SPA(np.zeros(800), losses, reps=300, seed=3, studentize=False)
    student = SPA(np.zeros(800), losses, reps=300, seed=3, studentize=True)
    plain.compute()
    student.compute()
    assert dict(plain.pvalues) == dict(student.pvalues)
    frame = pd.DataFrame(-losses)
    rc, spa = stats.reality_check(frame, reps=300, seed=3), stats.spa_test(frame, reps=300, seed=3)
    assert rc.pvalues == spa.pvalues and (rc.pvalue, spa.pvalue) == (rc.pvalues["upper"], rc.pvalues["consistent"])


def test_bootstrap_bad_inputs_are_named():
    frame = candidates(edge=0.0)
    frame.iloc[5, 2] = np.nan
    with pytest.raises(ValueError, match="column 's2' contains NaN"):
        stats.spa_test(frame)
    with pytest.raises(ValueError, match="benchmark has 3 periods, returns have 1000"):
        stats.reality_check(candidates(edge=0.0), benchmark=np.zeros(3))


# ---------------------------------------------------------------------------------------- the true number of trials


def snapshot(folder):
    return {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns for d, _, fs in os.walk(folder) for f in fs}


def test_count_trials_reads_every_stored_job_failed_ones_included(tmp_path):
    folder = str(tmp_path / "ck")
    grid = [FailsOn(n=n) for n in range(6)]                          # n=3 fails on both ranges
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", raybt.FailedBacktestsWarning)
        run(grid, checkpoint_dir=folder, continue_on_error=True)
        # a later run: 1 new strategy on the first range, and the failed job there retried (stored twice, one trial)
        run(grid[:4] + [SmaCross(fast=3, slow=20)], date_ranges=RANGES[:1], checkpoint_dir=folder,
            continue_on_error=True, rerun_errors=True)
    before = snapshot(folder)
    count = stats.count_trials(folder)
    assert snapshot(folder) == before                              # read-only
    assert count.data_fingerprint == DATA.fingerprint
    assert count.n_jobs == 6 * 2 + 1
    assert count.n_failed == 2
    assert count.n_configurations == 7
    assert count.by_range == {"first": 7, "second": 6}
    assert count.n_runs == 2 and count.planned_jobs == 12 + 5
    assert stats.count_trials(folder, data_fingerprint=DATA.fingerprint) == count
    # the count agrees with the stored rows themselves
    rows = raybt.load_results(folder)
    assert len(rows) == count.n_jobs and rows["error"].notna().sum() == count.n_failed


def test_count_trials_refuses_a_directory_that_mixes_data_sets(tmp_path):
    folder = str(tmp_path / "ck")
    run([SmaCross(fast=3, slow=20)], checkpoint_dir=folder)
    other = raybt.synthetic_ohlcv(["BTC"], "2023-01-01", "2023-04-01", "1h", seed=6)
    run([SmaCross(fast=3, slow=20)], data=other, checkpoint_dir=folder)
    with pytest.raises(ValueError, match="runs on 2 data sets"):
        stats.count_trials(folder)
    with pytest.raises(ValueError, match="mixes runs on 2 data sets.*cannot be counted apart"):
        stats.count_trials(folder, data_fingerprint=DATA.fingerprint)
    with pytest.raises(ValueError, match="no run on data abc"):
        stats.count_trials(folder, data_fingerprint="abc")


def test_count_trials_needs_a_manifest_and_names_unreadable_parts(tmp_path):
    folder = tmp_path / "ck"
    run([SmaCross(fast=3, slow=20), SmaCross(fast=5, slow=20)], checkpoint_dir=str(folder))
    bad = folder / "parts" / "part-99999999999999999999-deadbeef.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.warns(stats.TrialCountWarning, match="skipped unreadable part .*deadbeef"):
        assert stats.count_trials(str(folder)).n_jobs == 4
    assert bad.exists()                                            # left where it was
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").unlink()
    with pytest.raises(ValueError, match="no manifest.json"):
        stats.count_trials(str(folder))
    (folder / "manifest.json").write_text(json.dumps({"runs": [{"jobs": 1}]}))
    with pytest.raises(ValueError, match="not a raybt manifest"):
        stats.count_trials(str(folder))
    assert manifest["runs"][0]["data_fingerprint"] == DATA.fingerprint


def test_without_arch_the_bootstrap_tests_say_what_to_install(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "arch.bootstrap", None)   # import arch.bootstrap now fails
    with pytest.raises(ImportError, match=r"uses the 'arch' package: pip install 'raybt\[stats\]'"):
        stats.spa_test(candidates(edge=0.0))
