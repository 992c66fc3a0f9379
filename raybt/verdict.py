"""Is it real? One call that judges a chosen row with every test raybt has: :func:`verdict` → :class:`Verdict`.

``results.verdict(row, data)`` replays the row and its rival candidates, runs the statistics of :mod:`raybt.stats`
on them and returns one :class:`Check` per test, each with its value, the threshold it is held to, a status
(``"pass"``, ``"fail"`` or ``"unknown"``: could not be computed) and one line of plain English.

What is judged, and on what:

* **Sharpe / PSR.** The row's Sharpe ratio (annualised, as stored, and per bar = annualised /
  ``sqrt(periods_per_year)``), with the skewness and kurtosis of its per-bar returns; PSR = probability that its
  true Sharpe ratio is above 0 *if it were the only strategy tried*.
* **Trials.** The true number of configurations tried on this data: :func:`raybt.stats.count_trials` on the
  checkpoint directory (every (strategy, symbol) ever run there, failed and pruned ones included), or, for a sweep
  without a directory, the distinct configurations among the rows in memory; ``n_trials=`` overrides both.
* **DSR.** :func:`raybt.stats.deflated_sharpe_ratio` with those trials and the variance of the per-bar Sharpe
  ratios of the rows of the same range (and symbol) that have one. That variance is the paper's: it holds real
  differences between trials too, so when many trials catch a real effect the hurdle (the best Sharpe expected by
  luck) rises with their spread.
* **Candidates.** The best ``candidates`` rows by ``metric`` in the row's range and symbol (the row itself
  included, first), or the rows of a DataFrame passed as ``candidates``. Their returns come from
  :meth:`Results.returns <raybt.results.Results.returns>`, compounded per ``freq`` period (default daily:
  the bootstrap and CSCV then work on 365 periods a year instead of 8,760 bars; periods without bars are dropped).
  PBO judges the choice *among* the candidates: when the best ones are near-twins (neighbouring parameters riding
  one real effect), picking among them is a coin toss and PBO comes out high although the family is real; pass
  ``candidates=`` rows of your own (e.g. the best of each parameter region) to ask about a wider choice.
* **Rows on permuted markets** (``raybt.load_results`` of a permutation test's directory) are neither rivals nor
  trials: the trials, DSR peers and candidates come from the rows on the real data alone, the others left out with
  a :class:`~raybt.permuted_rows.PermutedRowsWarning`; a row to judge or ``candidates=`` rows on a permuted market
  are an error (:mod:`raybt.permuted_rows`).
* **PBO** of choosing the best of the candidates: :func:`raybt.stats.probability_of_backtest_overfitting`
  (CSCV, ``n_splits`` blocks).
* **SPA and Reality Check** p-values of the candidates against ``benchmark``: ``"zero"`` (cash) or
  ``"buy_and_hold"`` (the close-to-close returns of the row's symbol — of the equal-weighted symbols for a
  portfolio row — with the first bar against the previous close). Computed by the ``arch`` package; without it the
  lines say how to install it.
* **Permutation** p-value, if a permutation test (an object with ``p_value``, ``n_permutations``, ``observed``,
  ``metric`` and ``seed``, e.g. from :func:`raybt.stats.permutation_test`) is given.
* **Walk-forward decay**, if a :class:`raybt.WalkForward` is given: its efficiency (mean OOS Sharpe / mean IS
  Sharpe of the selected strategies) and the mean rank correlation of IS and OOS Sharpe ratios.

Thresholds (:data:`THRESHOLDS`, each overridable with ``thresholds=``), and why:

* PSR and DSR ≥ 0.95: the papers' 5 % significance (Bailey & López de Prado 2012, 2014).
* PBO < 0.5: by its definition PBO ≥ 0.5 means the in-sample best lands at or below the out-of-sample median at
  least half the time — choosing by backtest is then no better than picking at random (Bailey et al. 2015).
* SPA, Reality Check and permutation p-values ≤ 0.05: the usual 5 % test level.
* Walk-forward efficiency ≥ 0.5: the rule of thumb of Pardo (2008, "The Evaluation and Optimization of Trading
  Strategies"): a robust strategy keeps at least half its in-sample performance out of sample.
* Walk-forward rank correlation ≥ 0.2: our judgement call — clearly positive, so that strategies that did better
  in sample also tend to do better out of sample; 0 or below means the ranking was noise.

A check that fails is reported, never hidden; :attr:`Verdict.passed` is False if any check fails, True if every
check passed, None if none failed but some could not be judged. The optional tests not given (permutation,
walk-forward) are not checks: :attr:`Verdict.not_run` lists them with how to run them.
"""

from __future__ import annotations

import html
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from raybt import stats
from raybt.data import DataLike, MarketData, load_ohlcv
from raybt.metrics import infer_periods_per_year
from raybt.permuted_rows import on_permuted_market, real_data_rows
from raybt.results import LOWER_IS_BETTER, _key_of

if TYPE_CHECKING:
    from raybt.results import Results, StrategyClasses

Status = Literal["pass", "fail", "unknown"]
Benchmark = Literal["zero", "buy_and_hold"]

THRESHOLDS: dict[str, float] = {
    "psr": 0.95, "dsr": 0.95, "pbo": 0.5, "spa": 0.05, "reality_check": 0.05, "permutation": 0.05,
    "wf_efficiency": 0.5, "wf_rank_correlation": 0.2,
}
"""The value each check is held to (see the module docstring for why); ``_RULES`` says on which side it passes."""
_RULES: dict[str, str] = {
    "psr": "≥", "dsr": "≥", "pbo": "<", "spa": "≤", "reality_check": "≤", "permutation": "≤", "wf_efficiency": "≥",
    "wf_rank_correlation": "≥",
}
_INSTALL_ARCH = "pip install 'raybt[stats]'"
_PERMUTATION_HINT = ("permutation test: pass permutation=raybt.stats.permutation_test(...) to compare the strategy "
                     "with itself on shuffled markets")
_WALK_FORWARD_HINT = ("walk-forward: pass walk_forward=raybt.walk_forward(...) to measure the in-sample → "
                      "out-of-sample decay")


@dataclass(frozen=True)
class Check:
    """One test of a :class:`Verdict`: ``value`` (NaN when unknown), the ``threshold`` and the side it passes on
    (``rule``: ``"≥"``, ``"≤"`` or ``"<"``), ``status`` and a one-line plain-English ``reading``."""

    name: str
    value: float
    threshold: float
    rule: str
    status: Status
    reading: str


@dataclass(frozen=True)
class Verdict:
    """Is the chosen row real? Built by :func:`verdict` (``results.verdict(row, data)``).

    ``row``: the row's strategy, parameters, symbol, range and key. ``sharpe`` (annualised, as stored),
    ``sharpe_per_period``, ``n_periods`` (bars), ``periods_per_year``, ``n_trials`` (and ``trials_source``: where
    the count comes from), ``n_candidates``, ``checks``: one :class:`Check` per test, and ``not_run``: the optional
    tests not given, each with how to run it. Prints as a plain-text table (``print(v)``), shows as HTML in a
    notebook, and ``to_frame()`` gives a DataFrame.
    """

    row: Mapping[str, Any]
    sharpe: float
    sharpe_per_period: float
    n_periods: int
    periods_per_year: float
    n_trials: float
    trials_source: str
    n_candidates: int
    checks: tuple[Check, ...]
    not_run: tuple[str, ...] = ()

    @property
    def passed(self) -> bool | None:
        """False if any check fails, True if all pass, None if none fails but some are unknown."""
        statuses = {c.status for c in self.checks}
        if "fail" in statuses:
            return False
        return None if "unknown" in statuses else True

    @property
    def conclusion(self) -> str:
        failed = [c.name for c in self.checks if c.status == "fail"]
        unknown = [c.name for c in self.checks if c.status == "unknown"]
        if failed:
            return (f"NOT CONVINCING: fails {len(failed)} of {len(self.checks)} checks ({', '.join(failed)}); "
                    f"treat this row's performance as luck or overfitting")
        judged = len(self.checks) - len(unknown)
        if unknown:
            return (f"UNDECIDED: passes the {judged} checks that could be judged; not judged: {', '.join(unknown)}")
        return f"LOOKS REAL: passes all {judged} checks"

    def __getitem__(self, name: str) -> Check:
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no check named {name!r}; checks: {[c.name for c in self.checks]}")

    def to_frame(self) -> pd.DataFrame:
        """One row per check: check, value, rule, threshold, status, reading."""
        return pd.DataFrame([{"check": c.name, "value": c.value, "rule": c.rule, "threshold": c.threshold,
                              "status": c.status, "reading": c.reading} for c in self.checks])

    def _header(self) -> list[str]:
        where = f"range {self.row.get('range')}" + (f", symbol {self.row['symbol']}" if self.row.get("symbol") else "")
        return [f"Is it real? {self.row.get('strategy')} {self.row.get('parameters')} ({where})",
                f"Sharpe {self.sharpe:.3g} a year ({self.sharpe_per_period:.4g} per bar, {self.n_periods:,} bars, "
                f"{self.periods_per_year:,.0f} bars a year); best of {_count(self.n_trials, 'trial')} "
                f"({self.trials_source}); {_count(self.n_candidates, 'candidate')} for PBO/SPA"]

    def __str__(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = self._header()
        for c in self.checks:
            value = "—" if math.isnan(c.value) else f"{c.value:.3g}"
            lines.append(f"  {c.status.upper():7} {c.name:{width}}  {value:>7} ({c.rule} {c.threshold:g})  "
                         f"{c.reading}")
        lines += [f"  not run: {note}" for note in self.not_run]
        lines.append(f"Verdict: {self.conclusion}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        colours = {"pass": "#1a7f37", "fail": "#cf222e", "unknown": "#9a6700"}
        head = "".join(f"<p>{html.escape(line)}</p>" for line in self._header())
        rows = "".join(
            f'<tr><td style="color:{colours[c.status]};font-weight:bold">{c.status}</td>'
            f"<td>{html.escape(c.name)}</td><td>{'' if math.isnan(c.value) else f'{c.value:.3g}'}</td>"
            f"<td>{html.escape(c.rule)} {c.threshold:g}</td><td>{html.escape(c.reading)}</td></tr>"
            for c in self.checks)
        return (f'<div class="raybt-verdict">{head}<table><thead><tr><th>status</th><th>check</th><th>value</th>'
                f"<th>needs</th><th>what it means</th></tr></thead><tbody>{rows}</tbody></table>"
                + "".join(f"<p>Not run: {html.escape(note)}</p>" for note in self.not_run) +
                f"<p><strong>Verdict: {html.escape(self.conclusion)}</strong></p></div>")


def verdict(results: Results, row: Any, data: DataLike, *, strategy: StrategyClasses = None, metric: str = "sharpe",
            candidates: int | pd.DataFrame = 100, benchmark: Benchmark = "zero", permutation: Any = None,
            walk_forward: Any = None, n_trials: float | None = None, freq: str | None = "1D", n_splits: int = 16,
            reps: int = 1000, seed: int = 0, thresholds: Mapping[str, float] | None = None,
            n_workers: int | None = None) -> Verdict:
    """Judge ``row`` (a row of ``results`` or its key) of a sweep on ``data``; see the module docstring.

    ``strategy``: the strategy class(es), for a loaded directory (as :meth:`Results.backtest`). ``metric``: ranks
    the candidates. ``reps`` and ``seed``: the bootstrap's. ``n_workers``: for replaying the candidates. Only rows
    on the real data are judged and compared (rows of a permutation test's permuted markets are left out with a
    warning, or refused when named: see the module docstring).
    """
    limits = {**THRESHOLDS, **(thresholds or {})}
    unknown_names = sorted(set(limits) - set(THRESHOLDS))
    if unknown_names:
        raise KeyError(f"unknown threshold(s) {unknown_names}; thresholds are {list(THRESHOLDS)}")
    if benchmark not in ("zero", "buy_and_hold"):
        raise ValueError(f"benchmark must be 'zero' or 'buy_and_hold', got {benchmark!r}")
    if metric not in results.df.columns:
        raise KeyError(f"unknown metric {metric!r} to rank the candidates by")
    market = load_ohlcv(data)
    # Results' own helpers: every column of the row even from a lazily loaded directory, and the run's settings
    # (periods_per_year) that reproduce its key.
    chosen = results._full_rows([_key_of(row)]).iloc[0]
    if isinstance(chosen.get("error"), str):
        raise ValueError(f"row {chosen['key']} is a failed job: nothing to judge")
    _refuse_permuted(chosen.to_frame().T, "the row to judge")
    if not np.isfinite(chosen[metric]) or not np.isfinite(chosen["sharpe"]):
        raise ValueError(f"row {chosen['key']} has no {metric}/sharpe value (did it trade?): nothing to judge")
    real = real_data_rows(results.df, "raybt.verdict", stacklevel=3)  # Results.verdict's caller, or verdict's
    peers = _peers(real, chosen)
    rows = _candidates(peers, chosen, candidates, metric)
    if isinstance(candidates, pd.DataFrame):
        _refuse_permuted(results._full_rows(list(rows["key"])), "candidates=")
    returns = results.returns(rows, data=market, strategy=strategy, n_workers=n_workers)
    own = returns[chosen["key"]].dropna()
    settings = results._replayable(chosen, market, strategy).settings
    ppy = settings.periods_per_year or infer_periods_per_year(own.index)
    per_period = float(chosen["sharpe"]) / math.sqrt(ppy)
    moments = stats.sharpe_moments(own)
    trials, source = _trials(results, real, market, n_trials)
    peer_sharpes = peers["sharpe"].replace([np.inf, -np.inf], np.nan).dropna() / math.sqrt(ppy)
    periodic = _periodic(returns, freq)
    bench = _benchmark(market, chosen, returns.index, periodic.index, freq) if benchmark == "buy_and_hold" else 0.0

    judge = _Judge(limits)
    checks = [
        judge.psr(per_period, moments, chosen["sharpe"], ppy),
        judge.dsr(per_period, moments, trials, peer_sharpes, ppy),
        judge.pbo(periodic, n_splits),
        *judge.bootstrap(periodic, bench, benchmark, reps, seed),
        *judge.permutation(permutation),
        *judge.walk_forward(walk_forward),
    ]
    not_run = tuple(note for test, note in ((permutation, _PERMUTATION_HINT), (walk_forward, _WALK_FORWARD_HINT))
                    if test is None)
    return Verdict(row={k: _plain(chosen.get(k)) for k in ("strategy", "parameters", "symbol", "range", "key")},
                   sharpe=float(chosen["sharpe"]), sharpe_per_period=per_period, n_periods=len(own),
                   periods_per_year=float(ppy), n_trials=trials, trials_source=source,
                   n_candidates=periodic.shape[1], checks=tuple(checks), not_run=not_run)


# ------------------------------------------------------------------------------------------- the checks

class _Judge:
    """Builds the checks: value → status by the thresholds, and the plain-English reading."""

    def __init__(self, limits: Mapping[str, float]):
        self.limits = limits

    def check(self, name: str, value: float, reading: str) -> Check:
        limit, rule = self.limits[name], _RULES[name]
        if value is None or not np.isfinite(value):
            return Check(name, math.nan, limit, rule, "unknown", reading)
        ok = {"≥": value >= limit, "≤": value <= limit, "<": value < limit}[rule]
        return Check(name, float(value), limit, rule, "pass" if ok else "fail", reading)

    def unknown(self, name: str, reading: str) -> Check:
        return Check(name, math.nan, self.limits[name], _RULES[name], "unknown", reading)

    def passes(self, name: str, value: float) -> bool:
        return self.check(name, value, "").status == "pass"

    def psr(self, sharpe: float, moments: stats.SharpeMoments, annual: float, ppy: float) -> Check:
        value = stats.probabilistic_sharpe_ratio(sharpe, moments.n_periods, moments.skew, moments.kurtosis)
        need = self.limits["psr"]
        if self.passes("psr", value):
            reading = (f"PSR {value:.2f}: were it the only strategy tried, a Sharpe of {annual:.2f} a year over "
                       f"{moments.n_periods:,} bars would be significant (needs ≥ {need:g})")
        else:
            mintrl = (stats.min_track_record_length(sharpe, moments.skew, moments.kurtosis, confidence=need)
                      if need < 1 else math.inf)
            years = "never" if math.isinf(mintrl) else f"{mintrl:,.0f} bars ({mintrl / ppy:.1f} years)"
            reading = (f"PSR {value:.2f}: even as the only strategy tried, {moments.n_periods:,} bars are too short "
                       f"to tell a Sharpe of {annual:.2f} a year from 0 (needs ≥ {need:g}; track record needed: "
                       f"{years})")
        return self.check("psr", value, reading)

    def dsr(self, sharpe: float, moments: stats.SharpeMoments, n_trials: float, peer_sharpes: pd.Series,
            ppy: float) -> Check:
        if len(peer_sharpes) < 2:
            return self.unknown("dsr", f"DSR needs the Sharpe ratios of 2+ trials in this range to estimate their "
                                       f"variance; {len(peer_sharpes)} found")
        variance = float(np.var(peer_sharpes, ddof=1))
        expected = stats.expected_max_sharpe(n_trials, variance)
        value = stats.deflated_sharpe_ratio(sharpe, moments.n_periods, moments.skew, moments.kurtosis,
                                            n_trials=n_trials, sharpe_variance=variance)
        luck = expected * math.sqrt(ppy)
        if self.passes("dsr", value):
            reading = (f"DSR {value:.2f}: after {_count(n_trials, 'trial')} (best expected by luck alone: Sharpe "
                       f"{luck:.2f} a year), a Sharpe this high is unlikely to be luck "
                       f"(needs ≥ {self.limits['dsr']:g})")
        else:
            reading = (f"DSR {value:.2f}: after {_count(n_trials, 'trial')} (best expected by luck alone: Sharpe "
                       f"{luck:.2f} a year), a Sharpe this high is likely luck (needs ≥ {self.limits['dsr']:g})")
        return self.check("dsr", value, reading)

    def pbo(self, returns: pd.DataFrame, n_splits: int) -> Check:
        try:
            result = stats.probability_of_backtest_overfitting(returns, n_splits=n_splits)
        except ValueError as exc:
            return self.unknown("pbo", f"PBO not computed: {exc}")
        verb = "generalises" if self.passes("pbo", result.pbo) else "is overfit: no better than a random pick"
        reading = (f"PBO {result.pbo:.2f}: the in-sample best of {_count(result.n_candidates, 'candidate')} ranks at "
                   f"or below the median out of sample in {result.pbo:.0%} of {len(result.logits):,} CSCV splits — "
                   f"selection {verb} (needs < {self.limits['pbo']:g})")
        return self.check("pbo", result.pbo, reading)

    def bootstrap(self, returns: pd.DataFrame, bench: pd.Series | float, benchmark: str, reps: int,
                  seed: int) -> list[Check]:
        against = "cash (zero)" if benchmark == "zero" else "buy and hold"
        checks = []
        for name, test in (("spa", stats.spa_test), ("reality_check", stats.reality_check)):
            label = "SPA" if name == "spa" else "Reality Check"
            try:
                result = test(returns, bench, reps=reps, seed=seed)
            except ImportError:
                checks.append(self.unknown(name, f"{label} not computed: it needs the arch package "
                                                 f"({_INSTALL_ARCH})"))
                continue
            except ValueError as exc:
                checks.append(self.unknown(name, f"{label} not computed: {exc}"))
                continue
            if self.passes(name, result.pvalue):
                meaning = f"the best of {_count(result.n_candidates, 'candidate')} beats {against} beyond data snooping"
            else:
                meaning = (f"no candidate of {result.n_candidates:,} beats {against} once the search over them is "
                           f"accounted for")
            checks.append(self.check(name, result.pvalue, f"{label} p = {result.pvalue:.3f}: {meaning} (needs ≤ "
                                                          f"{self.limits[name]:g})"))
        return checks

    def permutation(self, test: Any) -> list[Check]:
        if test is None:
            return []
        value = float(test.p_value)
        if self.passes("permutation", value):
            meaning = "markets with the same bars in random order rarely do as well: the strategy uses their order"
        else:
            meaning = "markets with the same bars in random order often do as well: the order of bars adds nothing"
        return [self.check("permutation", value, f"permutation p = {value:.3f} ({test.n_permutations:,} shuffles, "
                                                  f"{test.metric} {test.observed:.3g}, seed {test.seed}): {meaning} "
                                                  f"(needs ≤ {self.limits['permutation']:g})")]

    def walk_forward(self, wf: Any) -> list[Check]:
        if wf is None:
            return []
        n_folds = len(wf.folds)
        efficiency, correlation = float(wf.efficiency), float(wf.rank_correlation)
        if self.passes("wf_efficiency", efficiency):
            kept = f"kept {efficiency:.0%} of their in-sample Sharpe out of sample"
        elif efficiency >= 0:
            kept = f"lost most of their in-sample Sharpe out of sample (kept {efficiency:.0%})"
        else:
            kept = f"turned negative out of sample (mean OOS Sharpe = {efficiency:.2f} × mean IS Sharpe)"
        eff = self.check("wf_efficiency", efficiency,
                         f"walk-forward efficiency {efficiency:.2f}: over {n_folds} folds the strategies selected in "
                         f"sample {kept} (needs ≥ {self.limits['wf_efficiency']:g})" if np.isfinite(efficiency) else
                         "walk-forward efficiency unknown: no fold has both Sharpe ratios")
        ranked = ("better in sample tends to mean better out of sample"
                  if self.passes("wf_rank_correlation", correlation)
                  else "in-sample ranking says little about out-of-sample ranking")
        rank = self.check("wf_rank_correlation", correlation,
                          f"IS/OOS rank correlation {correlation:.2f} (mean of {n_folds} folds): {ranked} (needs ≥ "
                          f"{self.limits['wf_rank_correlation']:g})" if np.isfinite(correlation) else
                          "rank correlation unknown: run walk_forward with oos_all=True")
        return [eff, rank]


# ------------------------------------------------------------------------------------------- inputs

def _count(n: float, noun: str) -> str:
    """``1 trial``, ``1,000,000 trials``, ``12.5 trials`` (an effective number of trials can be fractional)."""
    number = f"{int(n):,}" if float(n).is_integer() else f"{n:,.1f}"
    return f"{number} {noun}{'' if n == 1 else 's'}"


def _plain(value: Any) -> Any:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _peers(df: pd.DataFrame, chosen: pd.Series) -> pd.DataFrame:
    """Rows run on the same range and symbol as the chosen one (its rivals), failed ones left out."""
    same = (df["range"] == chosen["range"]) & df["error"].isna()
    if "symbol" in df.columns:
        symbol = _plain(chosen.get("symbol"))
        same &= df["symbol"].isna() if symbol is None else df["symbol"] == symbol
    return df[same]


def _candidates(peers: pd.DataFrame, chosen: pd.Series, candidates: int | pd.DataFrame, metric: str) -> pd.DataFrame:
    if isinstance(candidates, pd.DataFrame):
        rows = candidates
    elif isinstance(candidates, int) and not isinstance(candidates, bool) and candidates >= 2:
        usable = peers[np.isfinite(peers[metric]) & (peers["key"] != chosen["key"])]
        best_first = metric in LOWER_IS_BETTER  # ascending for metrics where lower is better, as Results.best
        rows = usable.sort_values([metric, "key"], ascending=[best_first, True], kind="stable").head(candidates - 1)
    else:
        raise ValueError(f"candidates must be an int >= 2 or a DataFrame of rows, got {candidates!r}")
    return pd.DataFrame({"key": list(dict.fromkeys([chosen["key"], *map(str, rows["key"])]))})


def _refuse_permuted(rows: pd.DataFrame, what: str) -> None:
    """A verdict judges results on the real data: rows named to it that ran on a permuted market are an error."""
    permuted = rows[on_permuted_market(rows).to_numpy()]
    if len(permuted):
        first = permuted.iloc[0]
        raise ValueError(f"{what}: row {first['key']} ran on permuted market {first['permutation']} of seed "
                         f"{first['permutation_seed']} of a permutation test ({len(permuted)} such row(s)), not on "
                         f"the real data: a verdict judges rows on the real data (permutation_seed and permutation "
                         f"null); pass the permutation test itself as permutation=")


def _trials(results: Results, real: pd.DataFrame, market: MarketData,
            n_trials: float | None) -> tuple[float, str]:
    if n_trials is not None:
        if not isinstance(n_trials, numbers.Real) or isinstance(n_trials, bool) or not n_trials >= 1:
            raise ValueError(f"n_trials must be a number >= 1 (e.g. stats.effective_trials), got {n_trials!r}")
        return n_trials, "as given"
    if results.checkpoint_dir:
        try:
            count = stats.count_trials(results.checkpoint_dir, market.fingerprint)
        except ValueError as exc:
            raise ValueError(f"the number of trials cannot be counted: {exc}; pass n_trials= yourself") from exc
        return count.n_configurations, "counted in the checkpoint directory, failed and pruned ones included"
    columns = ["strategy_id", "symbol"] if "symbol" in real.columns else ["strategy_id"]
    return (len(real[columns].drop_duplicates()),
            "the rows in memory: no checkpoint directory; pass n_trials= if more were tried")


def _periodic(returns: pd.DataFrame, freq: str | None) -> pd.DataFrame:
    """Candidates' returns compounded per ``freq`` period; periods without any bar dropped."""
    if freq is not None:
        returns = ((1.0 + returns).resample(freq).prod(min_count=1) - 1.0)
    returns = returns.dropna(how="all")
    if returns.isna().any().any():
        raise ValueError("the candidates' returns cover different bars; give candidates of one range and symbol")
    return returns


def _benchmark(market: MarketData, chosen: pd.Series, bars: pd.DatetimeIndex, periods: pd.DatetimeIndex,
               freq: str | None) -> pd.Series:
    """Buy-and-hold returns on the candidates' bars (equal-weighted over symbols for a portfolio row)."""
    symbol = _plain(chosen.get("symbol"))
    rows = [market.symbols.index(symbol)] if symbol is not None else list(range(len(market.symbols)))
    close = pd.DataFrame(market.close[rows].T, index=market.index).ffill()
    held = close.pct_change().mean(axis=1).reindex(bars).fillna(0.0)
    if freq is not None:
        held = (1.0 + held).resample(freq).prod() - 1.0
    return held.reindex(periods).fillna(0.0)
