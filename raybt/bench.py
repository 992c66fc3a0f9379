"""``raybt bench SPEC.py``: time a sample of a sweep with 1, 2, … N workers and extrapolate to the whole sweep.

The sample is ``sample`` strategies spread evenly over the spec's list (every k-th, so a grid's corners and middle
are all in), each on every range of the spec (and every symbol, for a per-symbol sweep), with the spec's costs and
settings, in memory (no checkpoints, nothing written). Each worker count runs the same sample once after a warm-up
(numba kernels compiled and cached, Ray started and its workers imported), so the figures are steady-state costs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from raybt.data import load_ohlcv
from raybt.resources import Recommendation, recommended_workers
from raybt.strategy import Strategy
from raybt.sweep import run_backtests

_NOT_TIMED = ("checkpoint_dir", "checkpoint_batch_size", "show_progress", "n_workers", "batch_size", "profile",
              "rerun_errors", "continue_on_error")
"""Spec options the bench sets itself."""


def bench(strategies: Sequence[Strategy], data: Any, options: Mapping[str, Any], *, sample: int = 100,
          max_workers: int, address: str | None = None) -> tuple[pd.DataFrame, Recommendation]:
    """Time the sample with 1 (in this process) and 2..``max_workers`` Ray workers.

    Returns the table (one row per worker count: ``workers``, ``seconds``, ``ms_per_backtest`` — wall time per
    backtest of the sample —, ``speedup`` against one worker and ``full_spec_s``, the whole spec's extrapolated
    time: ms per backtest × all its jobs; ``table.attrs`` holds ``sample_jobs`` and ``full_jobs``) and what
    :func:`~raybt.recommended_workers` chooses for the whole spec. Each Ray run uses batches of ``ceil(jobs / (4 × workers))`` jobs, so
    every worker gets several."""
    strategies = list(strategies)
    if not strategies:
        raise ValueError("the spec has no strategies")
    market = load_ohlcv(data)
    run_options = {k: v for k, v in options.items() if k not in _NOT_TIMED}
    step = max(1, len(strategies) // sample)
    chosen = strategies[::step][:sample]
    n_units = len(market.symbols) if run_options.get("per_symbol") else 1
    n_ranges = _n_ranges(run_options.get("date_ranges"))
    full_jobs = len(strategies) * n_ranges * n_units
    sample_jobs = len(chosen) * n_ranges * n_units
    rows = []
    for workers in [1, *range(2, max_workers + 1)]:
        n_workers = None if workers == 1 else workers
        batch = max(1, math.ceil(sample_jobs / (4 * workers)))

        def sweep(selection: Sequence[Strategy], batch_size: int) -> None:
            run_backtests(selection, market, n_workers=n_workers, batch_size=batch_size, address=address,
                          show_progress=False, **run_options)

        sweep(chosen[:2 * workers], 1)  # warm-up: kernels compiled, Ray and every worker up
        started = time.perf_counter()
        sweep(chosen, batch)
        seconds = time.perf_counter() - started
        rows.append({"workers": workers, "seconds": seconds, "ms_per_backtest": 1000 * seconds / sample_jobs})
    table = pd.DataFrame(rows)
    table["speedup"] = table["seconds"].iloc[0] / table["seconds"]
    table["full_spec_s"] = table["ms_per_backtest"] / 1000 * full_jobs
    table.attrs.update(sample_jobs=sample_jobs, full_jobs=full_jobs)
    return table, recommended_workers(market, n_jobs=full_jobs)


def _n_ranges(date_ranges: Any) -> int:
    if date_ranges is None or not isinstance(date_ranges, (list, tuple)):
        return 1
    return len(dict.fromkeys(date_ranges))


def format_table(table: pd.DataFrame, recommendation: Recommendation) -> str:
    """The bench table as text, with the extrapolation basis and the recommendation."""
    sample_jobs, full_jobs = table.attrs["sample_jobs"], table.attrs["full_jobs"]
    shown = table.rename(columns={"seconds": "sample s", "ms_per_backtest": "ms/backtest", "speedup": "speed-up",
                                  "full_spec_s": "whole spec s"})
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    return (f"sample: {sample_jobs:,} backtests; whole spec: {full_jobs:,} backtests\n{text}\n"
            f"recommended_workers(): {recommendation}")
