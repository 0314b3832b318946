"""The demo's start on the real worker and broker (forecast36): `budget rebuild` publishes the month's spend from the
warehouse, the worker restores it, then half an hour of calls arrives at once (the live sender catching up on the
hour). The forecast alert and the enforcement records the Budgets page and /api read must give one projection: the
worker alerted "projected ... USD" while every record it published said projected = null ("not enough data yet")."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from process_support import get_json, start_worker, stop, wait_for, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from streams.budgets.owner import BudgetOwner
from streams.topic_reader import read_topic
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=12)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[2]


async def _send(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def _of(bootstrap: str, topic: str, name: str) -> list[dict]:
    return [v for r in asyncio.run(read_topic(bootstrap, topic)) if r.value
            for v in [orjson.loads(r.value)] if (v.get("details") or v).get("budget") == name]


def test_the_alert_and_the_published_records_give_one_projection(kafka_bootstrap, tmp_path):
    bootstrap, now = kafka_bootstrap, datetime.now(timezone.utc)
    team = f"search-{uuid.uuid4().hex[:6]}"
    budget = parse_budget({"name": f"{team}-monthly", "scope": {"team": team}, "period": "month",
                           "tz": zone_at_noon(), "limit": "20", "thresholds": [100], "action": "alert"})
    write_budgets(bootstrap, [budget])
    # what `tokenmeter budget rebuild` publishes (its BudgetOwner.rebuild), the warehouse having 8 USD of the month
    state, _ = BudgetOwner({budget.name: budget}).rebuild(budget.name, now, {}, period_total=Decimal("8"))
    asyncio.run(_send(bootstrap, topics.BUDGET_STATE, budget.name.encode(), orjson.dumps(state)))

    api_port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(api_port),
               TOKENMETER_LOG_LEVEL="info", TOKENMETER_WORKER_BATCH_SECONDS="0.2")
    log_path = tmp_path / "worker.log"
    proc = start_worker(env, log_path)
    try:
        wait_for(lambda: get_json(f"http://127.0.0.1:{api_port}/ready")[0] == 200, what="decisions ready")
        # 30 calls over the last half hour in one usage record: 10k input + 1k output tokens of gpt-4o, 0.035 USD each
        calls = [{"event_id": f"{team}-{i}", "ts": (now - timedelta(minutes=30 - i)).isoformat(), "source": "test",
                  "provider": "openai", "model": "gpt-4o", "attribution": {"team": team, "user": "chen"},
                  "usage": {"input_tokens": 10_000, "output_tokens": 1_000}} for i in range(30)]
        asyncio.run(_send(bootstrap, topics.USAGE, f"team:{team}".encode(), orjson.dumps(calls)))
        forecast = wait_for(lambda: next((a for a in _of(bootstrap, topics.ALERTS, budget.name)
                                          if a["kind"] == "forecast"), None), what="the forecast alert")
        details = forecast["details"]
        assert Decimal(details["projected"]) >= Decimal("20") and details["expected_breach_at"] > now.isoformat()
        # the record published with the alert holds the very same projection and breach time (the page's, /api's)
        wait_for(lambda: any(Decimal(r["spend"]) == Decimal("9.05") for r in _of(bootstrap, topics.ENFORCEMENT,
                                                                                  budget.name)), what="spend 9.05")
        records = [r for r in _of(bootstrap, topics.ENFORCEMENT, budget.name) if Decimal(r["spend"]) > 8]
        assert (details["projected"], details["expected_breach_at"]) in {
            (r["projected"], r["expected_breach_at"]) for r in records}, records
        assert all(r["projected"] is not None and Decimal(r["projected"]) >= 20 for r in records), records
    finally:
        stop(proc)
        print(log_path.read_text()[-3000:])
