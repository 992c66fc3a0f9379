"""A sweep's results as one self-contained HTML page (``raybt report DIR`` and ``results.report(path)``).

The page works offline and from a single file: plotly.js is inlined once in the ``<head>`` and every figure refers
to it; the leaderboard sorts with a few lines of plain JavaScript (no CDN, no network). Sections, in order:

1. **Run** — where the rows come from, rows, failed jobs (the first ones with their error), strategies, symbols, the
   date ranges with their row counts, and each run recorded in ``manifest.json`` (start, raybt version, settings,
   data fingerprint, jobs, executor).
2. **Leaderboard** — the best ``leaderboard`` rows of jobs that ran, by ``metric`` (descending, NaN last); click a
   header to sort by that column (numbers descending first, text ascending; blank values always last).
3. **Heatmaps** — ``metric`` (median over the other parameters and the ranges) for each pair of swept parameters
   (at most :data:`MAX_HEATMAPS`, in column order).
4. **Distributions** — of ``metric``, ``total_return`` and ``max_drawdown``, per range.
5. **Consistency across ranges** — the top 20 strategies by their mean ``metric`` across ranges (with 2+ ranges).
6. **Top N replayed** — equity and drawdown of the best ``top`` rows, recomputed with ``replay`` (a function row →
   :class:`~raybt.backtest.Backtest`, e.g. ``results.backtest``), and the best row in detail (prices, trades).
   Without ``replay`` (no data given) the section says so.
7. **Is it real?** — the :class:`~raybt.verdict.Verdict` of the best row, from ``judge`` (a function row → Verdict,
   e.g. ``results.verdict``): each check with its value, threshold and reading. Without ``judge`` (no data given)
   the section says so; a verdict that cannot be computed shows its error.

Parallel coordinates (:func:`raybt.plots.plot_parallel`) are left out: drawn with WebGL, they took 20 s of the
40 s a 100,000-row report needed to open in Chromium without a GPU (``benchmarks/bench_report.py``).

Every value that comes from the rows or the manifest is HTML-escaped (parameter values are user text). The rows
of a permutation test's directory are reported on the real data's rows alone, with a warning naming what was left
out (:func:`raybt.permuted_rows.rows_of_one_market`).
"""

from __future__ import annotations

import html
import itertools
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raybt import plots
from raybt.permuted_rows import rows_of_one_market

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from raybt.backtest import Backtest
    from raybt.verdict import Verdict

MAX_HEATMAPS = 6
"""At most this many heatmaps (pairs of swept parameters) in a report."""
LEADERBOARD_METRICS = ("total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "win_rate",
                       "profit_factor", "n_trades", "exposure")
"""Metric columns of the leaderboard (after the ranking metric)."""
_DISTRIBUTIONS = ("total_return", "max_drawdown")
_SHOWN_FAILURES = 10

Replay = Callable[[pd.Series], "Backtest"]
Judge = Callable[[pd.Series], "Verdict"]


def write_report(df: pd.DataFrame, path: str | os.PathLike[str], *, manifest: Mapping[str, Any] | None = None,
                 source: str | None = None, replay: Replay | None = None, judge: Judge | None = None,
                 metric: str = "sharpe", top: int = 5, leaderboard: int = 100) -> Path:
    """Write the report of result rows ``df`` to ``path`` (see the module docstring) and return the path.

    ``manifest``: the checkpoint directory's ``manifest.json`` contents (for the run section); ``source``: where
    the rows come from, as shown on the page; ``replay``: recomputes a row's backtest for the top-``top`` section;
    ``judge``: the verdict of the best row for the "Is it real?" section.
    The file is written to a temporary name and renamed into place: a failure leaves no half-written report."""
    page = render_report(df, manifest=manifest, source=source, replay=replay, judge=judge, metric=metric, top=top,
                         leaderboard=leaderboard)
    target = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-report-", suffix=".html", dir=target.parent or ".")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(page)
        os.replace(temporary, target)
    except BaseException:
        os.unlink(temporary)
        raise
    return target


def render_report(df: pd.DataFrame, *, manifest: Mapping[str, Any] | None = None, source: str | None = None,
                  replay: Replay | None = None, judge: Judge | None = None, metric: str = "sharpe", top: int = 5,
                  leaderboard: int = 100) -> str:
    """The report's HTML text (see :func:`write_report`)."""
    go, _ = plots.plotly_modules()
    from plotly.offline import get_plotlyjs

    if df.empty:
        raise ValueError("no result rows to report on")
    df = rows_of_one_market(df, "raybt.report")
    plots._check_metric(df, metric)
    for name, value in (("top", top), ("leaderboard", leaderboard)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    ok = df[df["error"].isna()]
    best = ok.sort_values(metric, ascending=False, na_position="last", kind="stable")
    sections = [
        ("run", "Run", _run_section(df, manifest, source, metric)),
        ("leaderboard", f"Leaderboard: best {min(leaderboard, len(best))} rows by {metric}",
         _leaderboard(best.head(leaderboard), metric)),
        ("heatmaps", "Heatmaps", _heatmaps(df, metric)),
        ("distributions", "Distributions",
         _figures([plots.plot_distribution(df, m) for m in dict.fromkeys([metric, *_DISTRIBUTIONS])])),
        ("ranges", "Consistency across ranges", _ranges(df, metric)),
        ("replayed", f"Top {top} rows replayed", _replayed(best.head(top), replay, metric)),
        ("is-it-real", "Is it real?", _is_it_real(best.head(1), judge, metric)),
    ]
    title = f"raybt report: {source}" if source else "raybt report"
    body = "\n".join(f'<section id="{anchor}"><h2>{html.escape(heading)}</h2>\n{content}\n</section>'
                     for anchor, heading, content in sections)
    contents = " · ".join(f'<a href="#{anchor}">{html.escape(heading.split(":")[0])}</a>'
                          for anchor, heading, _ in sections)
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n"
            f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
            f"<h1>{html.escape(title)}</h1>\n<p class=\"meta\">generated {generated} · {contents}</p>\n{body}\n"
            f"<script>{_SORT_JS}</script>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------------- sections

def _run_section(df: pd.DataFrame, manifest: Mapping[str, Any] | None, source: str | None, metric: str) -> str:
    failed = df[df["error"].notna()]
    symbols = sorted(str(s) for s in df["symbol"].dropna().unique()) if "symbol" in df.columns else []
    facts = [("rows", f"{len(df):,}"), ("failed jobs", f"{len(failed):,}"),
             ("strategies", f"{df['strategy_id'].nunique():,} ({', '.join(sorted(df['strategy'].unique()))})"),
             ("swept parameters", ", ".join(plots.swept_parameters(df)) or "none"),
             ("symbols", ", ".join(symbols) if symbols else "every symbol together (one portfolio per row)")]
    if source:
        facts.insert(0, ("source", source))
    parts = [_key_values(facts), "<h3>Date ranges</h3>", _ranges_table(df, metric)]
    if len(failed):
        shown = failed.head(_SHOWN_FAILURES)
        parts.append(f"<h3>Failed jobs (first {len(shown)} of {len(failed)})</h3>")
        parts.append(_table(["strategy", "range", "error"], [
            [plots.parameter_label(r["strategy"], r["parameters"], r.get("symbol")), r["range"],
             str(r["error"]).strip().splitlines()[-1] if str(r["error"]).strip() else ""]
            for _, r in shown.iterrows()]))
    parts.append("<h3>Runs (manifest.json)</h3>")
    runs = list((manifest or {}).get("runs", []))
    if runs:
        columns = ["started", "raybt_version", "raybt_results_version", "settings", "data_fingerprint", "jobs",
                   "to_run", "executor", "n_workers"]
        parts.append(_table(columns, [[_text(run.get(c, "not recorded")) for c in columns] for run in runs]))
    else:
        parts.append("<p>No manifest.json: the run's settings and raybt version are unknown.</p>")
    return "\n".join(parts)


def _ranges_table(df: pd.DataFrame, metric: str) -> str:
    groups = df.assign(failed=df["error"].notna()).groupby("range", sort=False, dropna=False)
    table = groups.agg(start=("range_start", "first"), end=("range_end", "first"), rows=("key", "size"),
                       failed=("failed", "sum"), median=(metric, "median"))
    rows = [[name, _text(table.at[name, "start"]), _text(table.at[name, "end"]), f"{table.at[name, 'rows']:,}",
             f"{int(table.at[name, 'failed']):,}", _number(table.at[name, "median"])]
            for name in plots._ordered_ranges(df)]
    return _table(["range", "start", "end (exclusive)", "rows", "failed", f"median {metric}"], rows)


def _leaderboard(best: pd.DataFrame, metric: str) -> str:
    """The sortable table; each ``<tr>`` carries its row key (``data-key``), each cell its sort value."""
    params = plots.parameter_columns(best)
    has_symbol = "symbol" in best.columns and best["symbol"].notna().any()
    metrics = [m for m in dict.fromkeys([metric, *LEADERBOARD_METRICS]) if m in best.columns]
    columns = (["#", "strategy", *params] + (["symbol"] if has_symbol else []) + ["range", *metrics])
    numeric = {"#", *metrics} | {p for p in params if pd.api.types.is_numeric_dtype(best[p])
                                 and not pd.api.types.is_bool_dtype(best[p])}
    head = "".join(f'<th data-type="{"number" if c in numeric else "text"}" title="click to sort">{html.escape(c)}'
                   f"</th>" for c in columns)
    body = []
    for rank, (_, row) in enumerate(best.iterrows(), start=1):
        cells = [f'<td data-value="{rank}">{rank}</td>', _cell(row["strategy"], text=True)]
        cells += [_cell(row[p], text=p not in numeric) for p in params]
        if has_symbol:
            cells.append(_cell(row["symbol"], text=True))
        cells.append(_cell(row["range"], text=True))
        cells += [_cell(row[m]) for m in metrics]
        body.append(f'<tr data-key="{html.escape(str(row["key"]))}">{"".join(cells)}</tr>')
    if not body:
        return "<p>No job ran without an error: nothing to rank.</p>"
    return (f'<p class="hint">Click a column header to sort (numbers: largest first; click again to reverse).</p>'
            f'<table class="sortable" id="leaderboard-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>')


def _heatmaps(df: pd.DataFrame, metric: str) -> str:
    swept = plots.swept_parameters(df)
    if len(swept) < 2:
        return f"<p>A heatmap needs two swept parameters; these rows sweep {len(swept)} ({', '.join(swept)}).</p>"
    pairs = list(itertools.combinations(swept, 2))
    note = (f"<p>{len(pairs)} pairs of swept parameters; the first {MAX_HEATMAPS} are shown.</p>"
            if len(pairs) > MAX_HEATMAPS else "")
    return note + _figures([plots.plot_heatmap(df, x, y, metric) for x, y in pairs[:MAX_HEATMAPS]])


def _ranges(df: pd.DataFrame, metric: str) -> str:
    if df["range"].nunique(dropna=False) < 2:
        return "<p>One date range only: nothing to compare across ranges.</p>"
    return _figures([plots.plot_ranges(df, metric, top=20)])


_PASS_THE_DATA = ("pass the data (and the strategy classes) the sweep ran on "
                  "(<code>raybt report DIR --spec SPEC.py</code> or <code>results.report(path, data)</code>).")
"""What the sections that run rows again (replay, verdict) ask for when the report has no data."""


def _replayed(best: pd.DataFrame, replay: Replay | None, metric: str) -> str:
    if replay is None:
        return f"<p>Not recomputed: {_PASS_THE_DATA}</p>"
    if best.empty:
        return "<p>No row to replay.</p>"
    backtests = [replay(row) for _, row in best.iterrows()]
    detail = plots.plot_backtest(backtests[0])
    return (f"<p>The best {len(backtests)} rows by {html.escape(metric)}, run again on the same data and settings "
            f"(metrics equal to the stored rows).</p>" + _figures([plots.plot_equity(backtests)]) +
            "<h3>The best row in detail</h3>" + _figures([detail]))


def _is_it_real(best: pd.DataFrame, judge: Judge | None, metric: str) -> str:
    if judge is None:
        return f"<p>Not judged: {_PASS_THE_DATA}</p>"
    if best.empty:
        return "<p>No row to judge.</p>"
    try:
        verdict = judge(best.iloc[0])
    except ValueError as exc:  # e.g. a best row without a Sharpe ratio: say so instead of losing the whole report
        return f"<p>The verdict of the best row could not be computed: {html.escape(str(exc))}</p>"
    return (f"<p>The best row by {html.escape(metric)}, judged with raybt's selection-bias statistics "
            f"(<code>results.verdict(row, data)</code>).</p>" + verdict._repr_html_())


# ---------------------------------------------------------------------------------------------------- HTML

def _figures(figures: Sequence[go.Figure]) -> str:
    """Figures as ``<div>``s that use the page's single plotly.js."""
    return "\n".join(
        '<div class="figure">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                             default_height=f"{fig.layout.height or 450}px",
                                             config={"responsive": True, "displaylogo": False}) + "</div>"
        for fig in figures)


def _key_values(pairs: Sequence[tuple[str, str]]) -> str:
    return ('<table class="facts">' + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                                              for k, v in pairs) + "</table>")


def _table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _cell(value: Any, text: bool = False) -> str:
    """A leaderboard cell: shown text, and the value sorting uses (blank for null/NaN, sorted last)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return '<td data-value=""></td>'
    if text:
        return f'<td data-value="{html.escape(str(value))}">{html.escape(str(value))}</td>'
    number = float(value)
    sort_value = repr(number) if np.isfinite(number) else ("Infinity" if number > 0 else "-Infinity")  # JS spelling
    return f'<td data-value="{sort_value}">{html.escape(_number(number))}</td>'


def _number(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    number = float(value)
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:.4g}" if np.isfinite(number) else str(number)


def _text(value: Any) -> str:
    if value is None or (not isinstance(value, (str, dict, list)) and pd.isna(value)):
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem 2rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; }
.meta, .hint { color: #666; font-size: .9rem; }
table { border-collapse: collapse; font-size: .85rem; margin: .5rem 0 1rem; }
th, td { border: 1px solid #ddd; padding: .25rem .5rem; text-align: left; vertical-align: top; }
thead th { background: #f3f3f3; position: sticky; top: 0; }
table.facts th { background: #f7f7f7; width: 12rem; }
table.sortable th { cursor: pointer; user-select: none; white-space: nowrap; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable td[data-value] { font-variant-numeric: tabular-nums; }
#leaderboard { max-height: 36rem; overflow: auto; }
.figure { margin: .5rem 0 1.5rem; }
.wide { overflow-x: auto; max-width: 100%; }
"""

_SORT_JS = """
(function () {
  // Sort a table by the clicked column: numbers largest first, text A-Z first; a second click reverses.
  // Blank values (null, NaN) stay last in both orders.
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var numeric = th.dataset.type === "number";
        var current = th.getAttribute("aria-sort");
        var order = current ? (current === "ascending" ? "descending" : "ascending")
                            : (numeric ? "descending" : "ascending");
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", order);
        var sign = order === "ascending" ? 1 : -1;
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = a.cells[column].dataset.value, y = b.cells[column].dataset.value;
          if (x === "" || y === "") { return (x === "") - (y === ""); }
          if (numeric) { return sign * (parseFloat(x) - parseFloat(y)); }
          return sign * x.localeCompare(y);
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
})();
"""
