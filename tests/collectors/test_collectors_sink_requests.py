"""The sink's publish goes out in few produce requests: aiokafka keeps one request in flight per broker and one
record batch per partition in each, so with its default 16 KB batches every micro-batch message (up to 900 KB)
was a batch of its own and a publish of n messages to one partition took n round trips."""

from __future__ import annotations

import asyncio
import uuid

from aiokafka.producer.sender import Sender
from kafka_support import create_topic

from collectors.sink import KafkaSink


def test_a_publish_to_one_partition_takes_few_produce_requests(kafka_bootstrap):
    topic = f"sink-requests-{uuid.uuid4().hex[:8]}"
    messages = [(b"team-a", b"[" + b"x" * 60_000 + b"]") for _ in range(12)]  # one key: one partition

    async def run() -> int:
        await create_topic(kafka_bootstrap, topic, partitions=1)
        sink = KafkaSink(kafka_bootstrap, "collect:kafka", topic=topic)
        try:
            producer = await sink._ensure_producer()  # noqa: SLF001
            sender: Sender = producer._sender  # noqa: SLF001
            sent = sender._send_produce_req  # noqa: SLF001
            requests = 0

            async def counted(node_id, batches):  # noqa: ANN001 - observes the real request, sends it as is
                nonlocal requests
                requests += 1
                return await sent(node_id, batches)

            sender._send_produce_req = counted  # noqa: SLF001
            await sink._send_all(topic, messages)  # noqa: SLF001
            assert sink.acked_end(topic, 0) >= 12
            return requests
        finally:
            await sink.stop()

    assert asyncio.run(run()) <= 2
