"""Screenshots of a first `tokenmeter up --demo` start for docs/ (docs/screenshots/demo-*.png): the month of
history the demo starts with, as a finance user sees it at first login. Opt-in, like test_dashboard_screenshots.py:

    TOKENMETER_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest -q tests/dashboards/test_demo_screenshots.py

It starts the whole stack on free ports and a temporary data dir, waits until the history is loaded, the anomaly
detector has read it and the dashboard shows it, takes the pictures and stops the stack (SIGTERM, then kill)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tokenmeter.settings import free_port

SCREENSHOT_DIR = os.environ.get("TOKENMETER_SCREENSHOT_DIR")
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not SCREENSHOT_DIR, reason="set TOKENMETER_SCREENSHOT_DIR to write screenshots")]
ROOT = Path(__file__).resolve().parents[2]
ROWS = "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(tr => tr.innerText);"


def _rows(driver, table: str) -> list[str]:
    return driver.execute_script(ROWS, table) or []


def _until(driver, url: str, check, timeout: float, what: str) -> None:
    """Reload `url` until `check(driver)`: the stack fills the warehouse while we wait."""
    deadline = time.monotonic() + timeout
    while True:
        driver.get(url)
        try:
            WebDriverWait(driver, 20, poll_frequency=1).until(check)
            return
        except Exception:  # noqa: BLE001 - not there yet: load the page again
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo did not show {what} within {timeout:.0f} s") from None


def test_screenshots_of_a_first_demo_start(dash_duo, tmp_path):
    dash_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(dash_port), TOKENMETER_DEMO_INBOX_PORT=str(free_port()))
    base = f"http://127.0.0.1:{dash_port}"
    log_path = tmp_path / "up.log"
    log = open(log_path, "w")
    up = subprocess.Popen([sys.executable, "-m", "app", "up", "--demo"], env=env, stdout=log,
                          stderr=subprocess.STDOUT, cwd=tmp_path)
    driver = dash_duo.driver
    out = Path(SCREENSHOT_DIR)
    out.mkdir(parents=True, exist_ok=True)
    try:
        def history_loaded(_) -> bool:
            assert up.poll() is None, log_path.read_text()
            text = log_path.read_text()  # the history is written, and every part has started
            return bool(re.search(r"demo history: \d+ events", text)) and "Press Ctrl-C" in text

        WebDriverWait(None, 300, poll_frequency=1).until(history_loaded)
        driver.set_window_size(1400, 1200)
        driver.get(base + "/")
        WebDriverWait(driver, 30).until(lambda d: "/login" in d.current_url)
        driver.find_element(By.ID, "username").send_keys("finance")
        driver.find_element(By.ID, "password").send_keys("demo")
        driver.find_element(By.ID, "login-submit").click()
        WebDriverWait(driver, 30).until(lambda d: "/login" not in d.current_url)

        # Anomalies of the whole month: the detector reads the history from the priced topic, then the loader
        # stores its records; one per injected kind.
        now = datetime.now(timezone.utc)
        month = f"?start={(now - timedelta(days=30)).date()}&end={now.date()}"
        _until(driver, base + "/anomalies" + month, lambda d: len(_rows(d, "#anomalies-table")) >= 8, 600,
               "the history's anomalies")
        time.sleep(2)  # plotly's transitions; pictures only
        driver.save_screenshot(str(out / "demo-anomalies.png"))
        alerted = [row.split("\t")[2] for row in _rows(driver, "#anomalies-table")
                   if "Part of the anomaly" not in row and "not alerted" not in row]
        print(f"anomalies alerted in the demo's month: {len(alerted)}: {sorted(alerted)}")  # the figure for docs

        _until(driver, base + "/reconciliation" + month, lambda d: any(
            "price" in row.lower() for row in _rows(d, "#drift-table")), 300, "the drift rows")
        time.sleep(2)
        driver.save_screenshot(str(out / "demo-reconciliation-drift.png"))

        _until(driver, base + "/", lambda d: len(_rows(d, "#overview-sources")) >= 2
               and len(_rows(d, "#overview-movers")) >= 1, 300, "the sources and the top movers")
        time.sleep(2)
        driver.save_screenshot(str(out / "demo-overview.png"))
        driver.execute_script("document.getElementById('overview-sources-card').scrollIntoView();")
        time.sleep(1)
        driver.save_screenshot(str(out / "demo-overview-sources.png"))
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(10)
            log.close()
