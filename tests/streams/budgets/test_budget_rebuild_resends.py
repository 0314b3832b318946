"""walk33: a rebuilt budget counted again every event a source re-sent that the warehouse already held. `up` rebuilds
budget spend from the warehouse on each start (the embedded broker keeps nothing); the rebuilt state had no event
ids, so the demo's calendar calls of the hour, re-sent by a restarted `up`, were skipped by the loader (107
duplicates) and added by the budget (search-monthly 0.0197 USD above the warehouse). The real broker, worker, loader
and chDB: spend, both stopped, `budget rebuild --all`, both started, the same events again and one new."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from app.process import child_preexec
from process_support import get_json, start_worker, stop, wait_for, warehouse_totals, zone_at_noon
from reserve_support import produce_one_message as produce, spend_event as event
from streams.budgets import parse_budget, write_budgets
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=60)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[3]
COST = Decimal("0.35")  # gpt-4o: 100k input tokens at $2.50 / 1M + 10k output at $10 / 1M


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    return own_broker




def budget_spend(port: int, name: str) -> Decimal | None:
    try:
        decisions = get_json(f"http://127.0.0.1:{port}/v1/budgets")[1].get("decisions", [])
    except OSError:
        return None
    found = [d for d in decisions if d and d.get("budget") == name and d.get("spend_before_definition") != "pending"]
    return Decimal(found[0]["spend"]) if found else None


def start_loader(env: dict, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "app", "load"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=child_preexec)


def test_events_resent_after_a_rebuild_count_once(kafka_bootstrap, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from app.cli import main

    port, data_dir = free_port(), tmp_path / "data"
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
               TOKENMETER_DATA_DIR=str(data_dir), TOKENMETER_API_PORT=str(port), TOKENMETER_LOG_LEVEL="info",
               TOKENMETER_WORKER_BATCH_SECONDS="0.2", TOKENMETER_LOAD_FLUSH_SECONDS="0.3")
    team = f"resend-{uuid.uuid4().hex[:6]}"
    name = f"budget-{team}"
    procs = {"worker": start_worker(env, tmp_path / "worker.log"), "loader": start_loader(env, tmp_path / "loader.log")}
    try:
        # limit 10: each call moves the percent, so each batch publishes a decision (a moved percent is republished)
        write_budgets(kafka_bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "month",
                                                      "tz": zone_at_noon(), "limit": "10", "action": "alert"})],
                      data_dir=data_dir)
        wait_for(lambda: budget_spend(port, name) == 0, timeout=90, what="the budget's first decision")
        sent = [event(team) for _ in range(3)]
        produce(kafka_bootstrap, sent)
        wait_for(lambda: (warehouse_totals(data_dir) or {}).get(team) == (3, 3 * COST), timeout=120,
                 what="the spend loaded")
        wait_for(lambda: budget_spend(port, name) == 3 * COST, timeout=60, what="the budget's 1.05")

        # walk33: `--all` while the owner runs changed nothing (its next batch wrote its own state over the rebuilt
        # one) and said nothing: it is refused, naming what to do
        for name_, value in (("TOKENMETER_KAFKA_BOOTSTRAP", kafka_bootstrap), ("TOKENMETER_DATA_DIR", str(data_dir))):
            monkeypatch.setenv(name_, value)
        refused = CliRunner().invoke(main, ["budget", "rebuild", "--all"])
        assert refused.exit_code == 1 and "budget owners are running" in refused.output, refused.output
        assert "Stop the workers first" in refused.output
        stop(procs.pop("worker"))
        stop(procs.pop("loader"))
        rebuilt = CliRunner().invoke(main, ["budget", "rebuild", "--all"])  # the stopped worker's announcement stays
        assert rebuilt.exit_code == 0 and f"{name}: " in rebuilt.output and "1.05" in rebuilt.output, rebuilt.output
        procs["worker"] = start_worker(env, tmp_path / "worker.log")
        procs["loader"] = start_loader(env, tmp_path / "loader.log")

        produce(kafka_bootstrap, [dict(e) for e in sent] + [event(team)])  # a source re-sending, and one new call
        wait_for(lambda: (warehouse_totals(data_dir) or {}).get(team) == (4, 4 * COST), timeout=120,
                 what="the new event loaded (the re-sent ones skipped)")
        wait_for(lambda: budget_spend(port, name) == 4 * COST, timeout=60,
                 what=f"the budget's spend 1.40 = the warehouse's (it reads {budget_spend(port, name)})")
    finally:
        for proc in procs.values():
            stop(proc)
        for log in ("worker.log", "loader.log"):
            if (tmp_path / log).exists():
                print(f"--- {log}\n" + (tmp_path / log).read_text()[-3000:])
