"""Reading topics outside a consumer group: a whole topic to its end, a compacted topic's latest value per key,
one partition's offset range, or following a compacted topic live (budgets, enforcement decisions, delivery
state, budget state: every process needs every partition of these, whatever group partitions it owns).

Every function takes `fetch_wait`, the caller's `Settings.fetch_wait` (the one settings object of the process, so
a YAML file's `fetch_max_wait_ms` reaches these consumers too); without it, the environment's settings (tools, tests).

"The end" is each partition's high watermark as the first fetch response reports it, never `end_offsets()` (the
embedded broker under-reports it); the loop is `tokenmeter.kafka_topics.read_to_end`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from tokenmeter import kafka_refused
from tokenmeter.kafka_topics import ReadIncomplete, TopicMissing, partitions_behind, read_to_end, topic_partitions
from tokenmeter.settings import fetch_wait as settings_fetch_wait

__all__ = ["TopicReadError", "TopicRecord", "TopicMissing", "topic_partitions", "read_topic", "read_compacted",
           "follow_compacted", "read_records"]


class TopicReadError(Exception):
    """A topic could not be read to its end; the message says which and why."""


@dataclass(frozen=True)
class TopicRecord:
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    headers: tuple = ()  # (key, value) pairs: tokenmeter.priced names its format there (tokenmeter.priced_wire)


def _topic_record(record) -> TopicRecord:  # noqa: ANN001 - aiokafka's ConsumerRecord
    key = record.key.decode(errors="replace") if record.key is not None else None  # keys are ours: UTF-8 text
    return TopicRecord(record.partition, record.offset, key, record.value, tuple(getattr(record, "headers", ()) or ()))


async def read_topic(bootstrap: str, topic: str, timeout: float = 30.0, *,
                     fetch_wait: Mapping[str, int] | None = None) -> list[TopicRecord]:
    """Every record of `topic` from the beginning to its end as the read starts, partition by partition."""
    try:
        tps = await topic_partitions(bootstrap, topic, timeout=timeout, wait=False)
    except TopicMissing as exc:
        raise TopicReadError(str(exc)) from None
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", request_timeout_ms=int(timeout * 1000),
                                **(fetch_wait or settings_fetch_wait()))
    await consumer.start()
    out: list[TopicRecord] = []
    try:
        await read_to_end(consumer, tps, lambda record: out.append(_topic_record(record)), timeout=timeout)
    except ReadIncomplete as exc:
        raise TopicReadError(f"{topic} on {bootstrap}: {exc}") from None
    finally:
        await consumer.stop()
    return out


log = logging.getLogger("tokenmeter.topics")

Records = dict[str, bytes | None]  # key -> latest value (None = tombstone)


async def read_compacted(bootstrap: str, topic: str, timeout: float = 30.0, *,
                         fetch_wait: Mapping[str, int] | None = None) -> Records:
    """Every key's latest value in a compacted topic, read to its end (None = tombstone)."""
    out: Records = {}
    # one key lives in one partition: order holds
    for record in await read_topic(bootstrap, topic, timeout, fetch_wait=fetch_wait):
        if record.key is not None:
            out[record.key] = record.value
    return out


async def follow_compacted(bootstrap: str, topic: str, on_change: Callable[[Records, bool], Awaitable[None] | None],
                           stop: asyncio.Event | None = None, ready: asyncio.Event | None = None, *,
                           fetch_wait: Mapping[str, int] | None = None) -> None:
    """Read `topic` from the beginning and keep following it. `on_change(changed, caught_up)` gets each round's
    changed keys; `ready` is set once the end was reached the first time. Survives broker hiccups."""
    stop = stop or asyncio.Event()
    while not stop.is_set():
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                    auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
        try:
            await consumer.start()
            tps = await topic_partitions(bootstrap, topic, timeout=30.0)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            caught_up, ends = False, {}
            while not stop.is_set():
                changed: Records = {}
                for records in (await consumer.getmany(*tps, timeout_ms=500)).values():
                    for record in records:
                        if record.key is not None:
                            changed[record.key.decode()] = record.value
                        elif kafka_refused.refusal(record) is not None:  # a refused batch: said, read past
                            kafka_refused.letter_fields(record)
                at_end = caught_up or not await partitions_behind(consumer, tps, ends)
                if changed or (at_end and not caught_up):
                    caught_up = caught_up or at_end
                    result = on_change(changed, caught_up)
                    if asyncio.iscoroutine(result):
                        await result
                if caught_up and ready is not None and not ready.is_set():
                    ready.set()
        except (KafkaError, OSError) as exc:
            log.warning("following %s failed (%r); retrying in 1 s", topic, exc)
            await asyncio.sleep(1.0)
        finally:
            await consumer.stop()


async def read_records(bootstrap: str, topic: str, partition: int, start: int, end: int,
                       timeout: float = 15.0, *, fetch_wait: Mapping[str, int] | None = None) -> list[TopicRecord]:
    """The records at offsets [start, end) of one partition (fewer if some were deleted or are control records)."""
    if end <= start:
        return []
    tp = TopicPartition(topic, partition)

    def keep(record) -> None:  # noqa: ANN001 - aiokafka's ConsumerRecord
        if record.offset < end:
            out.append(_topic_record(record))

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                                auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
    await consumer.start()
    out: list[TopicRecord] = []
    try:
        await read_to_end(consumer, [tp], keep, timeout=timeout, start={tp: start}, end={tp: end})
    finally:
        await consumer.stop()
    return out
