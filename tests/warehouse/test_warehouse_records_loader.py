"""The loader's record topics on the real broker: each topic lands in its table, bad records are dead-lettered
with the reason, tombstones are skipped, and the price catalog is recorded on start."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
import json
import uuid
from decimal import Decimal

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tokenmeter import topics
from warehouse import run_loader

WAIT_SECONDS = 60


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """This file produces hostile records to tokenmeter's topics: they stay on a broker of its own."""
    return own_broker


@pytest.fixture
def loader_settings(warehouse_settings, kafka_bootstrap):
    return warehouse_settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap})


def _records(tag: str) -> dict[str, list]:
    at = "2025-03-01T11:00:00Z"
    return {
        topics.ALERTS: [{"id": f"al-{tag}", "source": "anomaly", "kind": "spend_spike", "action": "trigger",
                         "severity": "error", "dedup_key": f"d-{tag}", "title": "t", "summary": "s", "at": at,
                         "scope": {"team": "search"}, "notify": [], "details": {"anomaly_id": "x"},
                         "dashboard_url": "http://x/"}],
        topics.ALERT_DELIVERIES: [{"alert_id": f"al-{tag}", "route": "webhook", "target": "http://h/***",
                                   "status": "delivered", "attempts": 1, "last_error": "", "http_status": 204, "at": at}],
        topics.ENFORCEMENT: [{"budget": f"b-{tag}", "scope": {"team": "search"}, "action": "block", "reason": "over",
                              "until": "2025-04-01T00:00:00Z", "metric": "tokens", "spend": 1200, "limit": 1000,
                              "percent": "120", "period_key": "2025-03", "period_start": "2025-03-01T00:00:00Z",
                              "period_end": "2025-04-01T00:00:00Z", "projected": None, "expected_breach_at": None,
                              "updated_at": at, "spend_before_definition": "pending"},
                             None,  # a tombstone: the budget was deleted
                             {"budget": f"b-{tag}-bad", "spend": 0.1}],  # floats and missing fields are refused
        topics.ANOMALIES: [[{"id": f"an-{tag}", "kind": "token_drift", "scope_dim": "model", "scope_value": "o3",
                             "severity": "info", "observed": "1234.56789", "expected": "1000", "expected_low": "900",
                             "expected_high": "1100", "unit": "tokens_per_request", "start": at, "end": at,
                             "status": "open", "explanation": "x", "detected_at": at}]],  # a JSON array works too
        topics.ANOMALY_ACKS: [{"anomaly_id": f"an-{tag}", "kind": "token_drift", "scope_dim": "model",
                               "scope_value": "o3", "action": "ack", "by": "ann", "note": "", "mute_until": None,
                               "at": at}],
        topics.PROVIDER_USAGE: [{"id": f"pu-{tag}", "provider": "anthropic", "kind": "cost", "bucket_start": at,
                                 "bucket_end": "2025-03-02T00:00:00Z", "bucket_width": "1d", "model": "claude-sonnet-4",
                                 "workspace_id": None, "cost_usd": "12.345678", "token_type": "output_tokens",
                                 "group": {"model": "claude-sonnet-4"}, "fetched_at": at}],
        topics.DEADLETTER: [{"reason": f"dl-{tag}: not JSON", "stage": "collect:file", "dialect": "kong",
                             "payload": "x", "payload_sha256": "0" * 64, "file": "/var/log/kong.log",
                             "at": datetime.now(timezone.utc).isoformat(),  # dead letters are kept 400 days
                             "line": 7}],
    }


async def _produce(bootstrap: str, records: dict[str, list]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for topic, values in records.items():
            for value in values:
                payload = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
                await producer.send_and_wait(topic, payload, key=b"k")
    finally:
        await producer.stop()


async def _dead_letters(bootstrap: str, marker: str, at_least: int = 1) -> list[dict]:
    consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        found: list[dict] = []
        while asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                found += [orjson.loads(r.value) for r in records if marker in r.value.decode("utf-8", "replace")]
            if len(found) >= at_least:
                return found
        return found
    finally:
        await consumer.stop()


def test_record_topics_load_into_their_tables(loader_settings, wh):
    from streams.pricing.book import load_price_book

    tag = uuid.uuid4().hex[:10]
    book = load_price_book()

    def stored() -> dict[str, int]:
        checks = {
            "alerts": ("SELECT count() AS n FROM alerts WHERE id = {v:String}", f"al-{tag}"),
            "alert_deliveries": ("SELECT count() AS n FROM alert_deliveries WHERE alert_id = {v:String}", f"al-{tag}"),
            "budget_status": ("SELECT count() AS n FROM budget_status WHERE startsWith(budget, {v:String})", f"b-{tag}"),
            "anomalies": ("SELECT count() AS n FROM anomalies WHERE id = {v:String}", f"an-{tag}"),
            "anomaly_acks": ("SELECT count() AS n FROM anomaly_acks WHERE anomaly_id = {v:String}", f"an-{tag}"),
            "provider_usage": ("SELECT count() AS n FROM provider_usage WHERE id = {v:String}", f"pu-{tag}"),
            "dead_letters": ("SELECT count() AS n FROM dead_letters WHERE source = 'kong' AND startsWith(reason, {v:String})",
                             f"dl-{tag}:"),
        }
        return {table: int(wh.query(sql, {"v": v})["n"][0]) for table, (sql, v) in checks.items()}

    async def scenario():
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_loader(loader_settings, stop=stop, ready=ready.set, price_book=book))
        try:
            await asyncio.wait_for(ready.wait(), WAIT_SECONDS)
            await _produce(loader_settings.bootstrap_servers, _records(tag))
            deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
            while min((await asyncio.to_thread(stored)).values()) < 1:
                assert asyncio.get_running_loop().time() < deadline, f"records not loaded: {stored()}"
                await asyncio.sleep(0.1)
            letters = await _dead_letters(loader_settings.bootstrap_servers, f"b-{tag}-bad")
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, WAIT_SECONDS)
        return stats, letters

    stats, letters = asyncio.run(scenario())
    assert stored() == dict.fromkeys(stored(), 1)
    assert stats.records_inserted >= 7
    assert len(letters) == 1 and letters[0]["topic"] == topics.ENFORCEMENT and letters[0]["stage"] == "load"
    assert "spend" in letters[0]["reason"] or "required" in letters[0]["reason"]

    status = wh.query("SELECT * FROM budget_status WHERE budget = {b:String}", {"b": f"b-{tag}"}).row(0, named=True)
    assert (status["spend"], status["limit_amount"], status["percent"]) == (Decimal(1200), Decimal(1000), Decimal(120))
    assert status["action"] == "block" and status["until"].month == 4
    assert status["spend_before_definition"] == "pending"  # the Budgets page shows it (walk33)
    anomaly = wh.query("SELECT observed FROM anomalies WHERE id = {i:String}", {"i": f"an-{tag}"})
    assert anomaly["observed"][0] == Decimal("1234.56789")
    usage = wh.query("SELECT * FROM provider_usage WHERE id = {i:String}", {"i": f"pu-{tag}"}).row(0, named=True)
    assert usage["cost_usd"] == Decimal("12.345678") and usage["model"] == "claude-sonnet-4"
    assert orjson.loads(usage["group_fields"]) == {"model": "claude-sonnet-4"}
    versions = wh.query("SELECT count() AS n FROM price_catalog_history WHERE catalog_version = {v:String}",
                        {"v": book.catalog_version})["n"][0]
    assert versions == sum(len(entry.versions) for entry in book.entries.values())


def _deep(depth: int = 300) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE_VALUES = [
    221360928884514619392, "221360928884514619392", 2**64, -(2**63) - 1, "1e39", "1E+999999", "-1e-999999",
    "NaN", "Infinity", "-Infinity", "sNaN", 1e308, float("nan"), float("inf"), True, [], {}, [1, "a"],
    {"a": {"b": 1}}, _deep(), {"x": _deep()}, "x" * 300_000, "9" * 5000, "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00Z", "1899-12-31T23:59:59Z", "2025-03-01T11:00:00+14:00", "", "\u0000\ud7ff", -1,
]


@pytest.mark.parametrize("topic", list(_records("x")))
def test_every_hostile_field_value_is_stored_or_refused_with_a_reason(wh, topic):
    """Each field of each record topic, set to each hostile value: record_to_row either gives a row the real
    table stores, or raises RecordRowError (the loader's dead letter); nothing else (the loader used to die on
    decimal.InvalidOperation for an anomaly's `observed` of 221360928884514619392)."""
    from warehouse.records_load import RecordRowError, record_to_row

    valid = next(r for r in _records("h") [topic] if isinstance(r, dict) and len(r) > 3) \
        if topic != topics.ANOMALIES else _records("h")[topic][0][0]
    rows, refused = [], 0
    for name in list(valid):
        for value in HOSTILE_VALUES:
            record = {**valid, name: value, "id": f"h-{uuid.uuid4().hex[:8]}"} if "id" in valid \
                else {**valid, name: value}
            try:
                rows.append(record_to_row(topic, record)[1])
            except RecordRowError as exc:
                assert str(exc) and len(str(exc)) < 2000
                refused += 1
    if topic == topics.DEADLETTER:  # a letter is always stored (a letter about a letter would loop): no refusal
        assert refused == 0
    else:
        assert refused > len(valid)  # most hostile values are refused
    assert wh.insert_records(topic, rows) == len(rows)  # the accepted ones really fit the table


def test_loader_dead_letters_unstorable_records_and_keeps_loading(loader_settings, wh):
    """The issue's record (anomaly `observed` 221360928884514619392) and other hostile ones between valid
    records: the loader dead-letters them, counts them, and keeps loading (it used to crash, and crash again on
    every restart)."""
    tag = uuid.uuid4().hex[:10]
    good = _records(tag)[topics.ANOMALIES][0][0]
    hostile = [
        {**good, "id": f"an-{tag}-huge", "observed": "221360928884514619392"},
        json.dumps({**good, "id": f"an-{tag}-huge-number", "observed": 221360928884514619392}).encode(),
        {**good, "id": f"an-{tag}-nan", "expected": "NaN"},
        {**good, "id": f"an-{tag}-deep", "scope_value": _deep(200)},
        {**good, "id": f"an-{tag}-far", "detected_at": "9999-12-31T00:00:00Z"},
    ]
    alert = _records(tag)[topics.ALERTS][0]
    bad_alert = json.dumps({**alert, "id": f"al-{tag}-deep", "details": {"d": _deep(300)}}).encode()

    async def scenario():
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_loader(loader_settings, stop=stop, ready=ready.set))
        try:
            await asyncio.wait_for(ready.wait(), WAIT_SECONDS)
            await _produce(loader_settings.bootstrap_servers,
                           {topics.ANOMALIES: [*hostile, good], topics.ALERTS: [bad_alert, alert]})
            deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
            while True:
                assert not task.done(), f"the loader stopped: {task.exception()!r}"
                found = await asyncio.to_thread(
                    wh.query, "SELECT (SELECT count() FROM anomalies WHERE id = {a:String})"
                    " + (SELECT count() FROM alerts WHERE id = {b:String}) AS n", {"a": f"an-{tag}", "b": f"al-{tag}"})
                if found["n"][0] == 2:
                    break
                assert asyncio.get_running_loop().time() < deadline, "valid records after hostile ones not loaded"
                await asyncio.sleep(0.1)
            letters = await _dead_letters(loader_settings.bootstrap_servers, tag, at_least=5)
        finally:
            stop.set()
            stats = await asyncio.wait_for(task, WAIT_SECONDS)
        return stats, letters

    stats, letters = asyncio.run(scenario())
    assert stats.dead_letters == 5  # the number 221360928884514619392 came as a float; details 300 deep
    reasons = " | ".join(letter["reason"] for letter in letters)
    assert "observed" in reasons and "details" in reasons and all(letter["stage"] == "load" for letter in letters)
    stored = wh.query("SELECT id, observed FROM anomalies WHERE startsWith(id, {p:String}) ORDER BY id",
                      {"p": f"an-{tag}"})
    # The decimal string fits Decimal(38, 12) and is stored exactly (it raised InvalidOperation before).
    assert stored.rows() == [(f"an-{tag}", Decimal("1234.56789")),
                             (f"an-{tag}-huge", Decimal("221360928884514619392"))]
