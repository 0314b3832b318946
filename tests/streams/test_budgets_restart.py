"""Enforcement and history after a restart, with the real broker, worker and warehouse: the broker lost everything
but the budget definitions, `tokenmeter budget rebuild` republished the budget's state from the warehouse (spend
5.08 of limit 5), and no event arrives. The worker must never answer `allow` for that budget: 503 (not ready) until
its decision is derived from the rebuilt state, then 403; the same when a second worker joins (a rebalance). And
`tokenmeter alerts list` shows the alerts the warehouse holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from streams.budgets import parse_budget, write_budgets
from app.process import child_preexec
from process_support import now_inside_one_month
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=33)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[2]

FILL_WAREHOUSE = """
import json, sys
from tokenmeter import topics
from tokenmeter.settings import Settings
from warehouse import open_warehouse
from warehouse.records_load import record_to_row

data = json.load(sys.stdin)
wh = open_warehouse(Settings(data_dir=data["dir"]), writer=True, serve=False)
try:
    wh.insert_priced(data["events"])
    wh.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, a)[1] for a in data["alerts"]])
finally:
    wh.close()
"""


def priced(event_id: str, team: str, cost: str, ts: datetime) -> dict:
    return {"event_id": event_id, "ts": ts.isoformat(), "source": "test", "provider": "openai", "model": "gpt-4o",
            "status": "ok", "attribution": {"team": team, "tags": {}},
            "usage": {"input_tokens": 1000, "output_tokens": 100}, "tokens_source": "provider", "cost_usd": cost,
            "cost_breakdown": {"input": cost}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "t"},
            "priced_at": ts.isoformat()}


def alert(alert_id: str, budget: str, team: str, period_key: str, threshold: int, now: datetime) -> dict:
    return {"id": alert_id, "source": "budget", "kind": "threshold", "action": "trigger", "severity": "critical",
            "dedup_key": f"tokenmeter:budget:{budget}:{period_key}", "title": f"Budget {budget} reached {threshold}%",
            "summary": "s", "at": now.isoformat(), "scope": {"team": team}, "notify": [],
            "details": {"budget": budget, "period_key": period_key, "threshold": threshold}, "dashboard_url": ""}


def env_for(bootstrap: str, data_dir: Path, port: int | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(data_dir), TOKENMETER_LOG_LEVEL="info")
    if port:
        env["TOKENMETER_API_PORT"] = str(port)
    return env


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()) | {"retry_after": err.headers.get("Retry-After")}
    except OSError:
        return 0, {}


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A broker of this file's own: `alerts list` shows the newest 20 alerts of the broker and the warehouse, and
    on the session broker other files' newer budget alerts pushed this file's out of the table."""
    return own_broker


@pytest.fixture(scope="module")
def rebuilt(kafka_bootstrap, tmp_path_factory):
    """A warehouse holding a team's spend 5.08 this month and its 100% alert; the budget defined on the broker and
    its state rebuilt from the warehouse by the real CLI, as `tokenmeter up` does on start."""
    from streams.budgets.periods import period_window

    data_dir = tmp_path_factory.mktemp("restart")
    team = f"t-{uuid.uuid4().hex[:8]}"
    budget = parse_budget({"name": f"b-{team}", "scope": {"team": team}, "period": "month", "limit": "5",
                           "action": "block"})
    # Taken here, not at import (a file may run minutes after collection), and clear of a month start: the workers
    # below judge the budget's month by the real clock, so the seeded spend must be in the month they see.
    now = now_inside_one_month()
    key = period_window(budget, now)[2]
    events = [priced(f"{team}-{i}", team, "1.27", now - timedelta(seconds=i)) for i in range(4)]  # 5.08
    alerts = [alert(f"alert-{team}-{t}", budget.name, team, key, t, now) for t in (50, 80, 100)]
    subprocess.run([sys.executable, "-c", FILL_WAREHOUSE], input=json.dumps(
        {"dir": str(data_dir), "events": events, "alerts": alerts}), text=True, check=True, timeout=120,
        env=env_for(kafka_bootstrap, data_dir))
    write_budgets(kafka_bootstrap, [budget])
    out = subprocess.run([sys.executable, "-m", "app", "budget", "rebuild"], capture_output=True, text=True,
                         timeout=120, env=env_for(kafka_bootstrap, data_dir))
    assert out.returncode == 0 and "5.08" in out.stdout, out.stderr
    return data_dir, team, budget, alerts


def test_a_rebuilt_blocking_budget_never_answers_allow_after_start_or_rebalance(kafka_bootstrap, rebuilt, tmp_path):
    data_dir, team, budget, _ = rebuilt
    ports = [free_port(), free_port()]
    workers: list[subprocess.Popen] = []
    seen: list[tuple[int, int, str]] = []  # (worker, status, action)

    def ask(i: int) -> tuple[int, dict]:
        status, body = get(f"http://127.0.0.1:{ports[i]}/v1/decision?team={team}")
        if status:
            seen.append((i, status, body.get("action", "")))
        return status, body

    def ask_until_blocked(i: int, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = ask(i)
            if status == 403:
                return body
            assert status in (0, 503), f"worker {i} answered {status} {body} before blocking"
            if status == 503:
                assert body["action"] == "unavailable" and body["retry_after"] == "1" and body["reason"]
            time.sleep(0.05)
        raise AssertionError(f"worker {i} never blocked; answers: {seen[-5:]}")

    try:
        for i in (0, 1):
            log = open(tmp_path / f"worker{i}.log", "ab")
            if i == 1:  # the second worker joins: a rebalance, while the first keeps answering
                body = ask_until_blocked(0)
                assert body["budget"] == budget.name and body["spend"].startswith("5.08")
            workers.append(subprocess.Popen([sys.executable, "-m", "app", "worker"],
                                            env=env_for(kafka_bootstrap, data_dir, ports[i]), stdout=log,
                                            stderr=subprocess.STDOUT, preexec_fn=child_preexec))
        ask_until_blocked(1)
        deadline = time.monotonic() + 3  # both keep blocking after the rebalance the join caused
        while time.monotonic() < deadline:
            for i in (0, 1):
                status, body = ask(i)
                assert status in (403, 503), f"worker {i} answered {status} {body} during the rebalance"
            time.sleep(0.05)
        assert {s for _, s, _ in seen} <= {403, 503}
    finally:
        for worker in workers:
            stop(worker)
        for i in range(len(workers)):
            print(f"--- worker {i}\n" + (tmp_path / f"worker{i}.log").read_text()[-3000:])


def test_alerts_list_shows_the_alerts_the_warehouse_holds(kafka_bootstrap, rebuilt):
    data_dir, team, budget, alerts = rebuilt
    out = subprocess.run([sys.executable, "-m", "app", "alerts", "list", "--format", "json", "--limit",
                          "1000"], capture_output=True, text=True, timeout=120, env=env_for(kafka_bootstrap, data_dir))
    assert out.returncode == 0, out.stderr
    ids = {row["id"] for row in json.loads(out.stdout)}
    assert {a["id"] for a in alerts} <= ids  # not on the broker any more: read from the warehouse
    table = subprocess.run([sys.executable, "-m", "app", "alerts", "list"], capture_output=True, text=True,
                           timeout=120, env=env_for(kafka_bootstrap, data_dir))
    assert f"Budget {budget.name} reached 100%" in table.stdout
