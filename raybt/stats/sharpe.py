"""Sharpe-ratio inference: probabilistic and deflated Sharpe ratios, minimum track record length.

**Units.** Every Sharpe ratio here is *per period* (mean / standard deviation of the per-bar returns, not
annualised) and ``n_periods`` counts those periods: the formulas are about the estimation error of a Sharpe ratio
measured on ``n_periods`` observations. raybt's ``sharpe`` metric is annualised: divide it by
``sqrt(periods_per_year)`` (8,760 for hourly bars, 365 for daily ones) before passing it here, and multiply
per-period results by the same factor to annualise them. Kurtosis is the plain (non-excess) kurtosis: 3 for normal
returns. Skewness and kurtosis are the population (biased, ``1/n``) moment estimates used in the papers.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

EULER_MASCHERONI = 0.5772156649015329
_NORMAL = NormalDist()


class SharpeMoments(NamedTuple):
    """What the Sharpe-ratio tests need from a return series; unpacks into their first four arguments."""

    sharpe: float       # per period: mean / std (ddof=1)
    n_periods: int
    skew: float         # population skewness, 0 for normal returns
    kurtosis: float     # population (non-excess) kurtosis, 3 for normal returns


def sharpe_moments(returns: np.ndarray | object, risk_free: float = 0.0) -> SharpeMoments:
    """Per-period Sharpe ratio, length, skewness and kurtosis of a return series (NaNs are an error).

    ``sharpe = mean(r − risk_free) / std(r, ddof=1)`` (raybt's convention, before annualising);
    ``skew = m3 / m2^1.5``, ``kurtosis = m4 / m2²`` with ``mk`` the k-th central moment (``1/n``). The result
    unpacks into the tests: ``probabilistic_sharpe_ratio(*sharpe_moments(returns))``.
    """
    r = np.asarray(returns, dtype=float).ravel()
    if r.size < 3:
        raise ValueError(f"need at least 3 returns, got {r.size}")
    if np.isnan(r).any():
        raise ValueError(f"returns contain {int(np.isnan(r).sum())} NaN value(s), the first at position "
                         f"{int(np.flatnonzero(np.isnan(r))[0])}; drop or fill them first")
    if r.min() == r.max():  # tested exactly: the std of a constant series is rounding noise, not 0
        raise ValueError("returns are constant: the Sharpe ratio and its moments are undefined")
    excess = r - risk_free
    std = excess.std(ddof=1)
    centred = excess - excess.mean()
    m2 = np.mean(centred**2)
    return SharpeMoments(float(excess.mean() / std), int(r.size), float(np.mean(centred**3) / m2**1.5),
                         float(np.mean(centred**4) / m2**2))


def _sharpe_std_factor(sharpe: float, skew: float, kurtosis: float) -> float:
    """sqrt(1 − γ3·SR + (γ4 − 1)/4 · SR²): the Sharpe ratio's standard error times sqrt(T − 1)."""
    variance = 1.0 - skew * sharpe + (kurtosis - 1.0) / 4.0 * sharpe**2
    if variance <= 0:
        raise ValueError(f"1 - skew*SR + (kurtosis-1)/4*SR^2 = {variance:.4g} <= 0 for SR={sharpe}, skew={skew}, "
                         f"kurtosis={kurtosis}: these moments are inconsistent (is kurtosis excess instead of plain?)")
    return math.sqrt(variance)


def _check_n(n_periods: int) -> None:
    if n_periods < 2:
        raise ValueError(f"n_periods must be >= 2, got {n_periods}")


def probabilistic_sharpe_ratio(sharpe: float, n_periods: int, skew: float = 0.0, kurtosis: float = 3.0,
                               benchmark: float = 0.0) -> float:
    """Probability that the true Sharpe ratio exceeds ``benchmark``, given a Sharpe ratio estimated on
    ``n_periods`` returns with that skewness and (non-excess) kurtosis. All Sharpe ratios per period.

    ``PSR(SR*) = Φ[ (SR − SR*)·sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4·SR²) ]``

    Bailey, D. H. and López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2),
    eq. for PSR (the estimator's variance from Mertens 2002, valid for non-normal i.i.d. returns).
    """
    _check_n(n_periods)
    z = (sharpe - benchmark) * math.sqrt(n_periods - 1) / _sharpe_std_factor(sharpe, skew, kurtosis)
    return _NORMAL.cdf(z)


def min_track_record_length(sharpe: float, skew: float = 0.0, kurtosis: float = 3.0, benchmark: float = 0.0,
                            confidence: float = 0.95) -> float:
    """Minimum number of periods for a Sharpe ratio ``sharpe`` (per period) to be above ``benchmark`` with
    probability ``confidence`` (PSR = confidence); ``math.inf`` when ``sharpe <= benchmark`` (no length suffices).

    ``MinTRL = 1 + (1 − γ3·SR + (γ4 − 1)/4·SR²) · (Φ⁻¹(confidence) / (SR − SR*))²``

    Bailey, D. H. and López de Prado, M. (2012), "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2).
    The result is in periods (bars); divide by ``periods_per_year`` for years.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if sharpe <= benchmark:
        return math.inf
    factor = _sharpe_std_factor(sharpe, skew, kurtosis)
    return 1.0 + factor**2 * (_NORMAL.inv_cdf(confidence) / (sharpe - benchmark)) ** 2


def expected_max_sharpe(n_trials: float, sharpe_variance: float) -> float:
    """Expected maximum of ``n_trials`` independent Sharpe-ratio estimates whose true Sharpe ratio is zero and
    whose variance across trials is ``sharpe_variance`` (same units as the Sharpe ratios; per period here).

    ``E[max SR] ≈ sqrt(V[SR]) · ((1 − γ)·Φ⁻¹(1 − 1/N) + γ·Φ⁻¹(1 − 1/(N·e)))``, γ = Euler–Mascheroni constant.
    One trial has no selection: 0. ``n_trials`` may be fractional (an effective number of trials, >= 1).

    Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias,
    Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 94–107 (the False Strategy
    theorem, from the expected maximum of N standard normals).
    """
    if not n_trials >= 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not sharpe_variance >= 0:
        raise ValueError(f"sharpe_variance must be >= 0, got {sharpe_variance}")
    if n_trials == 1:
        return 0.0
    g = EULER_MASCHERONI
    return math.sqrt(sharpe_variance) * ((1 - g) * _NORMAL.inv_cdf(1 - 1 / n_trials)
                                         + g * _NORMAL.inv_cdf(1 - 1 / (n_trials * math.e)))


def deflated_sharpe_ratio(sharpe: float, n_periods: int, skew: float = 0.0, kurtosis: float = 3.0, *,
                          n_trials: float, sharpe_variance: float) -> float:
    """Probability that the selected strategy's true Sharpe ratio is positive, after selecting it as the best of
    ``n_trials`` trials whose Sharpe ratios have variance ``sharpe_variance`` (all per period).

    ``DSR = PSR(SR0)`` with ``SR0 = E[max SR]`` of :func:`expected_max_sharpe`:
    ``DSR = Φ[ (SR − SR0)·sqrt(T − 1) / sqrt(1 − γ3·SR + (γ4 − 1)/4·SR²) ]``.

    ``n_trials`` is every configuration tried on this data (see :func:`raybt.stats.count_trials`), or an effective
    number of independent trials (:func:`raybt.stats.effective_trials`); ``sharpe_variance`` the variance of all
    trials' per-period Sharpe ratios (``np.var(trial_sharpes, ddof=1)``). A DSR below 0.95 means the Sharpe ratio
    is not significant at 5% once the search is accounted for.

    Bailey, D. H. and López de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias,
    Backtest Overfitting and Non-Normality", Journal of Portfolio Management 40(5), 94–107.
    """
    return probabilistic_sharpe_ratio(sharpe, n_periods, skew, kurtosis,
                                      benchmark=expected_max_sharpe(n_trials, sharpe_variance))


def effective_trials(returns: np.ndarray | object) -> float:
    """Effective number of independent trials among correlated trials: the participation ratio of the
    eigenvalues λ of the trials' correlation matrix C (N trials, columns of ``returns``, periods × trials):

    ``N_eff = (Σλ)² / Σλ² = N² / Σ_ij C_ij²``   (trace C = N; Σλ² = ‖C‖²_F, so no eigendecomposition is needed)

    It is N for uncorrelated trials, 1 for perfectly correlated ones, and for N trials with one common correlation
    ρ it is N² / ((1 + (N−1)ρ)² + (N−1)(1−ρ)²). A heuristic count for :func:`deflated_sharpe_ratio` (the DSR
    paper assumes independent trials and suggests estimating their number, e.g. by clustering; the participation
    ratio is the usual dimension estimate of a correlation spectrum, cf. the "effective rank"). ‖C‖_F is computed
    from whichever Gram matrix is smaller (periods × periods or trials × trials), so 10,000 trials of 8,760
    hourly returns need no 10,000² matrix. Columns must be complete (no NaN) and not constant.
    """
    x = np.asarray(returns, dtype=float)
    if x.ndim != 2 or x.shape[1] < 1 or x.shape[0] < 3:
        raise ValueError(f"returns must be a periods × trials matrix with >= 3 periods, got shape {x.shape}")
    if np.isnan(x).any():
        column = int(np.flatnonzero(np.isnan(x).any(axis=0))[0])
        raise ValueError(f"returns column {column} contains NaN; drop or fill missing periods first")
    z = x - x.mean(axis=0)
    norms = np.sqrt((z**2).sum(axis=0))
    if (norms == 0).any():
        raise ValueError(f"returns column {int(np.flatnonzero(norms == 0)[0])} is constant: its correlation is "
                         f"undefined (drop strategies that never trade)")
    z /= norms
    gram = z @ z.T if z.shape[0] < z.shape[1] else z.T @ z
    n = x.shape[1]
    return float(n**2 / np.sum(gram**2))
