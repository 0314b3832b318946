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


class TopicTail:
    """A topic read on from where the previous read ended, by one consumer kept between reads (no group): a test
    polling the session broker's alerts or dead-letter topic read every earlier file's records again at each poll
    (~13 CPU-ms empty, ~60 with 5,000 records, suite34) and started a consumer each time. `read()` reads each
    partition to its end as the read starts and returns every record so far; `new` holds the last read's.
    Use it as a context manager (the consumer and its loop are closed at the end)."""

    def __init__(self, bootstrap: str, topic: str, timeout: float = 30.0):
        import asyncio

        self.bootstrap, self.topic, self.timeout = bootstrap, topic, timeout
        self.records: list = []
        self.new: list = []
        self._loop = asyncio.new_event_loop()
        self._consumer = None
        self._partitions: list = []

    def read(self) -> list:
        self.new = []
        try:
            self._loop.run_until_complete(self._read_on())
        finally:  # a read cut short keeps what it consumed: the next one goes on from the consumer's position
            self.records.extend(self.new)
        return self.records

    async def _read_on(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from streams.topic_reader import TopicRecord
        from tokenmeter.kafka_topics import read_to_end, topic_partitions
        from tokenmeter.settings import fetch_wait

        start = None
        if self._consumer is None:
            self._partitions = await topic_partitions(self.bootstrap, self.topic, timeout=self.timeout, wait=False)
            consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
                                        auto_offset_reset="earliest", **fetch_wait())
            await consumer.start()
            self._consumer = consumer
        else:
            start = {tp: await self._consumer.position(tp) for tp in self._partitions}

        def keep(record) -> None:  # noqa: ANN001 - aiokafka's ConsumerRecord
            key = record.key.decode(errors="replace") if record.key is not None else None
            self.new.append(TopicRecord(record.partition, record.offset, key, record.value))

        await read_to_end(self._consumer, self._partitions, keep, timeout=self.timeout, start=start)

    def close(self) -> None:
        try:
            if self._consumer is not None:
                self._loop.run_until_complete(self._consumer.stop())
        finally:
            self._loop.close()

    def __enter__(self) -> "TopicTail":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
