"""Probability of backtest overfitting by combinatorially symmetric cross-validation (CSCV).

Bailey, D. H., Borwein, J. M., López de Prado, M. and Zhu, Q. J., "The Probability of Backtest Overfitting"
(working paper 2013–2015; Journal of Computational Finance 20(4), 39–69, 2017).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class PBOResult:
    """Outcome of :func:`probability_of_backtest_overfitting`.

    ``pbo``: share of splits whose in-sample winner ranks at or below the out-of-sample median (logit <= 0).
    ``logits``: λ of every split, in the order of ``itertools.combinations(range(n_splits), n_splits // 2)``
    (the in-sample half). ``is_performance`` / ``oos_performance``: the in-sample winner's Sharpe ratio (per
    period) in and out of sample, per split — their relation is the paper's performance degradation.
    ``n_periods_used``: rows used (a multiple of ``n_splits``; the oldest ``T mod n_splits`` rows are dropped).
    """

    pbo: float
    logits: np.ndarray
    is_performance: np.ndarray
    oos_performance: np.ndarray
    n_splits: int
    n_periods_used: int
    n_candidates: int


def probability_of_backtest_overfitting(returns: np.ndarray | pd.DataFrame, n_splits: int = 16,
                                        chunk: int = 512) -> PBOResult:
    """PBO of choosing the best of the candidates (columns of ``returns``, periods × candidates) by Sharpe ratio.

    CSCV: the rows are cut into ``n_splits`` (even, S) contiguous blocks of equal length. For each of the
    C(S, S/2) ways to pick S/2 blocks as the in-sample set J (the rest, J̄, is out of sample):

    * n* = the candidate with the highest in-sample Sharpe ratio (mean / std, ddof=1, per period);
    * ω = its relative rank out of sample, ω = r / (N + 1), r ∈ 1..N its OOS rank (ties share the average rank);
    * λ = ln(ω / (1 − ω)).

    ``PBO = #{λ <= 0} / C(S, S/2)``: the probability that the in-sample optimum performs at or below the median
    out of sample. PBO near 0: selection generalises; 0.5 and above: choosing the in-sample best is no better
    than picking at random. A block in which a candidate's returns are constant has Sharpe 0 if they are zero
    (it did not trade) and ±inf otherwise. ``returns`` must be complete (no NaN), with at least 2 candidates and
    one row per block. ``chunk`` bounds memory: splits are evaluated ``chunk`` at a time.
    """
    x = np.asarray(returns, dtype=float)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"returns must be a periods × candidates matrix with >= 2 candidates, got shape {x.shape}")
    if np.isnan(x).any():
        column = int(np.flatnonzero(np.isnan(x).any(axis=0))[0])
        name = returns.columns[column] if isinstance(returns, pd.DataFrame) else column
        raise ValueError(f"returns column {name!r} contains NaN; fill periods without a position with 0 or drop them")
    if n_splits < 2 or n_splits % 2:
        raise ValueError(f"n_splits must be an even number >= 2, got {n_splits}")
    block = x.shape[0] // n_splits
    if block < 2:
        raise ValueError(f"{x.shape[0]} periods are too few for {n_splits} splits (each needs >= 2 periods)")
    used = block * n_splits
    x = x[x.shape[0] - used:]
    # Shift each column by its mean before summing powers: variance from sums then loses no precision.
    shift = x.mean(axis=0)
    blocks = (x - shift).reshape(n_splits, block, x.shape[1])
    sums, squares = blocks.sum(axis=1), (blocks**2).sum(axis=1)          # n_splits × N
    traded = (x != 0).reshape(n_splits, block, x.shape[1]).sum(axis=1)   # non-zero returns per block
    halves = np.array(list(itertools.combinations(range(n_splits), n_splits // 2)))
    membership = np.zeros((len(halves), n_splits))
    membership[np.arange(len(halves))[:, None], halves] = 1.0
    n_half = block * (n_splits // 2)
    logits, is_perf, oos_perf = [], [], []
    for lo in range(0, len(halves), chunk):
        inside = membership[lo:lo + chunk]
        outside = 1 - inside
        sharpe_in = _sharpe(inside @ sums, inside @ squares, inside @ traded, n_half, shift)
        sharpe_out = _sharpe(outside @ sums, outside @ squares, outside @ traded, n_half, shift)
        best = np.argmax(sharpe_in, axis=1)
        rows = np.arange(len(inside))
        chosen = sharpe_out[rows, best][:, None]
        rank = (sharpe_out < chosen).sum(axis=1) + ((sharpe_out == chosen).sum(axis=1) + 1) / 2
        omega = rank / (x.shape[1] + 1)
        logits.append(np.log(omega / (1 - omega)))
        is_perf.append(sharpe_in[rows, best])
        oos_perf.append(sharpe_out[rows, best])
    logit = np.concatenate(logits)
    return PBOResult(pbo=float(np.mean(logit <= 0)), logits=logit, is_performance=np.concatenate(is_perf),
                     oos_performance=np.concatenate(oos_perf), n_splits=n_splits, n_periods_used=used,
                     n_candidates=x.shape[1])


def _sharpe(shifted_sum: np.ndarray, shifted_squares: np.ndarray, n_traded: np.ndarray, n: int,
            shift: np.ndarray) -> np.ndarray:
    """Per-period Sharpe ratios from sums of (r − shift) and (r − shift)² over n periods; 0 where every return
    was zero (``n_traded == 0``: tested exactly, as the sums would leave rounding noise), ±inf where the returns
    are a non-zero constant."""
    mean_shifted = shifted_sum / n
    variance = np.maximum(shifted_squares - n * mean_shifted**2, 0.0) / (n - 1)
    mean = mean_shifted + shift
    std = np.sqrt(variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        sharpe = np.where(std > 0, mean / std, np.sign(mean) * np.inf)
    return np.where(n_traded == 0, 0.0, sharpe)

