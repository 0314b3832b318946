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
from tokenmeter.kafka_topics import TopicMissing, partition_map, topic_partitions

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
                 for path in (ROOT / package).rglob("*.py") if path.name != "test_kafka_topics.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if private.search(line)]
    assert not offenders, offenders
