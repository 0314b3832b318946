"""cap33 on the real stack (embedded broker, `tokenmeter worker`, `tokenmeter load`, chDB): a call whose cost the
warehouse cannot store (at or above 1,000,000 USD, Decimal(18,12)), sent among normal ones, is counted by neither the
budget nor the warehouse, and one dead letter names it. Before, the worker priced and sent it: the budget's spend
included it (1,050,010.5 USD) while the loader lettered it and the warehouse's total did not (10.5). Calls past the
attribution bounds sent straight to the usage topic (a user id of 5,000 characters, 1,000 tags) are lettered by the
worker too, naming the field, its size and the limit: before, both were priced, counted and stored."""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from kafka_support import TopicTail
from process_support import get_json, start_worker, stop, wait_for, warehouse_totals, zone_at_noon
from streams.budgets import parse_budget, write_budgets
from test_end_to_end import service
from tokenmeter import topics
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=45)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[1]


def call(team: str, **usage: int) -> dict:
    return {"event_id": f"cap-{uuid.uuid4().hex[:12]}", "ts": datetime.now(timezone.utc).isoformat(), "source": "test",
            "provider": "openai", "model": "gpt-4o", "attribution": {"team": team}, "usage": usage}


async def produce(bootstrap: str, key: bytes, events: list[dict]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.USAGE, key=key, value=orjson.dumps(events))
    finally:
        await producer.stop()


def test_a_call_over_what_the_warehouse_stores_is_counted_by_neither_budget_nor_warehouse(kafka_bootstrap, tmp_path):
    team, name, port = f"team-{uuid.uuid4().hex[:8]}", f"cap-{uuid.uuid4().hex[:6]}", free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap,
               TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(port), TOKENMETER_LOG_LEVEL="warning",
               TOKENMETER_LOAD_FLUSH_SECONDS="0.3", TOKENMETER_WORKER_BATCH_SECONDS="0.2")
    write_budgets(kafka_bootstrap, [parse_budget({"name": name, "scope": {"team": team}, "period": "month",
                                                  "tz": zone_at_noon(), "limit": "100", "action": "alert"})])
    over = call(team, input_tokens=220_000_000_000, output_tokens=50_000_000_000)  # 1,050,000 USD
    normal = [call(team, input_tokens=1_000_000, output_tokens=100_000) for _ in range(3)]  # 3.50 USD each
    long_user, many_tags = (call(team, input_tokens=1_000_000) for _ in range(2))
    long_user["attribution"]["user"] = "u" * 5000
    many_tags["attribution"]["tags"] = {f"k{i}": "v" for i in range(1000)}

    def decision() -> dict | None:
        return next((d for d in get_json(f"http://127.0.0.1:{port}/v1/budgets")[1].get("decisions", [])
                     if d.get("budget") == name), None)

    with service("load", env, tmp_path):
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            wait_for(lambda: (d := decision()) and d["spend_before_definition"] == "counted", 90, "the budget ready")
            sent = [normal[0], over, long_user, many_tags, *normal[1:]]
            asyncio.run(produce(kafka_bootstrap, f"team:{team}".encode(), sent))
            wait_for(lambda: (warehouse_totals(tmp_path / "data") or {}).get(team, (0,))[0] == 3, 90,
                     "the three normal calls in the warehouse")
            spend = wait_for(lambda: (d := decision()) and Decimal(d["spend"]) and Decimal(d["spend"]), 60,
                             "the budget's spend")
            assert warehouse_totals(tmp_path / "data")[team] == (3, Decimal("10.5"))
            assert spend == Decimal("10.5")  # the warehouse's figure, not 1,050,010.5
            ids = [over["event_id"], long_user["event_id"], many_tags["event_id"]]

            found: dict[str, list[dict]] = {i: [] for i in ids}

            def letters_of_ids(tail: TopicTail) -> dict[str, list[dict]] | None:
                tail.read()  # polled: the letters since the last poll, not the session broker's whole topic again
                for letter in (orjson.loads(r.value) for r in tail.new if r.value):
                    for i in ids:
                        if i in letter["reason"] or i in str(letter.get("payload")):
                            found[i].append(letter)
                return found if all(found.values()) else None

            with TopicTail(kafka_bootstrap, topics.DEADLETTER) as tail:
                letters = wait_for(lambda: letters_of_ids(tail), 30, "the three letters")
            assert [len(found) for found in letters.values()] == [1, 1, 1], letters
            assert all(found[0]["stage"] == "worker" for found in letters.values())
            cost, user, tags = (letters[i][0]["reason"] for i in ids)
            assert cost.startswith("cost too large") and "1050000.000000000000 USD" in cost and "1000000 USD" in cost
            assert user.startswith("invalid event: attribution.user: Value error, 5000 characters, at most 1024")
            assert tags.startswith("invalid event: attribution.tags: Value error, 1000 tags, at most 128")
        finally:
            stop(worker)
            print((tmp_path / "worker.log").read_text(errors="replace")[-3000:])
