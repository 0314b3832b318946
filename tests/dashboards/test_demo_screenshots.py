"""Screenshots of a first `tokenmeter up --demo` start for docs/ (docs/screenshots/demo-*.png): the month of
history the demo starts with, as a finance user sees it at first login, every page (Overview and its sources'
completeness, Showback with cost centers and allocation, the closed previous month, Chargeback/FOCUS export,
Budgets with a gateway's hold, Models, Alerts from the local inbox route, Anomalies, Drift). Opt-in, like test_dashboard_screenshots.py:

    TOKENMETER_SCREENSHOT_DIR=docs/screenshots .venv/bin/python -m pytest -q tests/dashboards/test_demo_screenshots.py

It starts the whole stack on free ports and a temporary data dir, waits until the history is loaded, the anomaly
detector has read it and the dashboard shows it, takes the pictures and stops the stack (SIGTERM, then kill)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
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
# dcc.Loading shows a spinner while a callback runs: a picture waits until none is left
LOADING = "return document.querySelectorAll('.dash-spinner, ._dash-loading, [data-dash-is-loading=\"true\"]').length;"
PLOTTED = ("const el = document.querySelector(arguments[0] + ' .js-plotly-plot');"
           " return !!(el && el.data && el.data.length);")


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

        def settled(d) -> bool:
            return not d.execute_script(LOADING)

        def steady(d) -> bool:  # no spinner now and a second later (the pages refresh on an interval)
            if not settled(d):
                return False
            time.sleep(1.5)
            return settled(d)

        def capture(name: str) -> None:
            """A picture with no spinner in it: taken again when a refresh began while it was taken."""
            for _ in range(6):
                WebDriverWait(driver, 90).until(steady)
                driver.save_screenshot(str(out / name))
                if settled(driver):
                    return

        _until(driver, base + "/" + month, lambda d: len(_rows(d, "#overview-sources")) >= 2
               and len(_rows(d, "#overview-movers")) >= 1 and settled(d), 300, "the sources and the top movers")
        time.sleep(2)
        driver.save_screenshot(str(out / "demo-overview.png"))
        driver.execute_script("document.getElementById('overview-sources-card').scrollIntoView();")
        WebDriverWait(driver, 90).until(lambda d: len(_rows(d, "#overview-movers")) >= 1)
        capture("demo-overview-sources.png")

        def shot(path: str, name: str, ready, what: str, scroll_to: str | None = None) -> None:
            _until(driver, base + path, lambda d: ready(d) and settled(d), 300, what)
            time.sleep(2)  # plotly's transitions; pictures only
            if scroll_to:
                driver.execute_script(f"document.getElementById('{scroll_to}').scrollIntoView();")
            capture(name)

        def text(d) -> str:
            return d.find_element(By.TAG_NAME, "body").text

        shot("/showback" + month, "demo-showback.png", lambda d: len(_rows(d, "#showback-table")) >= 3
             and d.execute_script(PLOTTED, "#showback-graph"), "showback by team")
        shot("/showback" + month, "demo-showback-finance.png", lambda d: "platform-shared" in text(d)
             or "allocated" in text(d).lower(), "cost centers and allocation", scroll_to="showback-finance")
        first = now.replace(day=1)
        previous_last = first - timedelta(days=1)
        closed = f"?start={previous_last.replace(day=1).date()}&end={previous_last.date()}"
        shot("/showback" + closed, "demo-month-close.png", lambda d: "is closed" in text(d),
             "the closed previous month", scroll_to="showback-finance")
        shot(f"/export?month={previous_last:%Y-%m}&format=focus", "demo-export.png",
             lambda d: "closed" in text(d), "the export page with the closed month")
        driver.find_element(By.ID, "export-download-button").click()
        time.sleep(5)  # the export is written and summarised under the button
        driver.save_screenshot(str(out / "demo-export.png"))
        # A gateway that reserves before each call (docs/budgets.md): one call of search held while it runs.
        api = f"http://127.0.0.1:{env['TOKENMETER_API_PORT']}/v1/reservations"
        hold = {"provider": "anthropic", "model": "claude-sonnet-4-5-20250929", "request_id": "screenshot-hold-1",
                "prompt_tokens": 60000, "max_output_tokens": 16000,
                "attribution": {"org": "acme", "team": "search", "user": "chen"}}
        request = urllib.request.Request(api, data=json.dumps(hold).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            print("reservation:", response.status, response.read()[:300])
        shot("/budgets?budget=search-monthly", "demo-budgets.png", lambda d: any(
            row.startswith("search-monthly") and "$0.6" in row for row in _rows(d, "#budgets-table")),
             "the budgets with search's hold")
        shot("/models" + month, "demo-models.png", lambda d: len(_rows(d, "#models-table")) >= 5, "the models")
        shot("/alerts" + month, "demo-alerts.png", lambda d: len(_rows(d, "#alerts-table")) >= 3, "the alerts")
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(60)
        finally:
            if up.poll() is None:
                up.kill()
                up.wait(10)
            log.close()
