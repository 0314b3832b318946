"""Headless Chromium for dash_duo, whether or not `--headless` is passed (CI and laptops alike)."""

from __future__ import annotations

import os
import shutil


def pytest_setup_options():
    from selenium.webdriver.chrome.options import Options

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--no-first-run", "--window-size=1400,1000"):
        options.add_argument(arg)
    chromium = os.environ.get("DASH_TEST_CHROMEPATH") or shutil.which("chromium")
    if chromium:
        options.binary_location = chromium
    return options
