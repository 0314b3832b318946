"""A gateway record reaches tokenmeter.usage through the Kafka bridge without waiting out a fetch (latency11).

The embedded broker answers a waiting fetch only at its deadline, not when data arrives. With aiokafka's default
fetch wait (500 ms) a bridge that had caught up forwarded the next gateway record only when its waiting fetch
expired. The test builds exactly that moment: the bridge's output of one record has just been seen (so its next
fetch is waiting), and one more record is stored on the gateway topic."""

from __future__ import annotations

import asyncio
import time
import uuid

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_support import create_topic

from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink
from tokenmeter import topics
from tokenmeter.settings import Settings


async def _seen(reader: AIOKafkaConsumer, marker: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for records in (await reader.getmany(timeout_ms=200)).values():
            if any(marker.encode() in record.value for record in records):
                return
    raise AssertionError(f"the bridge's output of {marker} did not arrive in {timeout} s")


def test_bridge_forwards_the_next_record_without_waiting_out_its_fetch(kafka_bootstrap, tmp_path, payload):
    topic = f"kong-latency-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap)

    def record(request_id: str) -> bytes:
        entry = payload("kong_openai")
        entry["request"]["id"] = request_id
        return orjson.dumps(entry)

    async def scenario() -> list[float]:
        await create_topic(kafka_bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        # the test's own reader waits 10 ms per fetch: its share of each delay stays small
        reader = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, fetch_max_wait_ms=10)
        await producer.start()
        await reader.start()
        usage = [TopicPartition(topics.USAGE, p) for p in range(settings.partitions)]
        reader.assign(usage)
        await reader.seek_to_end(*usage)
        sink = KafkaSink(kafka_bootstrap, "collect:kafka")
        bridge = KafkaBridge(kafka_bootstrap, topic, "kong", f"bridge-{topic}", sink,
                             from_beginning=True, state_path=tmp_path / "state.json",
                             group_timeouts=settings.group_timeouts)  # no fetch_wait: the environment's settings
        stop = asyncio.Event()
        task = asyncio.create_task(bridge.run(stop))
        try:
            delays = []
            for _ in range(5):
                before = uuid.uuid4().hex
                await producer.send_and_wait(topic, record(before))
                await _seen(reader, before)  # caught up: the bridge's next fetch now waits
                last = uuid.uuid4().hex
                stored = time.monotonic()
                await producer.send_and_wait(topic, record(last))
                await _seen(reader, last)
                delays.append(time.monotonic() - stored)
            return delays
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
            await reader.stop()
            await producer.stop()

    delays = asyncio.run(scenario())
    # measured at load 20-24 on 2 cores: with aiokafka's 500 ms fetch wait 0.24-0.29 s each (the broker answered
    # the waiting fetch ~0.25 s after it was sent); with the 100 ms default 0.049-0.055 s
    assert sorted(delays)[2] < 0.15, delays
