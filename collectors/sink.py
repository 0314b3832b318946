"""The Kafka writer every collector mode shares: canonical events as keyed micro-batches, plus dead letters.

A message value is a JSON array of canonical events sharing one partition key (`partition_key`), at most
`MAX_EVENTS_PER_MESSAGE` events and about `MAX_MESSAGE_BYTES` each: the worker's cost is per message, not per
event. `publish` and `dead_letter` return only after the broker acknowledged every message, so a caller may
then commit its own progress (HTTP 202, a file checkpoint, source offsets). Any failure to get that
acknowledgement raises `SinkUnavailable`; nothing is then known to be written and the caller must retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from aiokafka import AIOKafkaProducer

from collectors.batch import collection_paused
from collectors.encoded import EncodedEvent
from tokenmeter import deadletters, microbatch, topics
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, MAX_MESSAGE_BYTES  # noqa: F401 - documented here
from tokenmeter.events import UsageEvent, partition_key

log = logging.getLogger("tokenmeter.collect")

# Under Kafka's default 1 MB message.max.bytes and every consumer's default 1 MB partition fetch, as a lone
# 900 KB micro-batch message already is.
PRODUCE_BATCH_BYTES = 1_000_000



class SinkUnavailable(Exception):
    """The broker did not acknowledge (down, unreachable, timed out): retry later."""


@dataclass
class Counters:
    read: int = 0  # records read from the source (lines, array entries, Kafka records)
    written: int = 0  # canonical events acknowledged on the usage topic
    rejected: int = 0  # records that could not become events (dead-lettered or refused)
    skipped: int = 0  # records holding no LLM call (non-AI routes, non-GenAI spans)
    refused_batches: int = 0  # Kafka batches over the inflation bound, one dead letter each (tokenmeter/kafka_refused.py)
    by_dialect: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))

    def count(self, dialect: str, what: str, n: int = 1) -> None:
        setattr(self, what, getattr(self, what) + n)
        self.by_dialect[dialect][what] += n

    def summary(self) -> str:
        refused = f" refused_batches={self.refused_batches}" if self.refused_batches else ""
        return f"read={self.read} written={self.written} rejected={self.rejected} skipped={self.skipped}{refused}"


def dead_letter_record(reason: str, payload: Any, stage: str, **context: Any) -> dict[str, Any]:
    """The shared dead-letter shape (tokenmeter.deadletters): always fits a Kafka message."""
    return deadletters.dead_letter(reason, payload, stage, **context)


def encode_batches(events: Iterable[UsageEvent | EncodedEvent]) -> list[tuple[bytes, bytes]]:
    """(key, value) messages: events grouped by partition key, chunked by count and size, order kept. The batch
    form's events arrive already written (`EncodedEvent`); models are written here."""
    groups: dict[bytes, list[bytes]] = defaultdict(list)
    with collection_paused():
        for event in events:
            if type(event) is EncodedEvent:
                groups[event.key].append(event.json)
                continue
            # pydantic-core writes the same bytes as orjson.dumps(model_dump(mode="json")) in one step, ~2x faster
            groups[partition_key(event)].append(event.model_dump_json(exclude_none=True).encode())
    return [(key, value) for key, encoded in groups.items() for value in microbatch.frame(encoded)]


class KafkaSink:
    """Lazily connected producer; a failed connection is retried on the next send (the broker may come back)."""

    def __init__(self, bootstrap_servers: str, stage: str, *, topic: str = topics.USAGE,
                 deadletter_topic: str = topics.DEADLETTER, timeout_s: float = 10.0):
        self.bootstrap_servers = bootstrap_servers
        self.stage = stage
        self.topic = topic
        self.deadletter_topic = deadletter_topic
        self.timeout_s = timeout_s
        self.counters = Counters()
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._acked_ends: dict[tuple[str, int], int] = {}  # (topic, partition) -> just past our last ack

    def acked_end(self, topic: str, partition: int) -> int:
        """The offset after our last acknowledged message there (0 if none): a lower bound of the log end."""
        return self._acked_ends.get((topic, partition), 0)

    async def start(self) -> bool:
        """Connect now; False (logged) when the broker is unreachable, sends will retry."""
        try:
            await self._ensure_producer()
            return True
        except SinkUnavailable as exc:
            log.warning("%s: broker %s not reachable yet: %s", self.stage, self.bootstrap_servers, exc)
            return False

    async def readiness(self, timeout_s: float = 3.0) -> str | None:
        """None when Kafka answers a metadata request now and has our topic; else why not (a readiness probe's
        answer). Asks the broker each time: the producer's cached metadata would say ready after it died."""
        try:
            producer = await asyncio.wait_for(self._ensure_producer(), timeout_s)
            updated = await asyncio.wait_for(producer.client.force_metadata_update(), timeout_s)
        except SinkUnavailable as exc:
            return str(exc)
        except asyncio.TimeoutError:
            return f"Kafka at {self.bootstrap_servers} did not answer within {timeout_s:g} s"
        if not updated:
            return f"Kafka at {self.bootstrap_servers} did not answer a metadata request"
        if not producer.client.cluster.partitions_for_topic(self.topic):
            return f"Kafka at {self.bootstrap_servers} has no topic {self.topic} (tokenmeter topics creates it)"
        return None

    async def _ensure_producer(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is not None:
                return self._producer
            # linger 0: a publish hands all its messages to the producer before it yields, then awaits their
            # acknowledgement; a linger would only add its wait to every batch (5 ms per bridge fetch).
            # Record batches of up to PRODUCE_BATCH_BYTES: aiokafka sends one request at a time per broker with
            # one batch per partition in it, so with its 16 KB default each message was a batch of its own and a
            # publish of n messages to a partition waited for n round trips (docs/rounds/collectors.md, coll24).
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap_servers, acks="all", linger_ms=0,
                max_request_size=1_048_576, max_batch_size=PRODUCE_BATCH_BYTES,
                request_timeout_ms=int(self.timeout_s * 1000),
            )
            try:
                await asyncio.wait_for(producer.start(), self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any start failure means "broker unavailable"
                await _quiet_stop(producer)
                raise SinkUnavailable(f"cannot connect to Kafka at {self.bootstrap_servers}: {exc!r}") from None
            self._producer = producer
            return producer

    async def _send_all(self, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
        if not messages:
            return
        producer = await self._ensure_producer()
        try:
            futures = [await producer.send(topic, value, key=key) for key, value in messages]
            acks = await asyncio.wait_for(asyncio.gather(*futures), self.timeout_s)
        except Exception as exc:  # noqa: BLE001
            # Drop the producer: after a timeout its state is unknown; the next send reconnects.
            async with self._lock:
                if self._producer is producer:
                    self._producer = None
            await _quiet_stop(producer)
            raise SinkUnavailable(f"Kafka did not acknowledge {len(messages)} message(s) on {topic}: {exc!r}") from None
        for ack in acks:
            where = (ack.topic, ack.partition)
            self._acked_ends[where] = max(self._acked_ends.get(where, 0), ack.offset + 1)

    async def publish(self, events: list[UsageEvent | EncodedEvent], dialect: str = "?") -> int:
        """Write events and wait for the acknowledgement; returns how many were written."""
        await self._send_all(self.topic, encode_batches(events))
        self.counters.count(dialect, "written", len(events))
        return len(events)

    async def dead_letter(self, letters: list[dict[str, Any]]) -> None:
        await self._send_all(self.deadletter_topic, [(self.stage.encode(), deadletters.encode(d)) for d in letters])

    def letter(self, reason: str, payload: Any, **context: Any) -> dict[str, Any]:
        return dead_letter_record(reason, payload, self.stage, **context)

    def binary_letter(self, reason: str, raw: bytes, **context: Any) -> dict[str, Any]:
        """A letter for a binary record (OTLP protobuf): kept as hex, its size and hash those of the bytes; read as
        OTLP/JSON first where it is OTLP, so that a credential in a span's attributes is found by its name."""
        from collectors.dialects.otel_proto import traces_data_to_json  # protobuf is only needed here

        try:
            json_form = traces_data_to_json(raw)
        except Exception:  # noqa: BLE001 - not OTLP (DialectError) or hostile: the letter is written whatever it holds
            json_form = None
        return deadletters.binary_dead_letter(reason, raw, self.stage, json_form, **context)

    async def stop(self) -> None:
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)
        log.info("%s: stopped; %s", self.stage, self.counters.summary())


async def _quiet_stop(producer: AIOKafkaProducer) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 5)
    except Exception:  # noqa: BLE001 - closing a broken producer must not mask the real error
        pass


async def log_counters_every(sink: KafkaSink, stop: asyncio.Event, interval_s: float = 30.0) -> None:
    """Periodic progress line, so an operator sees a stuck or rejecting collector."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except asyncio.TimeoutError:
            log.info("%s: %s", sink.stage, sink.counters.summary())
