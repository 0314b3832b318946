"""Kafka set-up shared by tests in every stage: a fresh topic with some records in it, on the real broker.
(Reading a topic to its end is product code: `streams.topic_reader.read_topic`.)"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

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


@contextmanager
def schema_checked_broker(schemas: Path, partitions: int = 4) -> Iterator[str]:
    """An embedded broker (tansu) with tokenmeter's topics that validates every produced record against the JSON
    schema `schemas/<topic>.json` when that file exists (re-read at each produce: writing or deleting it takes
    effect at once). A test makes the broker itself refuse a topic's records (InvalidRecord) for a while, a real
    produce failure. tansu resolves a file:// registry against its working directory only, hence the chdir."""
    import pytest

    from app.broker import embedded_broker
    from tokenmeter.settings import free_port

    schemas.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # the broker's start only: its children inherit neither
            env.chdir(schemas.parent)
            env.setenv("SCHEMA_REGISTRY", f"file://./{schemas.name}")
            bootstrap = stack.enter_context(embedded_broker("127.0.0.1", free_port(), partitions=partitions,
                                                            log_path=str(schemas.parent / "broker.log")))
        yield bootstrap
