"""The HTML report: its content, and the page opened in headless Chromium (no network, no JavaScript error, every
plot drawn, the leaderboard's rows and sorting)."""

import html
import json
import textwrap
from itertools import combinations

import numpy as np
import pytest

import raybt
from browser import chromium, full_page_screenshot, rendered_plots
from raybt import cli, report
from raybt.results import row_inputs

pytest.importorskip("plotly", reason="the report needs the plot extra: pip install 'raybt[plot]'")

SPEC = textwrap.dedent("""
    import raybt
    from raybt import indicators


    class Cross(raybt.Strategy):
        fast: int = 5
        slow: int = 20
        band: float | None = None

        def signals(self, data):
            if self.fast == 40 and self.band == 0.01:
                raise ValueError("a strategy bug")  # one failing job per range
            fast = indicators.sma(data.close, self.fast)
            slow = indicators.sma(data.close, self.slow)
            return (indicators.crossed_above(fast, slow * (1 + (self.band or 0.0))),
                    indicators.crossed_below(fast, slow))


    strategies = [Cross(fast=f, slow=s, band=b) for f in (2, 5, 10, 40) for s in (20, 30, 150) for b in (None, 0.01)]
    data = raybt.synthetic_ohlcv(symbols=["A", "B"], start="2022-01-01", end="2023-01-01", freq="1D", seed=1)
    date_ranges = [raybt.DateRange("2022-01-01", "2022-07-01", name="H1"),
                   raybt.DateRange("2022-07-01", "2023-01-01", name="H2")]
    fees = 0.001
    continue_on_error = True
""")
PLOTS = len(list(combinations(["fast", "slow", "band"], 2))) + 3 + 1 + 2
"""Heatmaps of the 3 parameter pairs, distributions of sharpe, total_return and max_drawdown, ranges, equity of the
top rows and the best row in detail."""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A checkpoint directory written by ``raybt run``, the spec module and its rows."""
    folder = tmp_path_factory.mktemp("report")
    spec_path = folder / "spec.py"
    spec_path.write_text(SPEC)
    directory = folder / "run"
    with pytest.warns(raybt.FailedBacktestsWarning, match="6 of 48 backtests failed"):  # the spec's planted bug
        assert cli.main(["run", str(spec_path), "--n-workers", "1", "--checkpoint-dir", str(directory),
                         "--no-progress"]) == cli.EXIT_OK
    spec = cli.load_spec(str(spec_path))
    df = raybt.results.CheckpointStore(directory).read()
    manifest = json.loads((directory / "manifest.json").read_text())
    return spec_path, directory, spec, df, manifest


def replay_with(spec):
    def replay(row):
        inputs = row_inputs(row)
        return raybt.run_backtest(spec.Cross(**inputs.parameters), spec.data, inputs.date_range, fees=spec.fees)
    return replay


def expected_leaderboard(df, metric="sharpe"):
    ok = df[df["error"].isna()]
    return list(ok.sort_values(metric, ascending=False, na_position="last", kind="stable")["key"])


def test_report_page_has_the_run_the_leaderboard_and_one_inlined_plotly(sweep, tmp_path):
    _, directory, spec, df, manifest = sweep
    path = report.write_report(df, tmp_path / "r.html", manifest=manifest, source=str(directory),
                               replay=replay_with(spec))
    page = path.read_text()
    from plotly.offline import get_plotlyjs

    assert page.count(get_plotlyjs()[:200]) == 1  # plotly.js once, inline
    assert "<script src" not in page and "<link" not in page  # nothing fetched
    assert page.count('class="plotly-graph-div"') == PLOTS
    assert f"<th>failed jobs</th><td>{df['error'].notna().sum()}</td>" in page
    assert "ValueError: a strategy bug" in page
    assert manifest["runs"][-1]["settings"].replace("'", "&#x27;") in page
    assert f"<td>{raybt.__version__}</td>" in page and manifest["runs"][-1]["raybt_version"] == raybt.__version__
    keys = [line.split('"')[1] for line in page.split('<tr data-key=')[1:]]
    assert keys == expected_leaderboard(df)[:100]


def test_report_escapes_row_values_and_leaves_nothing_when_it_fails(sweep, tmp_path):
    _, _, spec, df, _ = sweep
    evil = df.assign(strategy="<img src=x onerror=alert(1)>")
    page = report.render_report(evil)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Not recomputed" in page  # no replay without data

    def broken(row):
        raise RuntimeError("replay failed")

    with pytest.raises(RuntimeError, match="replay failed"):
        report.write_report(df, tmp_path / "broken.html", replay=broken)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError, match="unknown metric 'nope'"):
        report.render_report(df, metric="nope")


def test_report_in_headless_chromium_renders_every_plot_without_errors_and_sorts(sweep, tmp_path):
    _, directory, spec, df, manifest = sweep
    path = report.write_report(df, tmp_path / "report.html", manifest=manifest, source=str(directory),
                               replay=replay_with(spec))
    driver = chromium()
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        driver.get(path.as_uri())
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
        assert rendered_plots(driver) == PLOTS
        keys = driver.execute_script(
            "return Array.from(document.querySelectorAll('#leaderboard-table tbody tr')).map(r => r.dataset.key);")
        assert keys == expected_leaderboard(df)[:100]

        def column(name):
            return driver.execute_script(
                "var table = document.getElementById('leaderboard-table');"
                "var i = Array.from(table.tHead.rows[0].cells).findIndex(c => c.textContent === arguments[0]);"
                "return Array.from(table.tBodies[0].rows).map(r => r.cells[i].dataset.value);", name)

        header = driver.find_element("xpath", "//table[@id='leaderboard-table']//th[text()='n_trades']")
        header.click()
        trades = [float(v) for v in column("n_trades")]
        assert trades == sorted(trades, reverse=True) and len(set(trades)) > 1
        header.click()
        assert [float(v) for v in column("n_trades")] == sorted(trades)
        driver.find_element("xpath", "//table[@id='leaderboard-table']//th[text()='sharpe']").click()
        sharpe = column("sharpe")
        filled = [float(v) for v in sharpe if v != ""]
        assert filled == sorted(filled, reverse=True) and sharpe[len(filled):] == [""] * (len(sharpe) - len(filled))
        assert [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"] == []
        driver.execute_script("window.scrollTo(0, 0);")
        shot = full_page_screenshot(driver, tmp_path / "report.png")
        assert shot.stat().st_size > 50_000
    finally:
        driver.quit()


def test_raybt_report_command_replays_the_best_rows_with_the_spec(sweep, tmp_path, capsys):
    spec_path, directory, spec, df, _ = sweep
    out = tmp_path / "cli.html"
    assert cli.main(["report", str(directory), "--spec", str(spec_path), "-o", str(out), "--top", "3"]) == 0
    assert f"wrote {out}: {len(df)} rows, best 3 rows replayed" in capsys.readouterr().out
    page = out.read_text()
    assert page.count('class="plotly-graph-div"') == PLOTS and "Top 3 rows replayed" in page
    assert cli.main(["report", str(directory), "-o", str(tmp_path / "plain.html")]) == 0
    assert "Not recomputed" in (tmp_path / "plain.html").read_text()
    assert cli.main(["report", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.html")]) == cli.EXIT_FAILED
    assert cli.main(["report", str(directory), "--metric", "nope", "-o", str(tmp_path / "x.html")]) == cli.EXIT_USAGE
    assert "unknown column --metric 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_replayed_best_rows_equal_the_stored_rows(sweep):
    _, _, spec, df, _ = sweep
    best = df[df["error"].isna()].sort_values("sharpe", ascending=False).head(3)
    for _, row in best.iterrows():
        bt = replay_with(spec)(row)
        np.testing.assert_array_equal([bt.metrics[m] for m in raybt.metrics.METRIC_NAMES],
                                      row[list(raybt.metrics.METRIC_NAMES)].to_numpy(dtype=float))


def test_report_is_it_real_section_shows_the_verdict_of_the_best_row(sweep, tmp_path):
    pytest.importorskip("arch", reason="the verdict's SPA and Reality Check need the stats extra")
    _, directory, spec, df, _ = sweep
    results = raybt.load_results(str(directory))
    page = results.report(tmp_path / "r.html", spec.data, spec.Cross).read_text()
    section = page.split('<section id="is-it-real">')[1].split("</section>")[0]
    verdict = results.verdict(expected_leaderboard(df)[0], spec.data, spec.Cross)
    assert verdict.n_trials == df["strategy_id"].nunique()  # the failed configurations count as trials too
    for check in verdict.checks:
        assert f"{check.value:.3g}" in section and html.escape(check.reading) in section
    assert html.escape(verdict.conclusion) in section
    assert "Not judged" in report.render_report(df)  # without data: said, not silently left out
