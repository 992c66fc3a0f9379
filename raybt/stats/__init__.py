"""Is it real? Statistics against selection bias: how much of the best backtest's performance is luck.

=====================================  ==========================================================================
:func:`sharpe_moments`                 per-period Sharpe ratio, length, skewness, kurtosis of a return series
:func:`probabilistic_sharpe_ratio`     P(true Sharpe > benchmark) — Bailey & López de Prado (2012)
:func:`min_track_record_length`        periods needed for that probability to reach a confidence — same paper
:func:`expected_max_sharpe`            expected best Sharpe of N zero-skill trials — Bailey & López de Prado (2014)
:func:`deflated_sharpe_ratio`          PSR against that expected maximum — Bailey & López de Prado (2014)
:func:`effective_trials`               effective number of independent trials from their return correlations
:func:`count_trials`                   the true number of trials stored in a checkpoint directory
:func:`probability_of_backtest_overfitting`  PBO by CSCV — Bailey, Borwein, López de Prado & Zhu (2015)
:func:`reality_check`, :func:`spa_test`      White (2000) / Hansen (2005), computed by the ``arch`` package
:func:`permutation_test`               best strategy vs. the same on permuted markets — Phipson & Smyth (2010) p-value
=====================================  ==========================================================================

Units: Sharpe ratios are per period (not annualised) throughout; see :mod:`raybt.stats.sharpe` — except in
:func:`permutation_test`, which compares a result column (``sharpe`` there is annualised, as in ``results.df``).
Everything but the two bootstrap tests needs only numpy; those need ``pip install raybt[stats]`` (arch). The
permutation test runs backtests (a sweep), not just statistics.
"""

from raybt.stats.bootstrap import BootstrapTest, reality_check, spa_test
from raybt.stats.pbo import PBOResult, probability_of_backtest_overfitting
from raybt.stats.permutation import PermutationTest, PermutationWarning, permutation_test
from raybt.stats.sharpe import (SharpeMoments, deflated_sharpe_ratio, effective_trials, expected_max_sharpe,
                                min_track_record_length, probabilistic_sharpe_ratio, sharpe_moments)
from raybt.stats.trials import TrialCount, TrialCountWarning, count_trials

__all__ = [
    "BootstrapTest", "PBOResult", "PermutationTest", "PermutationWarning", "SharpeMoments", "TrialCount",
    "TrialCountWarning", "count_trials", "deflated_sharpe_ratio", "effective_trials", "expected_max_sharpe",
    "min_track_record_length", "permutation_test", "probabilistic_sharpe_ratio", "probability_of_backtest_overfitting",
    "reality_check", "sharpe_moments", "spa_test",
]
