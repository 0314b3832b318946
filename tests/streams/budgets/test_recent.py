"""Reading a budget-spend partition back by time (streams/budgets/recent.py), on the real broker: the restore of
hold owners reads back to the oldest open hold's admission, not a fixed count of messages (issue 15)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta, timezone

from aiokafka import AIOKafkaProducer

from kafka_support import create_topic
from streams.budgets import recent
from streams.budgets.recent import records_since


async def _produce(bootstrap: str, topic: str, stamps_ms: list[int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = [await producer.send(topic, b"%d" % i, key=b"k", partition=0, timestamp_ms=stamp)
                 for i, stamp in enumerate(stamps_ms)]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


def test_an_empty_partition_is_read_at_once(kafka_bootstrap):
    """A budget whose partition has no spend yet (a new owner right after a rebalance): the read returns nothing.
    Stopping a consumer that was never assigned raises CancelledError from aiokafka's coordinator, which ended the
    owner's restore task: the rebalance test's new owner never got ready (test_reservations_rebalance.py)."""
    topic = f"recent-empty-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 1))
    since = datetime.now(timezone.utc) - timedelta(minutes=5)
    assert asyncio.run(asyncio.wait_for(records_since(kafka_bootstrap, topic, 0, since), 30)) == []


def test_reads_back_by_time_in_chunks_and_stops_at_older_records(kafka_bootstrap, monkeypatch):
    monkeypatch.setattr(recent, "CHUNK", 4)
    topic = f"recent-time-{uuid.uuid4().hex[:6]}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 1))
    now_ms = int(time.time() * 1000)
    old, new = [now_ms - 3_600_000] * 10, [now_ms - 1000] * 9  # 10 records an hour old, then 9 of the last second
    asyncio.run(_produce(kafka_bootstrap, topic, old + new))
    since = datetime.now(timezone.utc) - timedelta(minutes=1)
    got = asyncio.run(records_since(kafka_bootstrap, topic, 0, since))
    offsets = [r.offset for r in got]
    # every record since the moment (offsets 10-18), read in chunks of 4 back to the first older one, no further
    assert offsets == list(range(7, 19)), offsets  # chunks [15, 19), [11, 15), [7, 11): offsets 7-9 are older
    # at_least: the duplicate window's count whatever the time
    assert [r.offset for r in asyncio.run(records_since(kafka_bootstrap, topic, 0, since, at_least=17))][0] <= 2
    # an end before the high watermark (a batch's first offset)
    assert [r.offset for r in asyncio.run(records_since(kafka_bootstrap, topic, 0, since, end=12))] == [8, 9, 10, 11]
