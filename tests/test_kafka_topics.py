"""Partition look-ups of assigned (not subscribed) topics, on the real broker, through public aiokafka API only."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.topic_reader import TopicReadError, read_topic
from tokenmeter.kafka_topics import ReadIncomplete, TopicMissing, partition_map, read_to_end, topic_partitions

ROOT = Path(__file__).resolve().parents[1]


async def _create(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


def test_a_topic_created_after_a_consumer_started_is_found_and_read(kafka_bootstrap):
    """The case a consumer's own metadata misses: it started before the topic existed."""
    name = f"late-{uuid.uuid4().hex[:8]}"

    async def scenario():
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None)
        await consumer.start()
        try:
            waiting = asyncio.create_task(topic_partitions(kafka_bootstrap, name, timeout=20))
            await asyncio.sleep(0)  # the look-up is already polling when the topic appears
            await _create(kafka_bootstrap, name, 3)
            found = await waiting
            assert [(tp.topic, tp.partition) for tp in found] == [(name, 0), (name, 1), (name, 2)]
            assert consumer.partitions_for_topic(name) is None  # the consumer's view is stale: why admin is used
        finally:
            await consumer.stop()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for partition in range(3):
                await producer.send_and_wait(name, b"v%d" % partition, key=b"k", partition=partition)
        finally:
            await producer.stop()
        return await read_topic(kafka_bootstrap, name, timeout=20)

    records = asyncio.run(scenario())
    assert sorted(r.value for r in records) == [b"v0", b"v1", b"v2"]


def test_a_missing_topic_is_named_and_not_created(kafka_bootstrap):
    name = f"absent-{uuid.uuid4().hex[:8]}"

    async def scenario():
        with pytest.raises(TopicMissing, match=f"{name} does not exist.*tokenmeter topics"):
            await topic_partitions(kafka_bootstrap, name, wait=False)
        with pytest.raises(TopicMissing):
            await topic_partitions(kafka_bootstrap, name, timeout=0.5)
        with pytest.raises(TopicReadError, match=name):
            await read_topic(kafka_bootstrap, name, timeout=5)
        return await partition_map(kafka_bootstrap)

    assert name not in asyncio.run(scenario())  # describing must never auto-create the topic


def test_no_stage_reaches_into_aiokafkas_private_client():
    """Partition look-ups went through `consumer._client.fetch_all_metadata()`; public API only now."""
    private = re.compile(r"\b(consumer|producer|self\._consumer|client)\._client\b")
    offenders = [f"{path.relative_to(ROOT)}:{n}" for package in ("tokenmeter", "collectors", "streams", "warehouse",
                                                                  "dashboards", "app", "tests")
                 for path in (ROOT / package).rglob("*.py")
                 # faust_patches.py: the one module allowed private internals of the pinned Faust/aiokafka stack, each
                 # named in its PATCHED_ATTRIBUTES and checked against the versions before the worker starts.
                 if path.name not in ("test_kafka_topics.py", "faust_patches.py")
                 for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not offenders, offenders


async def _produce(bootstrap: str, name: str, per_partition: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, count in per_partition.items():
            for n in range(count):
                await producer.send(name, b"%d-%d" % (partition, n), key=b"k", partition=partition)
        await producer.flush()
    finally:
        await producer.stop()


def test_read_to_end_reads_every_partition_from_its_start_to_its_end(kafka_bootstrap):
    """The one read-to-the-end loop: from given start offsets (or the beginning), an empty partition included."""
    name = f"read-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await _create(kafka_bootstrap, name, 3)
        await _produce(kafka_bootstrap, name, {0: 5, 1: 2})  # partition 2 stays empty
        tps = await topic_partitions(kafka_bootstrap, name)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            whole: list[bytes] = []
            await read_to_end(consumer, tps, lambda r: whole.append(r.value), timeout=20)
            since: list[bytes] = []
            await read_to_end(consumer, tps, lambda r: since.append(r.value), timeout=20,
                              start={tps[0]: 3, tps[1]: 2, tps[2]: 0})
            return sorted(whole), sorted(since)
        finally:
            await consumer.stop()

    whole, since = asyncio.run(scenario())
    assert whole == sorted([b"0-%d" % n for n in range(5)] + [b"1-0", b"1-1"])
    assert since == [b"0-3", b"0-4"]


def test_read_to_end_stops_at_the_end_it_saw_first_while_a_writer_keeps_writing(kafka_bootstrap):
    """A topic written without pause is read to where it ended when the read started, not chased forever."""
    name = f"busy-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await _create(kafka_bootstrap, name, 1)
        await _produce(kafka_bootstrap, name, {0: 50})
        stop = asyncio.Event()

        async def write_on() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=0)
            await producer.start()
            try:
                while not stop.is_set():
                    await producer.send_and_wait(name, b"later", partition=0)
            finally:
                await producer.stop()

        writer = asyncio.create_task(write_on())
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False,
                                    max_partition_fetch_bytes=64)  # one record a fetch: the writer keeps ahead
        await consumer.start()
        try:
            seen: list[int] = []
            await read_to_end(consumer, await topic_partitions(kafka_bootstrap, name), lambda r: seen.append(r.offset),
                              timeout=30)
            return seen
        finally:
            stop.set()
            await writer
            await consumer.stop()

    seen = asyncio.run(scenario())
    assert seen[:50] == list(range(50))


def test_read_to_end_names_the_partitions_it_could_not_finish(kafka_bootstrap):
    name = f"short-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await _create(kafka_bootstrap, name, 2)
        await _produce(kafka_bootstrap, name, {1: 2})
        tps = await topic_partitions(kafka_bootstrap, name)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            with pytest.raises(ReadIncomplete, match=rf"within 1 s: {name}\[1\] at 2 of 10$"):
                await read_to_end(consumer, tps, lambda r: None, timeout=1, end={tps[0]: 0, tps[1]: 10})
        finally:
            await consumer.stop()

    asyncio.run(scenario())
