"""HTML report benchmark: write and open the report of a 100,000-row checkpoint directory.

    python benchmarks/bench_report.py                   # 100,000 rows in a temporary directory
    python benchmarks/bench_report.py --dir runs/bench100k   # keep (and reuse) the directory
    python benchmarks/bench_report.py --rows 10000      # a smaller directory: a smoke test of the script

The directory is a real sweep, so the report's top rows replay exactly: SmaCross parameter sets (fast 2..101 ×
slow 60, 65, …, as ``raybt demo`` builds them) × 20 one-year ranges of 20 years of synthetic daily data (7,305 bars,
seed 0), fees=0.001, in this process (rows = sets × 20; a directory that already holds them is reused, which the
resumable checkpoints make free).

Measured, each printed on its own line:

* **write** — ``raybt.load_results(dir).report(path, data, strategy=SmaCross)`` (read every row, draw every figure,
  replay the best 5 rows, write the file), wall time in this process, and the file's size.
* **open** — headless Chromium (Debian's ``chromium``/``chromium-driver``, network off) opening the file: the page's
  ``loadEventEnd`` (plotly.js parsed, every figure's script run) and the wall time until every plotly figure has
  drawn its SVG, from just before ``driver.get``. Chromium starts before the clock does. For scale, the same for a
  page holding only the inlined plotly.js (what any self-contained plotly page costs).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import raybt
from raybt.demo import SmaCross, demo_strategies

N_RANGES = 20


def build(directory: Path, rows: int) -> tuple[raybt.MarketData, float]:
    """Sweep into ``directory`` (skipping what is stored); returns the data and the sweep's seconds."""
    data = raybt.load_ohlcv(raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2000-01-01", end="2020-01-01",
                                                  freq="1D", seed=0))
    ranges = [raybt.DateRange(f"{year}-01-01", f"{year + 1}-01-01", name=str(year))
              for year in range(2000, 2000 + N_RANGES)]
    started = time.perf_counter()
    raybt.run_backtests(demo_strategies(rows // N_RANGES), data, ranges, fees=0.001, checkpoint_dir=str(directory),
                        checkpoint_batch_size=10_000, show_progress=False)
    return data, time.perf_counter() - started


def open_in_chromium(path: Path) -> tuple[float, float, int]:
    """(loadEventEnd seconds, seconds until every figure has drawn, figures drawn); 0 figures is fine."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(600)
    try:
        driver.set_network_conditions(offline=True, latency=0, download_throughput=0, upload_throughput=0)
        started = time.perf_counter()
        driver.get(path.as_uri())
        while True:
            counts = driver.execute_script(
                "var divs = Array.from(document.querySelectorAll('.plotly-graph-div'));"
                "return [divs.length, divs.filter(d => d.querySelector('svg.main-svg')).length];")
            if counts[0] == counts[1] or time.perf_counter() - started > 600:
                break
            time.sleep(0.05)
        drawn = time.perf_counter() - started
        load = driver.execute_script("var t = performance.timing; return (t.loadEventEnd - t.navigationStart) / 1000;")
        return load, drawn, counts[1]
    finally:
        driver.quit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="checkpoint directory to fill and keep (default: a temporary one)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows (default 100,000; a multiple of 20)")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="bench-report-")
    try:
        directory = Path(args.dir) if args.dir else Path(scratch, "run")
        data, sweep_s = build(directory, args.rows)
        print(f"directory: {directory} ({args.rows:,} rows; sweep {sweep_s:.1f} s, 0 if it was already there)")
        output = Path(scratch, "report.html")
        started = time.perf_counter()
        results = raybt.load_results(str(directory))
        results.report(output, data, SmaCross)
        write_s = time.perf_counter() - started
        print(f"write: {write_s:.2f} s for {len(results.df):,} rows, {output.stat().st_size / 2**20:.1f} MiB")
        if not (shutil.which("chromium") and shutil.which("chromedriver")):
            print("open: skipped (needs Debian's chromium and chromium-driver)")
            return 0
        load_s, drawn_s, figures = open_in_chromium(output)
        print(f"open: loadEventEnd {load_s:.2f} s; every figure drawn after {drawn_s:.2f} s ({figures} figures)")
        from plotly.offline import get_plotlyjs

        bare = Path(scratch, "plotly-only.html")
        bare.write_text(f"<!DOCTYPE html><html><head><script>{get_plotlyjs()}</script></head><body></body></html>")
        print(f"for scale, a page with only plotly.js: loadEventEnd {open_in_chromium(bare)[0]:.2f} s")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
