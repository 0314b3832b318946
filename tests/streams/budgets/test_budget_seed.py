"""A budget defined while the stack runs counts its period's spend from the period's start (seed32; walk31 saw a
budget set at 06:09 read 0.0015 USD while the team had spent 0.1688 USD that day): the real broker, worker, loader
and chDB warehouse; spend for a team, then the budget, then more spend and duplicate resends of old and new events.
The budget's spend must equal the warehouse's total of the period, before and after a worker restart, and the
thresholds passed before the budget existed are told in one alert, not in one per threshold."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from app.process import child_preexec
from process_support import get_json, start_worker, stop, wait_for, warehouse_totals, zone_at_noon
from reserve_support import produce_one_message as produce, spend_event as event
from streams.budgets import parse_budget, write_budgets
from streams.budgets.readiness import spend_partition
from streams.topic_reader import read_topic
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=70)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[3]
COST = Decimal("0.35")  # gpt-4o: 100k input tokens at $2.50 / 1M + 10k output at $10 / 1M


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A broker of this file's own: the loader reads tokenmeter.priced from its start."""
    return own_broker




def warehouse_team(data_dir: Path, team: str) -> tuple[int, Decimal] | None:
    return (warehouse_totals(data_dir) or {}).get(team)


def budget_record(port: int, name: str) -> dict | None:
    """The budget's decision record as the worker serves it (/v1/budgets, which `budget list` reads too)."""
    decisions = get_json(f"http://127.0.0.1:{port}/v1/budgets")[1].get("decisions", [])
    found = [d for d in decisions if d and d.get("budget") == name]
    return found[0] if found else None


def budget_spend(port: int, name: str) -> Decimal | None:
    record = budget_record(port, name)
    return Decimal(record["spend"]) if record else None


def page_spend(data_dir: Path, name: str) -> Decimal | None:
    """The spend the dashboard's Budgets page shows (warehouse.analytics.budget_status, through the loader)."""
    from tokenmeter.settings import Settings
    from warehouse.analytics import budget_status
    from warehouse.endpoint import live_reader

    reader = live_reader(Settings(data_dir=data_dir))
    if reader is None:
        return None
    try:
        rows = budget_status(reader, budgets=[name]).to_dicts()
    finally:
        reader.close()
    return Decimal(rows[0]["spend"]) if rows else None


def budget_alerts(bootstrap: str, name: str) -> list[dict]:
    found = [orjson.loads(r.value) for r in asyncio.run(read_topic(bootstrap, topics.ALERTS)) if r.value]
    return [a for a in found if a["details"].get("budget") == name and a["action"] == "trigger"]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory):
    """A worker and a loader on this file's broker, sharing a data dir (the loader's endpoint serves the worker's
    seed); the first test restarts the worker in place. Logs printed at the end."""
    tmp = tmp_path_factory.mktemp("seed")
    port = free_port()
    held = {"port": port, "data_dir": tmp / "data", "tmp": tmp,
            "env": dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
                        TOKENMETER_DATA_DIR=str(tmp / "data"), TOKENMETER_API_PORT=str(port),
                        TOKENMETER_LOG_LEVEL="info", TOKENMETER_WORKER_BATCH_SECONDS="0.2",
                        TOKENMETER_LOAD_FLUSH_SECONDS="0.3")}
    held["worker"] = start_worker(held["env"], tmp / "worker.log")
    try:
        with open(tmp / "loader.log", "ab") as log:
            held["loader"] = subprocess.Popen([sys.executable, "-m", "app", "load"], env=held["env"], stdout=log,
                                              stderr=subprocess.STDOUT, preexec_fn=child_preexec)
        yield held
    finally:
        stop(held["worker"])
        if "loader" in held:
            stop(held["loader"])
        for log in ("worker.log", "loader.log"):
            print(f"--- {log}\n" + (tmp / log).read_text()[-4000:])


def test_a_budget_set_mid_period_counts_the_period_spend_exactly(kafka_bootstrap, stack):
    data_dir, port, env = stack["data_dir"], stack["port"], stack["env"]
    team = f"team-{uuid.uuid4().hex[:6]}"
    name = f"seed-{team}"
    before = [event(team) for _ in range(3)]  # 1.05 USD before the budget exists
    produce(kafka_bootstrap, before)
    wait_for(lambda: warehouse_team(data_dir, team) == (3, 3 * COST), timeout=120, what="the spend loaded")

    # limit 2: the 1.05 spent already is 52.5 % (50 % passed before the budget existed)
    write_budgets(kafka_bootstrap, [parse_budget({
        "name": name, "scope": {"team": team}, "period": "month", "tz": zone_at_noon(), "limit": "2",
        "thresholds": [50, 80, 100], "action": "block"})], data_dir=data_dir)
    wait_for(lambda: budget_record(port, name), timeout=60, what="the budget's first decision")
    mid = event(team)  # while the spend from before is being taken from the warehouse (or just after)
    produce(kafka_bootstrap, [mid])
    wait_for(lambda: (r := budget_record(port, name)) and r.get("spend_before_definition") != "pending"
             and Decimal(r["spend"]) == 4 * COST, timeout=60,
             what="the period's spend 1.40 counted")

    after = event(team)  # 1.75 USD: 87.5 %, the 80 % crossing happens live
    produce(kafka_bootstrap, [after])
    produce(kafka_bootstrap, [dict(before[0]), dict(mid)])  # a collector resending an old and a new event
    wait_for(lambda: warehouse_team(data_dir, team) == (5, 5 * COST), timeout=120, what="all spend loaded")
    wait_for(lambda: budget_spend(port, name) == 5 * COST, timeout=60,
             what="the budget's spend = the warehouse's 1.75")

    quiet_team = f"quiet-{uuid.uuid4().hex[:6]}"  # spends before the restart, then nothing more
    produce(kafka_bootstrap, [event(quiet_team) for _ in range(2)])
    wait_for(lambda: warehouse_team(data_dir, quiet_team) == (2, 2 * COST), timeout=120, what="quiet spend loaded")

    stop(stack["worker"])  # a worker restart: the state topic carries the seeded spend
    stack["worker"] = start_worker(env, stack["tmp"] / "worker.log")
    # A budget defined after the restart for a team with no traffic since, in a budget-spend partition with messages
    # the restarted worker never reads again (committed before): it is seeded all the same.
    quiet = next(n for n in (f"seed-{quiet_team}-{i}" for i in range(100))
                 if spend_partition(n, 4) == spend_partition(name, 4))
    write_budgets(kafka_bootstrap, [parse_budget({"name": quiet, "scope": {"team": quiet_team}, "period": "month",
                                                  "tz": zone_at_noon(), "limit": "10"})], data_dir=data_dir)
    wait_for(lambda: (r := budget_record(port, quiet)) and r.get("spend_before_definition") != "pending"
             and Decimal(r["spend"]) == 2 * COST, timeout=60, what="the quiet team's budget seeded")
    produce(kafka_bootstrap, [dict(before[1]), dict(after)])  # resends after the restart
    last = event(team)
    produce(kafka_bootstrap, [last])
    wait_for(lambda: warehouse_team(data_dir, team) == (6, 6 * COST), timeout=120, what="the last event loaded")
    wait_for(lambda: budget_spend(port, name) == 6 * COST, timeout=60,
             what="the spend 2.10 after the restart")
    status, body = get_json(f"http://127.0.0.1:{port}/v1/decision?team={team}")
    assert status == 403 and body["budget"] == name, body
    # the Budgets page's data: the enforcement records the loader stored (budget_status)
    wait_for(lambda: page_spend(data_dir, name) == 6 * COST, timeout=60, what="the Budgets page's spend 2.10")

    alerts = budget_alerts(kafka_bootstrap, name)
    by_threshold: dict[int, list[dict]] = {}
    for alert in alerts:
        by_threshold.setdefault(alert["details"].get("threshold"), []).append(alert)
    # 50 %: passed before the budget existed, said once as such; 80 % and 100 %: crossed live, once each
    assert sorted(by_threshold) == [50, 80, 100], alerts
    assert all(len({a["id"] for a in v}) == 1 for v in by_threshold.values()), alerts
    assert "defined" in by_threshold[50][0]["summary"], by_threshold[50][0]


def test_traffic_across_the_definition_counts_each_event_once(kafka_bootstrap, stack):
    """The seam itself: a team's calls keep coming (with resends) while its budget is defined, so some were priced
    before any router knew the budget (only in the warehouse, some loaded only after the definition), some routed
    live and loaded before or after the seed. The budget must read the warehouse's total, no more, no less."""
    data_dir, port = stack["data_dir"], stack["port"]
    team = f"flow-{uuid.uuid4().hex[:6]}"
    name = f"seed-{team}"
    budget = parse_budget({"name": name, "scope": {"team": team}, "period": "month", "tz": zone_at_noon(),
                           "limit": "20", "action": "alert"})  # each call moves the percent: a decision per batch
    sent: list[dict] = []
    stop_sending = threading.Event()

    def send() -> None:
        while not stop_sending.is_set():
            batch = [event(team) for _ in range(2)]
            sent.extend(batch)
            resend = [dict(sent[i]) for i in (0, len(sent) // 2)]  # an early and a recent one again
            produce(kafka_bootstrap, batch + resend)
            time.sleep(0.05)  # pacing the traffic, not waiting for a condition

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        wait_for(lambda: (warehouse_team(data_dir, team) or (0,))[0] >= 10, timeout=120, what="traffic loaded")
        write_budgets(kafka_bootstrap, [budget], data_dir=data_dir)
        wait_for(lambda: budget_record(port, name), timeout=60, what="the budget's first decision")
        wait_for(lambda: (r := budget_record(port, name)) and r.get("spend_before_definition") != "pending",
                 timeout=60, what="the seed")
    finally:
        stop_sending.set()
        sender.join(30)
    total = len(sent) * COST
    wait_for(lambda: warehouse_team(data_dir, team) == (len(sent), total), timeout=120, what="every call loaded")
    wait_for(lambda: budget_spend(port, name) == total, timeout=60, what=f"the budget's spend {total}")

