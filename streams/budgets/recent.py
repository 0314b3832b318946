"""The newest records of one partition, up to its high watermark (the embedded broker under-reports ListOffsets,
so the end is taken from a fetch response, as streams/topic_reader.py does for whole topics)."""

from __future__ import annotations

import time

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.topic_reader import TopicReadError, TopicRecord, read_records


async def high_watermark(bootstrap: str, topic: str, partition: int, timeout: float = 15.0) -> int:
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)  # a start near the end only: the fetch response says where the end is
        deadline = time.monotonic() + timeout
        while consumer.highwater(tp) is None:
            if time.monotonic() > deadline:
                raise TopicReadError(f"{topic}[{partition}]: no fetch response within {timeout:.0f} s")
            await consumer.getmany(tp, timeout_ms=200)
        return consumer.highwater(tp)
    finally:
        await consumer.stop()


async def recent_records(bootstrap: str, topic: str, partition: int, count: int) -> list[TopicRecord]:
    """The last `count` records of a partition (fewer if it holds fewer)."""
    end = await high_watermark(bootstrap, topic, partition)
    return await read_records(bootstrap, topic, partition, max(0, end - count), end)


__all__ = ["high_watermark", "recent_records"]
