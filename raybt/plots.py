"""Interactive plotly figures of a sweep's result rows and of single backtests (the ``plot`` extra).

Every function returns a :class:`plotly.graph_objects.Figure`: it shows itself in Jupyter and VS Code, and
``fig.write_html(path)`` writes a file that works offline (plotly ships plotly.js). plotly is imported when a plot is
made, so raybt works without it; a missing plotly is an :class:`ImportError` that says ``pip install raybt[plot]``.

Conventions shared by the result plots (they take ``results.df``):

* **Nothing is dropped silently.** A parameter set whose metric is NaN (no trades, a failed job) is a blank cell in a
  heatmap, never a missing row or column; rows a plot cannot show (NaN or infinite values in a histogram or a
  parallel-coordinates plot) are counted in the figure's title.
* **Parameters** are the columns that are neither result columns (:data:`raybt.strategy.RESULT_COLUMNS`) nor metrics
  (:data:`raybt.metrics.METRIC_NAMES`); *swept* parameters take more than one value in the rows.
* Parameter values on categorical axes are in ascending order; a null value (a parameter set to ``None``) is the
  category ``"None"``, last.
* **One market.** The rows of a permutation test's directory (real data and permuted markets) are never compared
  together: a plot uses the real data's rows and says what it left out
  (:func:`raybt.permuted_rows.rows_of_one_market`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from raybt.data import DateRange
from raybt.metrics import METRIC_NAMES
from raybt.permuted_rows import rows_of_one_market
from raybt.strategy import RESULT_COLUMNS

if TYPE_CHECKING:
    import plotly.graph_objects as go

    from raybt.backtest import Backtest

HEATMAP_AGGREGATES = ("median", "mean", "min", "max", "std", "count")
"""Named aggregations :func:`plot_heatmap` accepts (or any callable taking a Series of the cell's values)."""
_NONE = "None"
_MAX_ANNOTATED_CELLS = 400  # above this, cell values are in the hover only (text would be unreadable)


def plotly_modules() -> tuple[Any, Callable[..., Any]]:
    """``(plotly.graph_objects, plotly.subplots.make_subplots)``, or an ImportError naming the extra to install."""
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise ImportError("raybt's plots and HTML report need plotly, which is not installed: "
                          "pip install 'raybt[plot]'") from exc
    return go, make_subplots


# ------------------------------------------------------------------------------------------ result columns

def parameter_columns(df: pd.DataFrame) -> list[str]:
    """The parameter columns of result rows, in column order."""
    return [c for c in df.columns if c not in RESULT_COLUMNS and c not in METRIC_NAMES]


def swept_parameters(df: pd.DataFrame) -> list[str]:
    """Parameter columns that take more than one value (null counts as a value)."""
    return [c for c in parameter_columns(df) if df[c].nunique(dropna=False) > 1]


def _check_metric(df: pd.DataFrame, metric: str) -> None:
    if metric not in df.columns or not pd.api.types.is_numeric_dtype(df[metric]):
        raise KeyError(f"unknown metric {metric!r}; metrics are {list(METRIC_NAMES)}")


def _check_parameter(df: pd.DataFrame, name: str) -> None:
    if name not in parameter_columns(df):
        raise KeyError(f"unknown parameter {name!r}; the rows' parameters are {parameter_columns(df)}")


def _rows_of_range(df: pd.DataFrame, date_range: str | DateRange | None) -> pd.DataFrame:
    """The rows of one date range (by name, or a DateRange's name); all rows for None."""
    if date_range is None:
        return df
    name = date_range.name if isinstance(date_range, DateRange) else date_range
    if name not in set(df["range"]):
        raise ValueError(f"no rows for date range {name!r}; the rows' ranges are {_ordered_ranges(df)}")
    return df[df["range"] == name]


def _ordered_ranges(df: pd.DataFrame) -> list[str]:
    """Range names in chronological order of their start (open starts first), then by name."""
    firsts = df.groupby("range", sort=False, dropna=False)["range_start"].first()
    order = sorted(firsts.index, key=lambda name: (pd.notna(firsts[name]), firsts[name] if pd.notna(firsts[name])
                                                   else pd.Timestamp(0, tz="UTC"), str(name)))
    return list(order)


def _axis(column: pd.Series) -> tuple[pd.Series, list]:
    """A parameter column as axis categories: the values, nulls replaced by ``"None"``; and the categories in
    order (ascending values, then ``"None"``)."""
    values = sorted(column.dropna().unique().tolist())
    if column.isna().any():
        return column.astype(object).where(column.notna(), _NONE), values + [_NONE]
    return column, values


def _rows_with_parameters(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Rows of strategy classes that have every parameter in ``names`` (a null column value of another class means
    "no such parameter", not "None"): read from each class's first ``parameters`` JSON."""
    keep = [strategy for strategy, parameters in df.groupby("strategy", sort=False)["parameters"].first().items()
            if set(names) <= set(json.loads(parameters))]
    return df[df["strategy"].isin(keep)]


def parameter_label(strategy: str, parameters: str, symbol: Any = None) -> str:
    """``"SmaCross fast=10 slow=50"`` from a row's ``strategy`` and ``parameters`` (plus ``" · SYMBOL"``)."""
    values = " ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in json.loads(parameters).items())
    label = f"{strategy} {values}".strip()
    return label if symbol is None or pd.isna(symbol) else f"{label} · {symbol}"


# ------------------------------------------------------------------------------------------------ heatmap

def heatmap_cells(df: pd.DataFrame, x: str, y: str, metric: str = "sharpe", agg: str | Callable = "median",
                  date_range: str | DateRange | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The cells of :func:`plot_heatmap`: ``(values, rows, rows_with_value)``, three frames indexed by the ``y``
    values (ascending) with a column per ``x`` value (ascending). Every (x, y) pair present in the rows is a cell
    even when all its values are NaN; pairs that never occur are NaN with 0 rows."""
    df = rows_of_one_market(df, "raybt.plots.heatmap_cells")
    _check_parameter(df, x)
    _check_parameter(df, y)
    _check_metric(df, metric)
    if x == y:
        raise ValueError(f"x and y are both {x!r}; a heatmap needs two different parameters")
    if not callable(agg) and agg not in HEATMAP_AGGREGATES:
        raise ValueError(f"unknown agg {agg!r}; use one of {list(HEATMAP_AGGREGATES)} or a function")
    rows = _rows_with_parameters(_rows_of_range(df, date_range), [x, y])
    x_values, x_order = _axis(rows[x])
    y_values, y_order = _axis(rows[y])
    groups = rows[metric].groupby([y_values.rename(y), x_values.rename(x)], dropna=False, sort=False)

    def grid(series: pd.Series) -> pd.DataFrame:
        table = series.unstack(x) if len(series) else pd.DataFrame()
        return table.reindex(index=pd.Index(y_order, name=y), columns=pd.Index(x_order, name=x))

    values = grid(groups.agg(agg).astype(float))
    counts = grid(groups.size()).fillna(0).astype(int)
    with_value = grid(groups.count()).fillna(0).astype(int)
    return values, counts, with_value


def plot_heatmap(df: pd.DataFrame, x: str, y: str, metric: str = "sharpe", agg: str | Callable = "median",
                 date_range: str | DateRange | None = None) -> go.Figure:
    """``metric`` over two parameters: one cell per (``x``, ``y``) pair, its rows (every other parameter, range and
    symbol, or one range with ``date_range``) aggregated with ``agg`` ("median" by default; NaN values skipped).
    A pair whose rows have no value (no trades, failed jobs) is a blank cell, never a missing row or column; the hover
    shows the parameter values, the aggregate and the number of rows in the cell (and how many had a value). Only
    rows of strategy classes that have both parameters are used; the title counts any other rows left out."""
    go, _ = plotly_modules()
    df = rows_of_one_market(df, "raybt.plots.plot_heatmap")
    values, counts, with_value = heatmap_cells(df, x, y, metric, agg, date_range)
    agg_name = agg if isinstance(agg, str) else getattr(agg, "__name__", "agg")
    finite = values.to_numpy()[np.isfinite(values.to_numpy())]
    colour_range = {"zmin": finite.min(), "zmax": finite.max()} if finite.size and finite.size < values.notna().sum(
        ).sum() else {}  # infinite cells (e.g. profit_factor) take the end colours instead of breaking the scale
    heatmap = go.Heatmap(
        z=values.to_numpy(), x=list(values.columns), y=list(values.index), colorscale="RdYlGn",
        customdata=np.dstack([counts.to_numpy(), with_value.to_numpy()]), colorbar={"title": {"text": metric}},
        hovertemplate=(f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric} ({agg_name})=%{{z:.4g}}<br>"
                       "rows: %{customdata[0]} (with a value: %{customdata[1]})<extra></extra>"),
        **colour_range)
    if values.size <= _MAX_ANNOTATED_CELLS:
        heatmap.update(texttemplate="%{z:.2f}", textfont={"size": 10})
    fig = go.Figure(heatmap)
    scope = _scope(df, date_range)
    left_out = len(_rows_of_range(df, date_range)) - int(counts.to_numpy().sum())
    note = f"; {left_out} rows of strategies without {x} and {y} left out" if left_out else ""
    fig.update_layout(title={"text": f"{metric} ({agg_name} over {scope}) by {x} and {y}{note}"},
                      xaxis={"title": {"text": x}, "type": "category"},
                      yaxis={"title": {"text": y}, "type": "category"})
    return fig


def _scope(df: pd.DataFrame, date_range: str | DateRange | None) -> str:
    """What a heatmap cell aggregates, in words."""
    if date_range is not None:
        name = date_range.name if isinstance(date_range, DateRange) else date_range
        return f"other parameters, range {name}"
    n_ranges = df["range"].nunique(dropna=False)
    return f"other parameters and {n_ranges} ranges" if n_ranges > 1 else "other parameters"


# ------------------------------------------------------------------------------------- other result plots

def plot_distribution(df: pd.DataFrame, metric: str = "sharpe") -> go.Figure:
    """Histogram of ``metric`` over the rows, one overlaid trace per date range (chronological), on bins shared by
    every range (:func:`histogram_bin_edges`). The counts are computed here, not in the browser, so the figure holds
    a few hundred numbers whatever the number of rows. NaN and infinite values cannot be binned: the title counts
    them."""
    go, _ = plotly_modules()
    df = rows_of_one_market(df, "raybt.plots.plot_distribution")
    _check_metric(df, metric)
    fig = go.Figure()
    values = df[metric].to_numpy(dtype=float)
    finite = np.isfinite(values)
    if finite.any():
        edges = histogram_bin_edges(values[finite])
        positions = df.groupby("range", sort=False, dropna=False).indices  # range name -> its rows
        for name in _ordered_ranges(df):
            in_range = values[positions[name]]
            counts, _ = np.histogram(in_range[np.isfinite(in_range)], bins=edges)
            fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), name=str(name),
                                 opacity=0.6, customdata=np.stack([edges[:-1], edges[1:]], axis=1),
                                 hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y} rows"))
    n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    unshown = [f"{n} {what}" for n, what in ((n_nan, "NaN"), (n_inf, "infinite")) if n]
    note = f" ({' and '.join(unshown)} not shown)" if unshown else ""
    fig.update_layout(barmode="overlay", bargap=0,
                      title={"text": f"Distribution of {metric} over {len(df):,} rows{note}"},
                      xaxis={"title": {"text": metric}}, yaxis={"title": {"text": "rows"}},
                      legend={"title": {"text": "range"}})
    return fig


MAX_HISTOGRAM_BINS = 200
"""The most bins :func:`histogram_bin_edges` gives."""


def histogram_bin_edges(values: np.ndarray) -> np.ndarray:
    """Equal-width bin edges over finite ``values`` (at least one) from their minimum to their maximum, the last bin
    closed: as many bins as numpy's ``"auto"`` rule asks for (the larger count of Sturges' and Freedman-Diaconis'
    rules), at most :data:`MAX_HISTOGRAM_BINS` (a heavy tail would otherwise ask for millions of narrow bins).

    >>> histogram_bin_edges(np.array([0.0, 1.0, 2.0, 3.0]))
    array([0., 1., 2., 3.])
    """
    n = values.size
    sturges = np.ceil(np.log2(n)) + 1
    q25, q75 = np.percentile(values, [25, 75])
    span = float(values.max()) - float(values.min())
    freedman_diaconis = np.ceil(span / (2 * (q75 - q25) * n ** (-1 / 3))) if q75 > q25 else 0.0
    return np.histogram_bin_edges(values, bins=int(min(MAX_HISTOGRAM_BINS, max(sturges, freedman_diaconis))))


def ranges_table(df: pd.DataFrame, metric: str = "sharpe", top: int = 20, ascending: bool = False) -> pd.DataFrame:
    """The table :func:`plot_ranges` draws: one row per strategy (and symbol, in per-symbol sweeps) labelled
    ``"SmaCross fast=10 slow=50"``, one column per range (chronological), the ``top`` strategies by the mean of
    ``metric`` over their ranges (NaN ranges skipped; strategies without any value last)."""
    df = rows_of_one_market(df, "raybt.plots.ranges_table")
    _check_metric(df, metric)
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    identity = ["strategy_id", "symbol"]
    if df.duplicated([*identity, "range"]).any():
        raise ValueError("several rows share a strategy, symbol and range; pass the rows of one sweep")
    table = df.set_index([*identity, "range"])[metric].astype(float).unstack("range")
    table = table.reindex(columns=_ordered_ranges(df))
    order = table.mean(axis=1, skipna=True).sort_values(ascending=ascending, na_position="last", kind="stable")
    table = table.loc[order.index[:top]]
    firsts = df.drop_duplicates(identity).set_index(identity)
    labels = [parameter_label(firsts.at[i, "strategy"], firsts.at[i, "parameters"], i[1]) for i in table.index]
    duplicated = pd.Series(labels).duplicated(keep=False).to_numpy()
    table.index = [f"{label} #{i[0][:6]}" if dup else label for label, i, dup in zip(labels, table.index, duplicated)]
    table.columns.name = "range"
    return table


def plot_ranges(df: pd.DataFrame, metric: str = "sharpe", top: int = 20, ascending: bool = False) -> go.Figure:
    """The same strategies across date ranges: a strategies × ranges grid of ``metric`` for the ``top``
    strategies by its mean over the ranges (see :func:`ranges_table`; ``ascending=True`` for metrics where lower
    is better), best first, coloured around 0 so that losing ranges stand out. NaN cells are blank."""
    go, _ = plotly_modules()
    table = ranges_table(rows_of_one_market(df, "raybt.plots.plot_ranges"), metric, top, ascending)
    fig = go.Figure(go.Heatmap(
        z=table.to_numpy(), x=[str(c) for c in table.columns], y=list(table.index), colorscale="RdYlGn", zmid=0,
        texttemplate="%{z:.2f}", colorbar={"title": {"text": metric}},
        hovertemplate="%{y}<br>range %{x}<br>" + metric + "=%{z:.4g}<extra></extra>"))
    fig.update_layout(title={"text": f"{metric} per range: top {len(table)} strategies by mean {metric}"},
                      xaxis={"title": {"text": "range"}, "type": "category"},
                      yaxis={"autorange": "reversed", "type": "category"},
                      height=max(350, 120 + 24 * len(table)))
    return fig


def plot_parallel(df: pd.DataFrame, metric: str = "sharpe", max_rows: int | None = None) -> go.Figure:
    """Parallel coordinates: one line per row over every swept parameter and ``metric`` (the last axis and the
    line colour). Text, boolean or partly null parameters are categorical axes. Rows without a finite value cannot
    be drawn: the title counts them. With ``max_rows``, only the best ``max_rows`` rows by ``metric`` are drawn
    (the title says so): a browser draws 100,000 lines slowly, and they hide each other anyway."""
    go, _ = plotly_modules()
    df = rows_of_one_market(df, "raybt.plots.plot_parallel")
    _check_metric(df, metric)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    values = df[metric].to_numpy(dtype=float)
    finite = df[np.isfinite(values)]
    shown = finite if max_rows is None or len(finite) <= max_rows else finite.nlargest(max_rows, metric)
    dimensions = [_dimension(shown[name], name) for name in swept_parameters(df)]
    dimensions.append({"label": metric, "values": shown[metric].to_numpy(dtype=float)})
    fig = go.Figure(go.Parcoords(line={"color": shown[metric].to_numpy(dtype=float), "colorscale": "RdYlGn",
                                       "showscale": True, "colorbar": {"title": {"text": metric}}},
                                 dimensions=dimensions))
    notes = [f"{len(df) - len(finite)} rows without a finite {metric} not shown"] if len(finite) < len(df) else []
    if len(shown) < len(finite):
        notes.append(f"only the best {len(shown):,} of {len(finite):,} by {metric}")
    note = f" ({'; '.join(notes)})" if notes else ""
    fig.update_layout(title={"text": f"{metric} over the swept parameters: {len(shown):,} rows{note}"})
    return fig


def _dimension(column: pd.Series, name: str) -> dict:
    """A parallel-coordinates axis: numbers as they are, anything else as ordered categories."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column) and column.notna().all():
        return {"label": name, "values": column.to_numpy(dtype=float)}
    labels, order = _axis(column)
    codes = pd.Categorical(labels, categories=order).codes
    return {"label": name, "values": codes, "tickvals": list(range(len(order))),
            "ticktext": [str(v) for v in order]}


# ------------------------------------------------------------------------------------------ single backtests

def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown at each bar: equity over its running peak, minus 1 (0 at a new high, negative below)."""
    return equity / equity.cummax() - 1


def backtest_label(bt: Backtest) -> str:
    """``"SmaCross fast=10 slow=50 · 2022"``: the strategy, its parameters and the range."""
    values = " ".join(f"{k}={v}" for k, v in bt.strategy.params.items())
    span = bt.date_range.name if bt.date_range is not None else "all data"
    return f"{type(bt.strategy).__name__} {values} · {span}".replace("  ", " ")


def plot_backtest(bt: Backtest, symbols: Sequence[str] | None = None) -> go.Figure:
    """One backtest: for each symbol (all of ``bt.prices``, or ``symbols``) its close with the trades' entries
    (triangles: up for long, down for short) and exits (crosses; circles for trades still open at the end), then
    the equity curve, the drawdown and a table of the trades. Price panes share the time axis with equity and
    drawdown (zoom one, all follow)."""
    go, make_subplots = plotly_modules()
    if bt.prices is None:
        raise ValueError("this Backtest has no prices to plot (it was not made by raybt.run_backtest)")
    names = list(bt.prices.columns) if symbols is None else list(symbols)
    unknown = [s for s in names if s not in bt.prices.columns]
    if unknown:
        raise KeyError(f"unknown symbol(s) {unknown}; the backtest's symbols are {list(bt.prices.columns)}")
    n = len(names)
    fig = make_subplots(rows=n + 3, cols=1, shared_xaxes=False, vertical_spacing=0.04,
                        specs=[[{"type": "xy"}]] * (n + 2) + [[{"type": "table"}]],
                        row_heights=[2] * n + [2, 1, 2], subplot_titles=[*names, "equity", "drawdown", "trades"])
    for row, symbol in enumerate(names, start=1):
        fig.add_trace(go.Scatter(x=bt.prices.index, y=bt.prices[symbol], name=f"{symbol} close", mode="lines",
                                 line={"color": "#555", "width": 1}, showlegend=False), row=row, col=1)
        for trace in _trade_markers(go, bt.trades[bt.trades["symbol"] == symbol], symbol):
            fig.add_trace(trace, row=row, col=1)
    fig.add_trace(go.Scatter(x=bt.equity.index, y=bt.equity, name="equity", mode="lines", showlegend=False,
                             line={"color": "#1f77b4"}), row=n + 1, col=1)
    fig.add_trace(go.Scatter(x=bt.equity.index, y=drawdown(bt.equity), name="drawdown", mode="lines", fill="tozeroy",
                             showlegend=False, line={"color": "#d62728"}), row=n + 2, col=1)
    fig.add_trace(_trades_table(go, bt.trades), row=n + 3, col=1)
    for row in range(2, n + 3):
        fig.update_xaxes(matches="x", row=row, col=1)
    fig.update_yaxes(tickformat=".0%", row=n + 2, col=1)
    metrics = bt.metrics
    fig.update_layout(height=260 * (n + 3), title={"text": (
        f"{backtest_label(bt)}: total return {metrics['total_return']:.2%}, sharpe {metrics['sharpe']:.2f}, "
        f"max drawdown {metrics['max_drawdown']:.2%}, {int(metrics['n_trades'])} trades")})
    return fig


def _trade_markers(go: Any, trades: pd.DataFrame, symbol: str) -> list:
    """Entry and exit markers of one symbol's trades."""
    traces = []
    for direction, marker, colour in (("long", "triangle-up", "#2ca02c"), ("short", "triangle-down", "#d62728")):
        chosen = trades[trades["direction"] == direction]
        if len(chosen):
            traces.append(go.Scatter(
                x=chosen["entry_time"], y=chosen["entry_price"], mode="markers", name=f"{symbol} {direction} entry",
                marker={"symbol": marker, "size": 10, "color": colour},
                hovertemplate=f"{direction} entry %{{x}}<br>price %{{y:.6g}}<extra>{symbol}</extra>"))
    for closed, name, marker in ((True, "exit", "x"), (False, "open at end", "circle-open")):
        chosen = trades[(trades["exit_reason"] != "open_at_end") == closed]
        if len(chosen):
            traces.append(go.Scatter(
                x=chosen["exit_time"], y=chosen["exit_price"], mode="markers", name=f"{symbol} {name}",
                marker={"symbol": marker, "size": 9, "color": "#111"}, customdata=np.column_stack(
                    [chosen["return"].to_numpy(), chosen["exit_reason"].to_numpy(dtype=object)]),
                hovertemplate=(f"{name} %{{x}}<br>price %{{y:.6g}}<br>return %{{customdata[0]:.2%}}<br>"
                               f"%{{customdata[1]}}<extra>{symbol}</extra>")))
    return traces


def _trades_table(go: Any, trades: pd.DataFrame) -> Any:
    formats = {"entry_price": "{:.6g}", "exit_price": "{:.6g}", "units": "{:.6g}", "fees": "{:.2f}",
               "pnl": "{:.2f}", "return": "{:.2%}"}
    cells = [[formats[c].format(v) if c in formats else str(v) for v in trades[c]] for c in trades.columns]
    return go.Table(header={"values": list(trades.columns), "fill": {"color": "#e8e8e8"}},
                    cells={"values": cells, "align": "right"})


def plot_equity(backtests: Sequence[Backtest], labels: Sequence[str] | None = None) -> go.Figure:
    """Equity curves of several backtests overlaid (top) and their drawdowns (bottom), one colour per backtest,
    labelled with the strategy, its parameters and the range (or ``labels``)."""
    go, make_subplots = plotly_modules()
    backtests = list(backtests)
    if not backtests:
        raise ValueError("plot_equity needs at least one Backtest")
    labels = [backtest_label(bt) for bt in backtests] if labels is None else list(labels)
    if len(labels) != len(backtests):
        raise ValueError(f"{len(labels)} labels for {len(backtests)} backtests")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[2, 1], vertical_spacing=0.06,
                        subplot_titles=["equity", "drawdown"])
    colours = _colours(len(backtests))
    for bt, label, colour in zip(backtests, labels, colours):
        common = {"name": label, "legendgroup": label, "mode": "lines", "line": {"color": colour, "width": 1.5}}
        fig.add_trace(go.Scatter(x=bt.equity.index, y=bt.equity, **common), row=1, col=1)
        fig.add_trace(go.Scatter(x=bt.equity.index, y=drawdown(bt.equity), showlegend=False, **common), row=2, col=1)
    fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(title={"text": f"Equity and drawdown of {len(backtests)} backtest(s)"}, height=600,
                      legend={"orientation": "h", "y": -0.12})
    return fig


def _colours(n: int) -> list[str]:
    from plotly.colors import qualitative

    palette = qualitative.Plotly + qualitative.D3
    return [palette[i % len(palette)] for i in range(n)]
