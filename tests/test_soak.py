"""The chaos soak in small: 3 cycles of random SIGKILLs of every component (worker, loader, dispatcher, anomaly
runner, dashboard, both collectors, the broker and `up` itself) under steady traffic, then every check of
`tokenmeter soak` must pass (docs/soak.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.soak import time_budget

pytestmark = pytest.mark.slow(seconds=85)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[1]


def test_three_cycle_soak_passes_every_check(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "app", "soak", "--minutes", "0.5", "--cycles", "3", "--json",
                          "--data-dir", str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=time_budget(30) + 150)  # the soak stops itself at its budget and says why
    result = json.loads(out.stdout)
    failed = [f"{c['name']}: {c['summary']} {json.dumps(c['details'])[:800]}" for c in result["checks"] if not c["ok"]]
    assert not failed, "\n".join(failed) + f"\nlogs: {tmp_path / 'logs'}"
    assert out.returncode == 0
    assert {k["victim"] for k in result["kills"]} == {"worker", "loader", "alerts", "anomalies", "dashboard",
                                                      "collector-http", "collector-file", "broker", "up"}
    assert result["events_acknowledged"] > 200
    # the reserving gateway reached its hard budget (refused at the limit) and the verdict on it was taken
    assert any(c["name"] == "reserving gateway never past its limit" for c in result["checks"])
    assert result["reservations"]["billed"] > 0 and result["reservations"]["refused"] > 0, result["reservations"]


def test_a_send_in_doubt_at_the_stop_counts_as_acknowledged_only_if_stored():
    """The 3-cycle soak failed once in CI with 4 events "stored but never acknowledged": one HTTP batch, posted while
    the collector was killed (it had produced the batch before dying), retried until the traffic stopped, never
    answered 202. No client is left to retry such a send; the warehouse decides: stored means acknowledged."""
    from app.soak.traffic import Ledger

    ledger = Ledger(run_id="t")
    batch = [ledger.new_event("http") for _ in range(4)]
    ledger.leave_in_doubt(batch, "http")
    ledger.settle_in_doubt({batch[0]["event_id"], batch[1]["event_id"], "soak-t-other"})
    assert sorted(ledger.acked) == sorted(e["event_id"] for e in batch[:2]) and ledger.sent["http"] == 2
    assert sorted(ledger.in_doubt) == sorted(e["event_id"] for e in batch[2:])
    assert "_source" not in ledger.acked[batch[0]["event_id"]]


def test_a_threshold_reached_only_with_usage_lost_with_the_broker_may_have_been_delivered():
    """The live budget counts usage when the worker prices it; a broker loss (memory-only embedded broker) can then
    lose its priced record before the warehouse stores it. A 100 % alert at $1.1202 of $1.12 was right, though the
    warehouse ended at $1.1156 (99.6 %): the soak failed in CI on it. Spend short of a threshold even with the lost
    usage is still wrong, and a threshold the stored spend reached must still be delivered."""
    from decimal import Decimal

    from app.soak.checks import alerts_check
    from app.soak.receiver import ROUTES, Delivery

    limits = {"budget-soak-b": Decimal("1.12")}
    delivered = [Delivery(route, f"id-{t}", "threshold", "trigger", "budget-soak-b", t)
                 for route in ROUTES for t in (50, 80, 100)]
    spend = {"budget-soak-b": Decimal("1.1156")}
    assert alerts_check(limits, (50, 80, 100), spend, delivered, {"budget-soak-b": Decimal("0.0046")}).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered, {"budget-soak-b": Decimal("0.0040")}).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered).ok
    assert not alerts_check(limits, (50, 80, 100), spend, delivered[1:], {"budget-soak-b": Decimal("0.0046")}).ok
