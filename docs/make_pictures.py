"""Make the README's "Exploring results" pictures: docs/heatmap.png and docs/report.png.

Runs the README's SMA-crossover grid (fast 5..50 × slow 20..200, fast < slow) on two years of synthetic hourly data
in this process, draws ``results.plot_heatmap("fast", "slow")`` and writes ``results.report(...)``, then
photographs both in headless Chromium (Debian's ``chromium`` and ``chromium-driver``; selenium from the dev extra)::

    python docs/make_pictures.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import raybt
from raybt.demo import SmaCross

DOCS = Path(__file__).resolve().parent


def sweep() -> tuple[raybt.Results, raybt.data.DataLike]:
    data = raybt.synthetic_ohlcv(symbols=["BTC/EUR"], start="2022-01-01", end="2024-01-01", freq="1h", seed=0)
    ranges = [raybt.DateRange("2022-01-01", "2023-01-01", name="2022"),
              raybt.DateRange("2023-01-01", "2024-01-01", name="2023")]
    strategies = [SmaCross(fast=f, slow=s) for f in range(5, 55, 5) for s in range(20, 210, 10) if f < s]
    return raybt.run_backtests(strategies, data, ranges, fees=0.001, checkpoint_dir="runs/sma",
                               show_progress=False), data


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}",
                     "--hide-scrollbars"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def main() -> int:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        print("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        os.chdir(folder)  # the report names its directory as given: runs/sma, as in the README
        results, data = sweep()
        heatmap = results.plot_heatmap("fast", "slow", "sharpe")
        heatmap.update_layout(width=900, height=560, margin={"t": 60, "l": 60, "r": 20, "b": 50})
        heatmap.write_html(folder / "heatmap.html", include_plotlyjs=True, full_html=True)
        results.report(folder / "report.html", data)
        driver = browser(1400, 1700)
        try:
            driver.get((folder / "heatmap.html").as_uri())
            driver.find_element("css selector", ".plotly-graph-div").screenshot(str(DOCS / "heatmap.png"))
            driver.get((folder / "report.html").as_uri())
            driver.save_screenshot(str(DOCS / "report.png"))
        finally:
            driver.quit()
    print(f"wrote {DOCS / 'heatmap.png'} and {DOCS / 'report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
