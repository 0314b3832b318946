"""`tokenmeter collect kafka`: bridge a gateway's own topic into tokenmeter.usage.

Sources: Kong kafka-log (one entry, or a JSON array per message with max_batch_size > 1), APISIX kafka-logger,
the OpenTelemetry Collector kafka exporter (topic `otlp_spans`, otlp_proto or otlp_json TracesData per record).
Source offsets are committed only after Kafka acknowledged the events and dead letters of that fetch, so a
crash replays (same deterministic event ids) rather than loses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from collectors import AttributionMapping, DialectError, parse_record
from collectors.sink import KafkaSink, SinkUnavailable, log_counters_every
from tokenmeter.events import UsageEvent

log = logging.getLogger("tokenmeter.collect.kafka")


class KafkaBridge:
    def __init__(self, source_bootstrap: str, topic: str, dialect: str | None, group: str, sink: KafkaSink, *,
                 mapping: AttributionMapping | None = None, from_beginning: bool = False,
                 batch_records: int = 1000, exit_when_idle: float | None = None, log_every_s: float = 30.0):
        self.source_bootstrap = source_bootstrap
        self.topic = topic
        self.dialect = dialect
        self.label = dialect or "auto"
        self.group = group
        self.sink = sink
        self.mapping = mapping
        self.from_beginning = from_beginning
        self.batch_records = batch_records
        self.exit_when_idle = exit_when_idle
        self.log_every_s = log_every_s

    async def run(self, stop: asyncio.Event) -> None:
        consumer = AIOKafkaConsumer(
            self.topic, bootstrap_servers=self.source_bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            max_partition_fetch_bytes=4 * 1024 * 1024)
        await consumer.start()
        reporter = asyncio.create_task(log_counters_every(self.sink, stop, self.log_every_s))
        log.info("bridging %s (%s, group %s) -> %s", self.topic, self.label, self.group, self.sink.topic)
        loop = asyncio.get_running_loop()
        last_record = loop.time()
        try:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=self.batch_records)
                if not batch:
                    if not consumer.assignment():
                        last_record = loop.time()  # still joining the group: not idle yet
                    elif self.exit_when_idle is not None and loop.time() - last_record >= self.exit_when_idle:
                        break
                    continue
                last_record = loop.time()
                events, letters = self._convert(batch)
                if not await self._until_acknowledged(stop, events, letters):
                    break  # stopped while Kafka was down: offsets not committed, the batch is read again
                self.sink.counters.count(self.label, "rejected", len(letters))
                await consumer.commit({tp: messages[-1].offset + 1 for tp, messages in batch.items()})
        finally:
            stop.set()
            await reporter
            await consumer.stop()
            await self.sink.stop()

    def _convert(self, batch: dict[TopicPartition, list[Any]]) -> tuple[list[UsageEvent], list[dict[str, Any]]]:
        events: list[UsageEvent] = []
        letters: list[dict[str, Any]] = []
        counters = self.sink.counters
        for tp, messages in batch.items():
            for message in messages:
                counters.count(self.label, "read")
                where = {"topic": tp.topic, "partition": tp.partition, "offset": message.offset,
                         "dialect": self.label}
                if message.value is None:
                    letters.append(self.sink.letter("empty message (tombstone)", None, **where))
                    continue
                try:
                    found = parse_record(message.value, self.dialect, self.mapping)
                except DialectError as exc:
                    letters.append(self.sink.letter(str(exc), _printable(message.value), **where))
                    events.extend(exc.partial)  # the good entries of a partly bad batch still count
                    continue
                if not found:
                    counters.count(self.label, "skipped")
                events.extend(found)
        return events, letters

    async def _until_acknowledged(self, stop: asyncio.Event, events: list[UsageEvent],
                                  letters: list[dict[str, Any]]) -> bool:
        delay, published = 0.5, False
        while True:
            try:
                if not published:
                    await self.sink.publish(events, self.label)
                    published = True
                await self.sink.dead_letter(letters)
                return True
            except SinkUnavailable as exc:
                log.warning("%s; retrying in %.1fs", exc, delay)
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    return False
                except asyncio.TimeoutError:
                    delay = min(delay * 2, 30.0)


def _printable(value: bytes) -> str:
    """Dead-letter payloads are JSON: text stays text, binary (OTLP protobuf) becomes hex."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return "hex:" + value.hex()
