"""`tokenmeter up --demo` as a new user runs it: within 60 s of the command the dashboard, after the demo login
that `up` prints, shows cost by team in a real browser, and SIGTERM stops every child process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from process_support import stop
from tokenmeter.settings import free_port

pytestmark = [pytest.mark.slow(seconds=40), pytest.mark.browser]  # seconds: see tests/suite_order.py
ROOT = Path(__file__).resolve().parents[1]

COST_BY_TEAM = """
const el = document.querySelector("[id='{\\"panel\\":\\"cost_by_team\\",\\"type\\":\\"overview-graph\\"}'] .js-plotly-plot");
return el && el.data && el.data.length ? el.data.flatMap(t => (t.x || []).map((x, i) => [x, t.y[i]])) : [];
"""


def test_up_demo_shows_cost_by_team_and_stops_cleanly(dash_duo, tmp_path):
    dash_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(tmp_path / "data"),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(dash_port), TOKENMETER_DEMO_EVENTS_PER_S="20",
               TOKENMETER_DEMO_INBOX_PORT=str(free_port()))
    url = f"http://127.0.0.1:{dash_port}/"
    log = open(tmp_path / "up.log", "w")
    launched = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "app", "up", "--demo"], env=env, stdout=log,
                          stderr=subprocess.STDOUT, cwd=tmp_path)
    children: list[psutil.Process] = []
    try:
        def started() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            return "Press Ctrl-C" in (tmp_path / "up.log").read_text()

        WebDriverWait(None, 60, poll_frequency=0.5).until(lambda _: started())
        children = psutil.Process(up.pid).children(recursive=True)
        assert {"broker", "worker", "load", "dash", "demo", "demo-inbox"} <= {c.cmdline()[-1] for c in children}
        inbox = re.search(r"alert inbox on (http://[^ ]+)/inbox", (tmp_path / "up.log").read_text())
        assert inbox, "up --demo names its local alert inbox"
        with urllib.request.urlopen(inbox[1] + "/", timeout=5) as response:  # the inbox answers
            assert "received" in json.loads(response.read())
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
        assert "dashboard login: finance / demo" in (tmp_path / "up.log").read_text()
        # The budgets start with the history's spend of their current periods (the rebuild runs after the history
        # is written): before, search-monthly showed a few cents of December after dollars of history.
        assert "rebuilt from the warehouse: search-monthly: " in (tmp_path / "up.log").read_text()
        # The dashboard asks for the demo login printed by `up`.
        dash_duo.driver.get(url)
        WebDriverWait(dash_duo.driver, 10).until(lambda d: "/login" in d.current_url)
        dash_duo.driver.find_element(By.ID, "username").send_keys("finance")
        dash_duo.driver.find_element(By.ID, "password").send_keys("demo")
        dash_duo.driver.find_element(By.ID, "login-submit").click()
        remaining = max(1.0, 60 - (time.monotonic() - launched))
        bars = WebDriverWait(dash_duo.driver, remaining, poll_frequency=1).until(
            lambda d: [b for b in d.execute_script(COST_BY_TEAM) if b[1] and b[1] > 0])
        teams = {team for team, _ in bars}
        assert teams & {"search", "support-bot", "data-science", "growth", "platform"}
    finally:
        try:
            stop(up, timeout=40)  # `up` stops its children in order: the SIGTERM's exit code is checked below
        finally:
            log.close()
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"orphans after SIGTERM: {[p.cmdline() for p in alive]}"
    assert up.returncode == 0


@pytest.mark.slow(seconds=60)
def test_up_demo_continues_the_history_without_an_alert_storm_and_the_budget_blocks(tmp_path):
    """Without TOKENMETER_DEMO_EVENTS_PER_S, `up --demo` sends the history's calendar continued (not a flat
    40 events/s, ~2,000 times the history's level: 21 more anomaly alerts within 7 minutes) and one live incident,
    growth's agent loop a minute after the start: the budget on growth's agent key blocks that key (here a 0.005
    USD limit, which the loop reaches in a minute or so; the demo's own 0.10 USD takes 4-5 minutes of the loop) and
    the inbox holds the history's anomaly alerts plus at most one."""
    from collectors.demo_live import AGENT_KEY
    from streams.budgets.model import parse_budget
    from streams.budgets.service import MIRROR_FILE, demo_budgets

    data, inbox_port = tmp_path / "data", free_port()
    data.mkdir()
    budgets = [b.model_copy(update={"notify": (f"webhook=http://127.0.0.1:{inbox_port}/inbox",)})
               for b in demo_budgets()]
    budgets = [parse_budget({**b.to_json(), "limit": "0.005"}) if b.name == "growth-agent-daily" else b for b in budgets]
    (data / MIRROR_FILE).write_text(json.dumps([b.to_json() for b in budgets]))  # as a previous run mirrors them
    env = {k: v for k, v in os.environ.items() if k != "TOKENMETER_DEMO_EVENTS_PER_S"}
    env.update(PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(data),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(free_port()), TOKENMETER_DEMO_INBOX_PORT=str(inbox_port))
    log = open(tmp_path / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "app", "up", "--demo"], env=env, stdout=log,
                          stderr=subprocess.STDOUT, cwd=tmp_path)
    demo_log = data / "logs" / "demo.log"
    try:
        def started() -> bool:
            assert up.poll() is None, (tmp_path / "up.log").read_text()
            return "Press Ctrl-C" in (tmp_path / "up.log").read_text()

        WebDriverWait(None, 90, poll_frequency=0.5).until(lambda _: started())
        assert "the history's weekday/hour calendar continued" in (tmp_path / "up.log").read_text()

        def blocked() -> bool:
            return demo_log.exists() and f"refusing calls of {AGENT_KEY}" in demo_log.read_text()

        WebDriverWait(None, 200, poll_frequency=2).until(lambda _: blocked())

        def anomaly_alerts() -> list[dict]:
            with urllib.request.urlopen(f"http://127.0.0.1:{inbox_port}/", timeout=5) as response:
                assert json.loads(response.read())["received"] >= 0
            lines = (data / "demo-inbox.jsonl").read_text().splitlines() if (data / "demo-inbox.jsonl").exists() else []
            return [e for e in map(json.loads, lines) if e.get("source") == "anomaly" and e.get("action") != "resolve"]

        def budget_alerted() -> bool:  # the refusal comes first; the alert reaches the inbox through the dispatcher
            inbox = data / "demo-inbox.jsonl"
            return inbox.exists() and any("growth-agent-daily" in (json.loads(line).get("title") or "")
                                          for line in inbox.read_text().splitlines())

        WebDriverWait(None, 60, poll_frequency=1).until(lambda _: budget_alerted())
        alerts = anomaly_alerts()
        assert len(alerts) <= 9 + 1, [(a["kind"], a["title"]) for a in alerts]
    finally:
        try:
            stop(up, timeout=40)  # `up` stops its children in order: the SIGTERM's exit code is checked below
        finally:
            log.close()
    assert up.returncode == 0
