"""`tokenmeter up --demo` as a new user runs it: within 60 s of the command the dashboard, after the demo login
that `up` prints, shows cost by team in a real browser; the demo continues the history's calendar without an alert
storm and its live incident makes a budget block; SIGTERM stops every child process.

One `up --demo` serves the whole file (each start builds and loads the demo history: ~20 CPU-s and ~40 s on this
machine); the tests run in file order on it, the stop last. Every wait whose length is not the premise is counted in
an idle machine's seconds (`wait_for_scaled_by_load`) and fails at once when `up` died: at load 10-30 beside the
suite, fixed bounds (90 s for the start) failed while the stack was still making progress."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from selenium.webdriver.common.by import By

from process_support import load_factor, stop, wait_for_scaled_by_load
from tokenmeter.settings import free_port

# slow's seconds: see tests/suite_order.py. The run's 300 s a test is an idle machine's bound: the first test also
# holds the fixture's start (90 idle s), which the load may stretch tenfold (scaled waits); a hang still fails.
pytestmark = [pytest.mark.slow(seconds=60), pytest.mark.browser, pytest.mark.timeout(1500)]
ROOT = Path(__file__).resolve().parents[1]

LOOPS_AFTER_S = 5  # growth's live agent loop after the demo traffic's start (default 60)

COST_BY_TEAM = """
const el = document.querySelector("[id='{\\"panel\\":\\"cost_by_team\\",\\"type\\":\\"overview-graph\\"}'] .js-plotly-plot");
return el && el.data && el.data.length ? el.data.flatMap(t => (t.x || []).map((x, i) => [x, t.y[i]])) : [];
"""


@dataclass
class DemoUp:
    up: subprocess.Popen
    tmp: Path
    data: Path
    dash_port: int
    inbox_port: int
    launched: float
    started_after: float = 0.0
    load_when_started: float = 0.0  # the 1-minute load average when it said it runs
    children: list[psutil.Process] = field(default_factory=list)

    def up_log(self) -> str:
        return (self.tmp / "up.log").read_text()

    def running(self) -> bool:
        """True while `up` runs; else the wait fails at once with its log (not at its bound)."""
        assert self.up.poll() is None, self.up_log()
        return True


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`up --demo` as a new user starts it (the calendar demo: no TOKENMETER_DEMO_EVENTS_PER_S), except that the
    budget mirror a previous run would have left sets growth-agent-daily to 0.005 USD (one call of growth's live
    agent loop reaches it; the demo's own 0.10 USD takes 4-5 minutes of the loop), the loop starts 5 s after the
    demo traffic instead of 60 s (TOKENMETER_DEMO_LOOPS_AFTER_SECONDS: the minute a new user gets to look at the
    dashboard first, an idle wait here) and the demo inbox is on a known port."""
    from streams.budgets.model import parse_budget
    from streams.budgets.service import MIRROR_FILE, demo_budgets

    tmp = tmp_path_factory.mktemp("up-demo")
    data, inbox_port, dash_port = tmp / "data", free_port(), free_port()
    data.mkdir()
    budgets = [b.model_copy(update={"notify": (f"webhook=http://127.0.0.1:{inbox_port}/inbox",)})
               for b in demo_budgets()]
    budgets = [parse_budget({**b.to_json(), "limit": "0.005"}) if b.name == "growth-agent-daily" else b for b in budgets]
    (data / MIRROR_FILE).write_text(json.dumps([b.to_json() for b in budgets]))  # as a previous run mirrors them
    env = {k: v for k, v in os.environ.items() if k != "TOKENMETER_DEMO_EVENTS_PER_S"}
    env.update(PYTHONPATH=str(ROOT), TOKENMETER_DATA_DIR=str(data),
               TOKENMETER_EMBEDDED_BROKER_PORT=str(free_port()), TOKENMETER_API_PORT=str(free_port()),
               TOKENMETER_DASH_PORT=str(dash_port), TOKENMETER_DEMO_INBOX_PORT=str(inbox_port),
               TOKENMETER_DEMO_LOOPS_AFTER_SECONDS=str(LOOPS_AFTER_S))
    log = open(tmp / "up.log", "w")
    launched = time.monotonic()
    up = subprocess.Popen([sys.executable, "-m", "app", "up", "--demo"], env=env, stdout=log,
                          stderr=subprocess.STDOUT, cwd=tmp)
    state = DemoUp(up, tmp, data, dash_port, inbox_port, launched)
    try:
        def started() -> bool:
            return state.running() and "Press Ctrl-C" in state.up_log()

        wait_for_scaled_by_load(started, 90, "`up --demo` to say it runs (Press Ctrl-C)")
        state.started_after = time.monotonic() - launched
        state.load_when_started = os.getloadavg()[0]
        state.children = psutil.Process(up.pid).children(recursive=True)
        yield state
    finally:
        try:
            stop(up, timeout=40 * load_factor())  # a no-op after the last test stopped it (and checked the exit code)
        finally:
            log.close()


def _child_name(cmdline: list[str]) -> str:
    """The `python -m app` command a child runs (`demo --calendar --started ...` is "demo"), else its last word."""
    return cmdline[3] if len(cmdline) > 3 and cmdline[1:3] == ["-m", "app"] else cmdline[-1]


def test_the_demo_loops_start_a_minute_after_the_traffic_unless_set(monkeypatch):
    """The fixture below starts growth's loop sooner; a user's `up --demo` keeps the minute, and the same schedule."""
    import random
    from datetime import datetime, timedelta, timezone

    from collectors.demo_live import LOOPS, live_loops
    from tokenmeter.settings import Settings

    monkeypatch.delenv("TOKENMETER_DEMO_LOOPS_AFTER_SECONDS", raising=False)
    assert Settings().demo_loops_after_seconds == LOOPS[0][2] == 60
    start = datetime(2026, 12, 7, 14, tzinfo=timezone.utc)
    usual, sooner = live_loops(start, random.Random(3)), live_loops(start, random.Random(3), LOOPS_AFTER_S)
    assert usual == live_loops(start, random.Random(3), 60.0)
    assert min(e["ts"] for e in usual) >= (start + timedelta(seconds=60)).isoformat()
    shift = timedelta(seconds=60 - LOOPS_AFTER_S)
    assert [(e["attribution"], e["usage"], e["ts"]) for e in sooner] == [  # the same calls, as much sooner
        (e["attribution"], e["usage"], (datetime.fromisoformat(e["ts"]) - shift).isoformat()) for e in usual]


def test_up_demo_shows_cost_by_team(dash_duo, demo):
    # The minute is promised to a user whose machine gives the demo its cores. Beside the suite's six workers (or a
    # second stack) the load runs 6-17 on 2 cores and the start took 63-69 s in two runs of 2026-12-06: the budget
    # grows with the load beyond the core count, so a slow start still fails on a quiet machine, not a busy one.
    cores = os.cpu_count() or 1
    budget = 60 * max(1.0, demo.load_when_started / cores)
    assert demo.started_after <= budget, (f"`up --demo` said it runs only after {demo.started_after:.0f} s "
                                          f"(budget {budget:.0f} s: load {demo.load_when_started:.1f} on {cores} cores)")
    assert {"broker", "worker", "load", "dash", "demo", "demo-inbox"} <= {_child_name(c.cmdline())
                                                                          for c in demo.children}
    inbox = re.search(r"alert inbox on (http://[^ ]+)/inbox", demo.up_log())
    assert inbox, "up --demo names its local alert inbox"
    with urllib.request.urlopen(inbox[1] + "/", timeout=30) as response:  # the inbox answers
        assert "received" in json.loads(response.read())
    url = f"http://127.0.0.1:{demo.dash_port}/"
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
    assert "dashboard login: finance / demo" in demo.up_log()
    # The budgets start with the history's spend of their current periods (the rebuild runs after the history
    # is written): before, search-monthly showed a few cents of December after dollars of history.
    assert "rebuilt from the warehouse: search-monthly: " in demo.up_log()
    # The dashboard asks for the demo login printed by `up`.
    driver = dash_duo.driver
    driver.get(url)
    wait_for_scaled_by_load(lambda: "/login" in driver.current_url, 10, "the redirect to the login page")
    driver.find_element(By.ID, "username").send_keys("finance")
    driver.find_element(By.ID, "password").send_keys("demo")
    driver.find_element(By.ID, "login-submit").click()
    # Cost by team shows once the first loader batch is stored (seconds after the start on an idle machine). The
    # wait was "60 s from the launch", which left ~1-5 s for the login and the page when the suite's load made the
    # start itself take ~50 s (failed in a clean-clone CI run): speed is a benchmark's business, not this test's,
    # so the page gets its own minute.
    bars = wait_for_scaled_by_load(lambda: demo.running() and [b for b in driver.execute_script(COST_BY_TEAM)
                                                               if b[1] and b[1] > 0],
                                   60, "cost by team's bars in the browser", interval=1)
    teams = {team for team, _ in bars}
    assert teams & {"search", "support-bot", "data-science", "growth", "platform"}


def test_up_demo_continues_the_history_without_an_alert_storm_and_the_budget_blocks(demo):
    """Without TOKENMETER_DEMO_EVENTS_PER_S, `up --demo` sends the history's calendar continued (not a flat
    40 events/s, ~2,000 times the history's level: 21 more anomaly alerts within 7 minutes) and one live incident,
    growth's agent loop (a minute after the start; LOOPS_AFTER_S here): the budget on growth's agent key blocks that key and the inbox
    holds the history's anomaly alerts plus at most one."""
    from collectors.demo_live import AGENT_KEY

    data = demo.data
    assert "the history's weekday/hour calendar continued" in demo.up_log()
    demo_log = data / "logs" / "demo.log"

    def blocked() -> bool:
        return demo.running() and demo_log.exists() and f"refusing calls of {AGENT_KEY}" in demo_log.read_text()

    wait_for_scaled_by_load(blocked, 200, f"the demo refusing {AGENT_KEY}'s calls", interval=2)

    def anomaly_alerts() -> list[dict]:
        with urllib.request.urlopen(f"http://127.0.0.1:{demo.inbox_port}/", timeout=30) as response:
            assert json.loads(response.read())["received"] >= 0
        lines = (data / "demo-inbox.jsonl").read_text().splitlines() if (data / "demo-inbox.jsonl").exists() else []
        return [e for e in map(json.loads, lines) if e.get("source") == "anomaly" and e.get("action") != "resolve"]

    def budget_alerted() -> bool:  # the refusal comes first; the alert reaches the inbox through the dispatcher
        inbox = data / "demo-inbox.jsonl"
        return demo.running() and inbox.exists() and any(
            "growth-agent-daily" in (json.loads(line).get("title") or "") for line in inbox.read_text().splitlines())

    wait_for_scaled_by_load(budget_alerted, 60, "growth-agent-daily's alert in the demo inbox", interval=1)
    alerts = anomaly_alerts()
    assert len(alerts) <= 9 + 1, [(a["kind"], a["title"]) for a in alerts]


def test_up_demo_stops_cleanly(demo):
    """Last in the file: SIGTERM stops `up`, which stops its children in order, and leaves none behind."""
    stop(demo.up, timeout=40 * load_factor())  # past it, a kill: the exit code below would say so
    gone, alive = psutil.wait_procs(demo.children, timeout=15 * load_factor())
    assert not alive, f"orphans after SIGTERM: {[p.cmdline() for p in alive]}"
    assert demo.up.returncode == 0
