"""Headless Chromium through selenium for the tests that open HTML files (Debian's ``chromium`` and
``chromium-driver``; ``.ci/run`` installs them)."""

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
NO_BROWSER = ("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; "
              ".ci/run installs them)")


def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium WebDriver that records the page's console (its ``get_log("browser")``); skips the test
    when Chromium is not installed."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def rendered_plots(driver) -> int:
    """Plotly figures on the page that have drawn their SVG."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.plotly-graph-div'))"
        ".filter(d => d.querySelector('svg.main-svg') !== null).length;")


def full_page_screenshot(driver, path: Path) -> Path:
    """Resize the window to the page's full height and save a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight;")
    width = driver.execute_script("return document.documentElement.scrollWidth;")
    driver.set_window_size(max(width, 1400), min(height + 100, 16000))
    driver.save_screenshot(str(path))
    return path
