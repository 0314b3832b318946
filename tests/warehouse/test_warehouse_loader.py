"""Loader end to end on the real broker and the shared chDB warehouse: redelivery, dead letters, restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tokenmeter import topics
from tokenmeter.settings import Settings
from warehouse import open_warehouse, run_loader
from warehouse.endpoint import read_live_endpoint

pytestmark = pytest.mark.slow(seconds=17)  # rough seconds: longest files first (tests/suite_order.py)

REPO = Path(__file__).resolve().parents[2]

WAIT_SECONDS = 60


async def _produce(bootstrap: str, values: list[Any], partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for value in values:
            payload = value if isinstance(value, bytes) else orjson.dumps(value)
            await producer.send_and_wait(topics.PRICED, payload, partition=partition)
    finally:
        await producer.stop()


async def _drain_to_sentinels(bootstrap: str, wh, org: str, make_event, tag: str) -> None:
    """One sentinel event per partition, produced after the data: once all are stored, every earlier
    record of every partition has been loaded (per-partition order)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topics.PRICED))
        for p in partitions:
            sentinel = make_event(f"{org}-sentinel-{tag}-{p}", org, team="sentinel", cost="0")
            await producer.send_and_wait(topics.PRICED, orjson.dumps(sentinel), partition=p)
    finally:
        await producer.stop()
    deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
    while True:
        ids = await asyncio.to_thread(
            wh.query, "SELECT count() AS n FROM priced_events WHERE org = {o:String} AND event_id LIKE {p:String}",
            {"o": org, "p": f"{org}-sentinel-{tag}-%"})
        if ids["n"][0] == len(partitions):
            return
        assert asyncio.get_running_loop().time() < deadline, "loader did not catch up"
        await asyncio.sleep(0.1)


async def _run_until_drained(settings, wh, org, make_event, tag: str, produce) -> Any:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_loader(settings, stop=stop, ready=ready.set))
    try:
        await asyncio.wait_for(ready.wait(), WAIT_SECONDS)
        await produce()
        await _drain_to_sentinels(settings.bootstrap_servers, wh, org, make_event, tag)
    finally:
        stop.set()
        stats = await asyncio.wait_for(task, WAIT_SECONDS)
    return stats


async def _dead_letters(bootstrap: str, marker: str) -> list[dict[str, Any]]:
    consumer = AIOKafkaConsumer(topics.DEADLETTER, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    found = []
    try:
        deadline = asyncio.get_running_loop().time() + WAIT_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if marker in record.value.decode("utf-8", "replace"):
                        found.append(orjson.loads(record.value))
            if len(found) >= 2 and not batch:
                break
    finally:
        await consumer.stop()
    return found


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """This file produces hostile records to tokenmeter's topics: they stay on a broker of its own."""
    return own_broker


@pytest.fixture
def loader_settings(warehouse_settings, kafka_bootstrap):
    return warehouse_settings.model_copy(update={"kafka_bootstrap": kafka_bootstrap})


def test_loader_end_to_end_exact_totals_dead_letters_and_restart(loader_settings, wh, org, make_event):
    bootstrap = loader_settings.bootstrap_servers
    first = [make_event(f"{org}-{i}", org, team=f"t{i % 3}", cost=f"0.{i + 1:012d}") for i in range(300)]
    later = [make_event(f"{org}-{i}", org, team=f"t{i % 3}", cost=f"0.{i + 1:012d}") for i in range(300, 450)]
    bad_event = make_event(f"{org}-bad", org)
    bad_event["usage"]["output_tokens"] = "lots"

    async def produce_first():
        batches = [first[i:i + 50] for i in range(0, len(first), 50)]
        await _produce(bootstrap, batches)  # JSON arrays, as the worker sends them
        await _produce(bootstrap, batches[:2] + [first[7], first[99]])  # redelivery, and single objects
        await _produce(bootstrap, [f"{{not json {org}".encode(), [first[0], bad_event]])

    async def produce_later():
        await _produce(bootstrap, [later[:100], later[100:], first[250:]])  # new events + redelivered old ones

    async def scenario():
        stats1 = await _run_until_drained(loader_settings, wh, org, make_event, "a", produce_first)
        # Restart: the loader stopped cleanly; events and redeliveries arrive while it is down.
        await produce_later()
        stats2 = await _run_until_drained(loader_settings, wh, org, make_event, "b", lambda: asyncio.sleep(0))
        letters = await _dead_letters(bootstrap, org)
        return stats1, stats2, letters

    stats1, stats2, letters = asyncio.run(scenario())

    everything = first + later
    totals = wh.spend(["team"], filters={"org": [org], "team": ["t0", "t1", "t2"]})
    assert totals["events"].sum() == len(everything)
    assert totals["cost_usd"].sum() == sum(Decimal(e["cost_usd"]) for e in everything)
    assert totals["input_tokens"].sum() == 100 * len(everything)
    assert stats1.duplicates_skipped >= 100 and stats2.duplicates_skipped >= 50
    assert stats1.dead_letters >= 2

    reasons = {letter["reason"] for letter in letters}
    assert any(r.startswith("invalid JSON") for r in reasons)
    assert any("usage.output_tokens" in r for r in reasons)
    for letter in letters:
        assert letter["stage"] == "load" and letter["topic"] == topics.PRICED
        assert letter["partition"] >= 0 and letter["offset"] >= 0
    bad = next(letter for letter in letters if "usage.output_tokens" in letter["reason"])
    assert bad["payload"]["event_id"] == f"{org}-bad"


def test_loader_counts_a_re_sent_id_once_and_dead_letters_far_dated_and_absurd_events(loader_settings, wh, org,
                                                                                        make_event):
    """Issue 11 items 1, 2 and 5 through the loader: an id re-sent the next day is counted once; a message whose
    events span 2027..2035 no longer blocks every insert (its far-future events are dead letters with the reason,
    the valid one lands); ts 9999 (was: dropped from raw by the TTL, kept in the rollups) and 1970 (was: skipped
    with a log line) are dead letters; input_tokens 2^64-1 (was: summed with wrap-around) is a dead letter."""
    bootstrap = loader_settings.bootstrap_servers
    first = make_event(f"{org}-a", org, ts="2025-06-01T10:00:00Z", cost="0.000002000000")
    resent = make_event(f"{org}-a", org, ts="2025-06-02T10:00:00Z", cost="0.000002000000")
    spanning = [make_event(f"{org}-span-{y}", org, ts=f"{y}-05-01T00:00:00Z") for y in range(2027, 2036)]
    spanning.append(make_event(f"{org}-b", org, ts="2025-06-03T10:00:00Z", cost="0.000003000000"))
    far = [make_event(f"{org}-9999", org, ts="9999-12-31T00:00:00Z"),
           make_event(f"{org}-1970", org, ts="1970-01-01T00:00:00Z")]
    huge = make_event(f"{org}-huge", org, input_tokens=2**64 - 1)
    huge["usage"]["cached_input_tokens"] = 0
    more = make_event(f"{org}-c", org, input_tokens=1000)

    async def produce():
        await _produce(bootstrap, [first])
        await _produce(bootstrap, [resent])  # the same id, another day
        await _produce(bootstrap, [spanning, far, [huge, more]])

    async def scenario():
        stats = await _run_until_drained(loader_settings, wh, org, make_event, "far", produce)
        return stats, await _dead_letters(bootstrap, org)

    stats, letters = asyncio.run(scenario())
    totals = wh.spend([], filters={"org": [org], "team": ["search"]})
    assert totals["events"].to_list() == [3]  # a, b, c
    assert totals["cost_usd"].to_list() == [Decimal("0.000002") + Decimal("0.000003") + Decimal("0.000123")]
    assert totals["input_tokens"].to_list() == [200 + 1000]
    rolled = wh.query("SELECT toInt64(sum(events)) AS n FROM spend_daily WHERE org = {o:String} AND team = 'search'",
                      {"o": org})
    assert rolled["n"].to_list() == [3]  # the rollups agree with the raw table
    by_id = {letter["payload"]["event_id"]: letter["reason"] for letter in letters
             if isinstance(letter.get("payload"), dict)}
    assert all("future" in by_id[f"{org}-span-{y}"] for y in range(2027, 2036))
    assert "future" in by_id[f"{org}-9999"] and "before 2020-01-01" in by_id[f"{org}-1970"]
    assert "usage.input_tokens" in by_id[f"{org}-huge"]
    assert stats.dead_letters >= 11 and stats.duplicates_skipped >= 1


def test_loader_process_owns_serves_and_stops_on_sigterm(tmp_path, kafka_bootstrap, make_event):
    """`python -m warehouse.loader` in its own process (its own chDB path): readers go through its endpoint,
    SIGTERM stops it cleanly and removes the endpoint file. Runs after the test above: same consumer group."""
    org = "sigterm-org"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENMETER_DATA_DIR=str(tmp_path),
               TOKENMETER_KAFKA_BOOTSTRAP=kafka_bootstrap, TOKENMETER_LOAD_FLUSH_SECONDS="0.2",
               TOKENMETER_RAW_RETENTION_DAYS="3650")  # make_event's 2025 dates are older than the default
    process = subprocess.Popen([sys.executable, "-m", "warehouse.loader"], env=env, stderr=subprocess.PIPE)
    endpoint = tmp_path / "warehouse.endpoint"
    try:
        deadline = time.monotonic() + WAIT_SECONDS
        while read_live_endpoint(tmp_path) is None:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "loader never advertised its endpoint"
            time.sleep(0.05)
        asyncio.run(_produce(kafka_bootstrap, [[make_event(f"{org}-{i}", org, cost="0.25") for i in range(20)]]))
        with open_warehouse(Settings(data_dir=tmp_path)) as reader:
            assert reader.kind == "remote"
            while reader.spend([], filters={"org": [org]})["events"][0] < 20:
                assert time.monotonic() < deadline, "loader did not load"
                time.sleep(0.1)
            assert reader.spend([], filters={"org": [org]})["cost_usd"].to_list() == [Decimal("5")]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=WAIT_SECONDS) == 0
        assert not endpoint.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_loader_dead_letters_a_refused_compressed_batch_and_reads_on_exactly(loader_settings, wh, org, make_event):
    """A gzip batch over the inflation bound between two good ones (inflate28, tokenmeter/kafka_refused.py): the
    loader stays up, stores the good events once, sends one dead letter for the batch (no payload) and counts it,
    and commits past it only then: a restart neither reads nor dead-letters it again. Before: InflateRefused
    stopped the loader on it, and every restart again. Last in this file: the loaders above share its group."""
    bootstrap = loader_settings.bootstrap_servers
    events = [make_event(f"{org}-{i}", org, cost=f"0.{i + 1:012d}") for i in range(6)]

    async def send(values: list[bytes], codec: str | None) -> list[int]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50,
                                    max_request_size=32 << 20, max_batch_size=32 << 20)
        await producer.start()
        try:  # one record batch
            sent = await asyncio.gather(*[await producer.send(topics.PRICED, v, partition=0) for v in values])
            return [meta.offset for meta in sent]
        finally:
            await producer.stop()

    bomb_at: list[int] = []

    async def produce():
        await send([orjson.dumps(events[:2]), orjson.dumps(events[2:4])], "gzip")
        bomb_at.extend(await send([bytes(4 << 20)], "gzip"))  # 4 MiB of zeros in ~4 KB: ~1,000x
        await send([orjson.dumps(events[4:])], None)

    async def scenario():
        stats1 = await _run_until_drained(loader_settings, wh, org, make_event, "refused-a", produce)
        stats2 = await _run_until_drained(loader_settings, wh, org, make_event, "refused-b", lambda: asyncio.sleep(0))
        return stats1, stats2

    stats1, stats2 = asyncio.run(scenario())
    totals = wh.spend([], filters={"org": [org], "team": ["search"]})
    assert totals["events"].to_list() == [6]
    assert totals["cost_usd"].to_list() == [sum(Decimal(e["cost_usd"]) for e in events)]
    assert (stats1.refused_batches, stats1.dead_letters) == (1, 1)
    assert (stats2.refused_batches, stats2.dead_letters) == (0, 0)
    from streams.topic_reader import read_topic

    letters = [orjson.loads(r.value) for r in asyncio.run(read_topic(bootstrap, topics.DEADLETTER))]
    [letter] = [x for x in letters if x.get("topic") == topics.PRICED and "record batch refused" in x["reason"]]
    assert (letter["partition"], letter["offset"], letter["first_offset"], letter["last_offset"]) == \
        (0, bomb_at[0], bomb_at[0], bomb_at[0])
    assert letter["stage"] == "load" and letter["codec"] == "gzip" and letter["payload_bytes"] == 0
