"""The whole pipeline on embedded parts: events into `tokenmeter.usage` -> Faust worker -> loader -> chDB, read back
with `tokenmeter report` while the stack runs (through the loader) and after it stopped (chDB directly).
Totals must be exact although events are redelivered and duplicated."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.broker import embedded_broker
from app.process import child_preexec
from app.soak import expected_by_team
from process_support import warehouse_totals
from tokenmeter import topics
from tokenmeter.events import partition_key
from tokenmeter.settings import free_port

pytestmark = pytest.mark.slow(seconds=45)  # rough seconds: longest files first (tests/suite_order.py)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stack_env(tmp_path):
    with embedded_broker("127.0.0.1", free_port(), partitions=4) as bootstrap:
        env = dict(os.environ, PYTHONPATH=str(ROOT), TOKENMETER_KAFKA_BOOTSTRAP=bootstrap,
                   TOKENMETER_DATA_DIR=str(tmp_path / "data"), TOKENMETER_API_PORT=str(free_port()),
                   TOKENMETER_LOG_LEVEL="warning", TOKENMETER_LOAD_FLUSH_SECONDS="0.3")
        yield env


@contextmanager
def service(name: str, env: dict, log_dir: Path):
    log = open(log_dir / f"{name}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", name], env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=child_preexec)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def report(env: dict, *args: str) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "app", "report", "--format", "json", *args], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def make_events(n: int) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat()
    models = [("openai", "gpt-4o"), ("anthropic", "claude-sonnet-4-5"), ("gemini", "gemini-2.5-flash")]
    events = []
    for i in range(n):
        provider, model = models[i % 3]
        event = {"event_id": str(uuid.uuid4()), "ts": now, "source": "test", "provider": provider, "model": model,
                 "attribution": {"org": "acme", "team": ["search", "support", "growth"][i % 3], "user": f"u{i % 5}"}}
        if i % 10 == 0:  # streamed call without usage: the worker counts the text
            event["content"] = {"prompt": [{"role": "user", "content": f"question number {i}"}], "completion": "an answer"}
        else:
            event["usage"] = {"input_tokens": 1000 + i, "cached_input_tokens": i % 500, "output_tokens": 100 + i}
        events.append(event)
    events.append({**events[1], "event_id": str(uuid.uuid4()), "model": "no-such-model-xyz"})  # unpriced, visible
    return events


async def produce(bootstrap: str, batches: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topics.USAGE, value, key=key) for key, value in batches])
    finally:
        await producer.stop()


async def deadletters(bootstrap: str, want: int, timeout: float = 60) -> list[dict]:
    # Assigned, not a fresh consumer group: the embedded broker holds a new group's JoinGroup ~5 s.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[dict] = []
    try:
        await consumer.topics()  # loads the metadata, so the partitions are known
        consumer.assign([TopicPartition(topics.DEADLETTER, p)
                         for p in sorted(consumer.partitions_for_topic(topics.DEADLETTER) or ())])
        deadline = time.monotonic() + timeout
        while len(found) < want and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            found += [orjson.loads(m.value) for msgs in batch.values() for m in msgs]
    finally:
        await consumer.stop()
    return found


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


async def priced_formats(bootstrap: str) -> set:
    """The format headers of the messages on tokenmeter.priced (None: no header, i.e. JSON)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([TopicPartition(topics.PRICED, p) for p in sorted(consumer.partitions_for_topic(topics.PRICED) or ())])
        batch = await consumer.getmany(timeout_ms=2000)
        return {dict(m.headers).get("tokenmeter-format") for msgs in batch.values() for m in msgs}
    finally:
        await consumer.stop()


# arrow: the worker writes tokenmeter.priced as Arrow IPC (issue 14, loader11); the loader stores the same totals
@pytest.mark.parametrize("priced_format", ["json", "arrow"])
def test_events_flow_to_the_warehouse_exactly_once(stack_env, tmp_path, priced_format):
    stack_env["TOKENMETER_PRICED_FORMAT"] = priced_format
    bootstrap = stack_env["TOKENMETER_KAFKA_BOOTSTRAP"]
    events = make_events(300)
    expected = expected_by_team(events)
    by_key: dict[bytes, list[dict]] = {}
    for event in events:
        by_key.setdefault(partition_key(event), []).append(event)
    batches = [(key, orjson.dumps(evs)) for key, evs in by_key.items()]
    duplicates = [(partition_key(events[5]), orjson.dumps(events[:50]))]  # a collector replaying a batch
    bad = [(b"team:search", b"{not json"), (b"team:search", orjson.dumps({"event_id": "x", "model": "gpt-4o"}))]

    with service("worker", stack_env, tmp_path), service("load", stack_env, tmp_path) as loader:
        asyncio.run(produce(bootstrap, batches + duplicates + bad))

        def totals_match():
            rows = report(stack_env, "--group-by", "team")
            got = {r["team"]: (r["events"], Decimal(r["cost_usd"])) for r in rows}
            return got if got == expected else None

        try:
            wait_for(lambda: warehouse_totals(tmp_path / "data") == expected, 240,
                     "exact totals in the warehouse while the stack runs")
            assert totals_match(), "the loader serves the exact totals, `tokenmeter report` must say the same"
        except AssertionError:
            for name in ("worker", "load"):  # say why, not only that it timed out
                print(f"--- {name}.log ---\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:])
            print("--- report ---", report(stack_env, "--group-by", "team"), "--- expected ---", expected)
            raise
        assert asyncio.run(priced_formats(bootstrap)) == ({b"arrow"} if priced_format == "arrow" else {None})
        letters = asyncio.run(deadletters(bootstrap, 2))
        assert len(letters) == 2
        assert any("not JSON" in d["reason"] for d in letters)
        assert any("invalid event" in d["reason"] and "ts" in d["reason"] for d in letters)

        # Redelivery after the fact: the same batch again changes nothing.
        asyncio.run(produce(bootstrap, duplicates))
        rows = report(stack_env, "--group-by", "pricing_status")
        unpriced = [r for r in rows if r["pricing_status"] == "unpriced"]
        assert unpriced and unpriced[0]["events"] == 1
        assert loader.poll() is None

    # The stack is down: report opens chDB directly and sees the same exact numbers.
    rows = report(stack_env, "--group-by", "team")
    assert {r["team"]: (r["events"], Decimal(r["cost_usd"])) for r in rows} == expected
    assert sum(r["events"] for r in rows) == len(events)
