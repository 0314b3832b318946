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
                   TOKENMETER_LOG_LEVEL="warning", TOKENMETER_LOAD_FLUSH_SECONDS="0.3",
                   TOKENMETER_WORKER_WARM_UP="true")  # as `up` runs it (tests/conftest.py turns it off)
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
    """The format headers of every message on tokenmeter.priced so far (None: no header, i.e. JSON), read up to the
    partitions' end offsets (one fetch may stop short of a partition's last messages)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        await consumer.topics()
        parts = [TopicPartition(topics.PRICED, p) for p in sorted(consumer.partitions_for_topic(topics.PRICED) or ())]
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        found: set = set()
        deadline = time.monotonic() + 30
        while [p for p in parts if await consumer.position(p) < ends[p]]:
            assert time.monotonic() < deadline, "tokenmeter.priced not read to its end within 30 s"
            batch = await consumer.getmany(timeout_ms=500)
            found |= {dict(m.headers).get("tokenmeter-format") for msgs in batch.values() for m in msgs}
        return found
    finally:
        await consumer.stop()


def _batches(events: list[dict]) -> list[tuple[bytes, bytes]]:
    by_key: dict[bytes, list[dict]] = {}
    for event in events:
        by_key.setdefault(partition_key(event), []).append(event)
    return [(key, orjson.dumps(evs)) for key, evs in by_key.items()]


def test_events_flow_to_the_warehouse_exactly_once_across_a_priced_format_switch(stack_env, tmp_path):
    """One stack, both formats of tokenmeter.priced (issue 14, loader11): the worker first writes JSON
    (TOKENMETER_PRICED_FORMAT=json, no header), then is restarted writing Arrow IPC (the default), as a deployment
    switching formats does, while the same loader runs. Each format's events are stored exactly once, a batch of the
    JSON phase replayed in the Arrow phase (and once more at the end) counts nothing twice, bad records are dead
    letters of either worker, and `tokenmeter report` gives the exact totals through the loader and from chDB after
    the stop. (A stack per format before: suite24 took one broker, loader and set of `report` children away, for a
    worker restart; every check of either run is made here, per format where the format matters.)"""
    bootstrap = stack_env["TOKENMETER_KAFKA_BOOTSTRAP"]
    first, second = make_events(150), make_events(150)
    everything = first + second
    duplicates = [(partition_key(first[5]), orjson.dumps(first[:50]))]  # a collector replaying a batch
    bad = [(b"team:search", b"{not json"), (b"team:search", orjson.dumps({"event_id": "x", "model": "gpt-4o"}))]
    data_dir = tmp_path / "data"

    def stored(events: list[dict], what: str) -> None:
        expected = expected_by_team(events)
        try:
            wait_for(lambda: warehouse_totals(data_dir) == expected, 240, what)
        except AssertionError:
            for name in ("worker", "load"):  # say why, not only that it timed out
                print(f"--- {name}.log ---\n" + (tmp_path / f"{name}.log").read_text(errors="replace")[-4000:])
            print("--- report ---", report(stack_env, "--group-by", "team"), "--- expected ---", expected)
            raise

    with service("load", stack_env, tmp_path) as loader:
        with service("worker", dict(stack_env, TOKENMETER_PRICED_FORMAT="json"), tmp_path):
            asyncio.run(produce(bootstrap, _batches(first) + duplicates + bad))
            stored(first, "exact totals of the JSON worker's events in the warehouse while the stack runs")
            assert asyncio.run(priced_formats(bootstrap)) == {None}  # JSON: no format header
        (tmp_path / "worker.log").rename(tmp_path / "worker-json.log")
        with service("worker", dict(stack_env, TOKENMETER_PRICED_FORMAT="arrow"), tmp_path):
            asyncio.run(produce(bootstrap, _batches(second) + duplicates + bad))
            stored(everything, "exact totals of both formats' events in the warehouse while the stack runs")
            expected = expected_by_team(everything)
            rows = report(stack_env, "--group-by", "team")  # through the loader, which owns the chDB
            assert {r["team"]: (r["events"], Decimal(r["cost_usd"])) for r in rows} == expected
            assert asyncio.run(priced_formats(bootstrap)) == {None, b"arrow"}  # the Arrow worker's have the header
            letters = asyncio.run(deadletters(bootstrap, 4))  # the bad records went to each worker
            assert len(letters) == 4
            assert sum("not JSON" in d["reason"] for d in letters) == 2
            assert sum("invalid event" in d["reason"] and "ts" in d["reason"] for d in letters) == 2

            # Redelivery after the fact: the same batch again changes nothing.
            asyncio.run(produce(bootstrap, duplicates))
            rows = report(stack_env, "--group-by", "pricing_status")
            unpriced = [r for r in rows if r["pricing_status"] == "unpriced"]
            assert unpriced and unpriced[0]["events"] == 2  # one unknown model in each format's events
        assert loader.poll() is None

    # The stack is down: report opens chDB directly and sees the same exact numbers.
    rows = report(stack_env, "--group-by", "team")
    assert {r["team"]: (r["events"], Decimal(r["cost_usd"])) for r in rows} == expected
    assert sum(r["events"] for r in rows) == len(everything)
