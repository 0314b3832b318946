"""The bench's reader of the worker's output sees a record as soon as the broker stores it (worker11).

The embedded broker does not answer a waiting fetch when data arrives. With aiokafka's default fetch wait (500 ms)
the bench's reader, having caught up with the worker's output, sent a fetch that held the worker's last outputs
~0.25 s: `tokenmeter bench`'s (c) stopped 0.2-0.25 s after the worker had finished in about half of the runs (its two
modes, docs/rounds/benchmarks.md). The test builds exactly that moment: the reader has just read everything (so its next
fetch is waiting), and one more record is stored."""

import asyncio
import time
import uuid

from aiokafka import AIOKafkaProducer, TopicPartition

from app.bench_worker import priced_reader
from kafka_support import create_topic


async def _seen(reader, tp: TopicPartition, value: bytes, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = await reader.getmany(tp, timeout_ms=1000)
        if any(m.value == value for m in batch.get(tp, ())):
            return
    raise AssertionError(f"reader did not see {value!r} in {timeout} s")


def test_reader_sees_the_last_output_without_waiting_out_its_fetch(kafka_bootstrap):
    topic = f"test.bench-reader.{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[float]:
        await create_topic(kafka_bootstrap, topic, 1)
        tp = TopicPartition(topic, 0)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        reader = priced_reader(kafka_bootstrap)
        await producer.start()
        await reader.start()
        try:
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            delays = []
            for i in range(3):
                await producer.send_and_wait(topic, f"before-{i}".encode(), partition=0)
                await _seen(reader, tp, f"before-{i}".encode())  # caught up: the reader's next fetch now waits
                stored = time.monotonic()
                await producer.send_and_wait(topic, f"last-{i}".encode(), partition=0)
                await _seen(reader, tp, f"last-{i}".encode())
                delays.append(time.monotonic() - stored)
            return delays
        finally:
            await reader.stop()
            await producer.stop()

    delays = asyncio.run(scenario())
    # with aiokafka's 500 ms fetch wait: 0.252-0.265 s each (measured); with the bench's 10 ms a few tens of ms
    assert sorted(delays)[1] < 0.25, delays
