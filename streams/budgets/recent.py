"""The newest records of one partition, up to its high watermark (the embedded broker under-reports ListOffsets,
so the end is taken from a fetch response, as streams/topic_reader.py does for whole topics): the last N records,
or every record written since a moment (read backwards in chunks until the records are older than it).
`fetch_wait` is the caller's `Settings.fetch_wait`; without it, the environment's settings (tools, tests)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.topic_reader import TopicReadError, TopicRecord, read_records
from tokenmeter.kafka_topics import ReadIncomplete, read_to_end
from tokenmeter.settings import fetch_wait as settings_fetch_wait

log = logging.getLogger("tokenmeter.budgets")
CHUNK = 5000  # records per backward step
MOST = 1_000_000  # never more than this per read: a restore must end (logged when reached)


async def high_watermark(bootstrap: str, topic: str, partition: int, timeout: float = 15.0, *,
                         fetch_wait: Mapping[str, int] | None = None) -> int:
    tp = TopicPartition(topic, partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
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


async def recent_records(bootstrap: str, topic: str, partition: int, count: int, *,
                         fetch_wait: Mapping[str, int] | None = None) -> list[TopicRecord]:
    """The last `count` records of a partition (fewer if it holds fewer)."""
    end = await high_watermark(bootstrap, topic, partition, fetch_wait=fetch_wait)
    return await read_records(bootstrap, topic, partition, max(0, end - count), end, fetch_wait=fetch_wait)


async def records_since(bootstrap: str, topic: str, partition: int, since: datetime, end: int | None = None,
                        at_least: int = 0, timeout: float = 30.0, *,
                        fetch_wait: Mapping[str, int] | None = None) -> list[TopicRecord]:
    """The records of a partition before `end` (default: its high watermark), in offset order, back to (at least)
    the first whose timestamp (the producer's clock) is before `since`, and at least the last `at_least` records.
    Read backwards CHUNK records at a time, so a busy partition costs what the span holds, not the whole
    partition."""
    since_ms = since.timestamp() * 1000
    end = await high_watermark(bootstrap, topic, partition, fetch_wait=fetch_wait) if end is None else end
    if end <= 0:  # nothing to read; and stopping a never-assigned consumer raises CancelledError
        return []
    tp = TopicPartition(topic, partition)
    chunks: list[list[TopicRecord]] = []
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
    await consumer.start()
    try:
        position, oldest = end, None
        while position > 0:
            start = max(0, position - CHUNK)
            chunk: list[TopicRecord] = []

            def keep(record, stop: int = position, into: list = chunk) -> None:  # noqa: ANN001 - ConsumerRecord
                nonlocal oldest
                if record.offset < stop:
                    into.append(_record(record))
                    oldest = record.timestamp if oldest is None else min(oldest, record.timestamp)

            try:
                await read_to_end(consumer, [tp], keep, timeout=timeout, start={tp: start}, end={tp: position})
            except ReadIncomplete as exc:
                raise TopicReadError(str(exc)) from exc
            chunks.append(chunk)
            position = start
            if end - position >= at_least and oldest is not None and oldest < since_ms:
                break
            if end - position >= MOST:
                log.warning("%s[%d]: read back %d records without reaching %s; stopped there", topic, partition,
                            end - position, since.isoformat())
                break
    finally:
        await consumer.stop()
    return [record for chunk in reversed(chunks) for record in chunk]


def _record(record) -> TopicRecord:  # noqa: ANN001 - aiokafka's ConsumerRecord
    key = record.key.decode(errors="replace") if record.key is not None else None
    return TopicRecord(record.partition, record.offset, key, record.value)


__all__ = ["high_watermark", "recent_records", "records_since"]
