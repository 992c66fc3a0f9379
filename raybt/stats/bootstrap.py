"""White's Reality Check and Hansen's test of Superior Predictive Ability, computed by the ``arch`` package.

Both ask whether the best of many candidates beats a benchmark once the search over all of them is accounted for
(null hypothesis: no candidate has a higher expected return than the benchmark). raybt only arranges the inputs:
``arch.bootstrap.RealityCheck`` / ``arch.bootstrap.SPA`` compare *losses*, so per-period returns enter as losses
``−r``; the bootstrap (stationary by default, Politis & Romano 1994), the statistics and the p-values are arch's.
Install with ``pip install raybt[stats]``.

What arch computes (arch 8.0, read from its source and pinned by ``tests/test_stats.py``): the statistic is the
largest mean excess return, ``max_k mean(r_k − b)``, *not studentized* — arch's ``studentize`` flag does not change
its p-values; the candidates' long-run variances only set the threshold of the "consistent" p-value. The three
p-values differ in which candidates are recentred in the bootstrap: "upper" recentres all (White's Reality Check),
"consistent" leaves out candidates whose mean is below ``−sqrt(ω²/T · 2 log log T)`` (Hansen's SPA_c recentring),
"lower" leaves out every candidate below the benchmark. So :func:`spa_test` is Hansen's consistent test without
Hansen's studentization: still robust to many poor candidates, but a candidate with volatile returns weighs as
much as its mean says.

White, H. (2000), "A Reality Check for Data Snooping", Econometrica 68(5), 1097–1126.
Hansen, P. R. (2005), "A Test for Superior Predictive Ability", Journal of Business & Economic Statistics 23(4),
365–380.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class BootstrapTest:
    """A data-snooping test's outcome. ``pvalue`` is the test's headline p-value (Reality Check: arch's "upper";
    SPA: arch's "consistent"); ``pvalues`` has arch's lower / consistent / upper p-values; ``best`` names the
    candidate with the highest mean excess return."""

    name: str
    pvalue: float
    pvalues: dict[str, float]
    best: Any
    n_candidates: int
    n_periods: int
    reps: int
    block_size: int


def reality_check(returns: pd.DataFrame | np.ndarray, benchmark: pd.Series | np.ndarray | float = 0.0, *,
                  reps: int = 1000, block_size: int | None = None, bootstrap: str = "stationary",
                  seed: int | None = 0) -> BootstrapTest:
    """White's (2000) Reality Check: p-value of "no candidate beats the benchmark" for the candidates' per-period
    returns (periods × candidates) against ``benchmark`` (0 = cash; or per-period returns, e.g. buy and hold).

    Statistic ``max_k mean(r_k − b)``; p-value from ``reps`` bootstrap resamples of the excess returns,
    each recentred at its sample mean (arch's "upper" p-value, White's original, which treats every candidate as
    relevant). Deterministic for a given ``seed``. ``block_size`` defaults to arch's sqrt(T).
    """
    return _run("Reality Check", "RealityCheck", returns, benchmark, reps, block_size, bootstrap, seed,
                headline="upper")


def spa_test(returns: pd.DataFrame | np.ndarray, benchmark: pd.Series | np.ndarray | float = 0.0, *,
             reps: int = 1000, block_size: int | None = None, bootstrap: str = "stationary",
             seed: int | None = 0) -> BootstrapTest:
    """Hansen's (2005) test of Superior Predictive Ability as arch computes it: as :func:`reality_check`, but
    candidates far below the benchmark are not recentred (arch's "consistent" p-value), so many poor candidates do
    not dilute the test; the statistic is not studentized (module docstring). Deterministic for a given ``seed``.
    """
    return _run("SPA", "SPA", returns, benchmark, reps, block_size, bootstrap, seed, headline="consistent")


def _run(name: str, arch_class: str, returns: pd.DataFrame | np.ndarray,
         benchmark: pd.Series | np.ndarray | float, reps: int, block_size: int | None, bootstrap: str,
         seed: int | None, headline: str) -> BootstrapTest:
    try:
        import arch.bootstrap
    except ImportError as exc:
        raise ImportError(f"raybt.stats: the {name} test uses the 'arch' package: pip install 'raybt[stats]'") from exc
    frame = returns if isinstance(returns, pd.DataFrame) else pd.DataFrame(np.asarray(returns, dtype=float))
    if frame.ndim != 2 or frame.shape[1] < 1 or frame.shape[0] < 10:
        raise ValueError(f"{name}: returns must be periods × candidates with >= 10 periods, got {frame.shape}")
    values = frame.to_numpy(dtype=float)
    if np.isnan(values).any():
        column = frame.columns[int(np.flatnonzero(np.isnan(values).any(axis=0))[0])]
        raise ValueError(f"{name}: returns column {column!r} contains NaN; fill or drop those periods first")
    bench = _benchmark(benchmark, frame, name)
    test_class = getattr(arch.bootstrap, arch_class)
    size = block_size if block_size is not None else max(1, int(np.sqrt(len(values))))
    test = test_class(-bench, -values, block_size=size, reps=reps, bootstrap=bootstrap, seed=seed)
    test.compute()
    pvalues = {str(k): float(v) for k, v in test.pvalues.items()}
    best = frame.columns[int(np.argmax(values.mean(axis=0) - bench.mean()))]
    return BootstrapTest(name=name, pvalue=pvalues[headline], pvalues=pvalues, best=best,
                         n_candidates=values.shape[1], n_periods=values.shape[0], reps=reps, block_size=size)


def _benchmark(benchmark: pd.Series | np.ndarray | float, frame: pd.DataFrame, name: str) -> np.ndarray:
    if np.isscalar(benchmark):
        return np.full(len(frame), float(benchmark))
    if isinstance(benchmark, pd.Series) and not benchmark.index.equals(frame.index):
        raise ValueError(f"{name}: the benchmark's index differs from the returns' index; align them first")
    bench = np.asarray(benchmark, dtype=float).ravel()
    if len(bench) != len(frame):
        raise ValueError(f"{name}: benchmark has {len(bench)} periods, returns have {len(frame)}")
    if np.isnan(bench).any():
        raise ValueError(f"{name}: benchmark contains NaN at position {int(np.flatnonzero(np.isnan(bench))[0])}")
    return bench
