"""Kafka set-up shared by tests in every stage: a fresh topic with some records in it, on the real broker.
(Reading a topic to its end is product code: `streams.topic_reader.read_topic`.)"""

from __future__ import annotations

import os

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

# The run's consumer-group session timeout (tests/conftest.py sets 4 s), for a test's own group member: the embedded
# broker answers a new group's first JoinGroup after half the session timeout, 5 s at aiokafka's default 10 s.
SESSION_TIMEOUT_MS = int(float(os.environ.get("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", "10")) * 1000)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce_values(bootstrap: str, topic: str, values: list[bytes], partition: int | None = None,
                         keyed: bool = False) -> None:
    """Send each value and wait for its ack, in order; `keyed` keys value i with str(i), spreading them over
    partitions the way a keyed gateway topic is."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, key=str(i).encode() if keyed else None, partition=partition)
    finally:
        await producer.stop()
