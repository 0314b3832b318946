"""Exactly-once delivery for collectors without Kafka transactions (the embedded broker cannot do them).

A collector that dies between Kafka's acknowledgement and its own progress write (a file checkpoint, a
consumer commit) cannot tell what it wrote. So before producing a batch it durably records a *pending batch*:
where the batch came from plus, per output partition, an offset at or below where the batch's messages will
land. After a restart (or after a send that failed in an unknown state) it reads the output topics from those
positions up to the high watermark and publishes only what is not there yet: usage events are recognised by
`event_id`, dead letters by their source location (file inode + line, or topic/partition/offset).

Positions are lower bounds, and that is all recovery needs: they come from ListOffsets(latest), which the
embedded broker under-reports (never over-reports), raised to just past our own last acknowledged message per
partition. Under-reporting only makes recovery read a few records more. The END of the read-back, where being
short would be unsafe, is the high watermark carried in fetch responses, which is exact (environment.md).

`TOKENMETER_COLLECT_FAULT=point[:n]` kills the process with SIGKILL the n-th time (default 1st) it reaches
`point`; the restart tests use it to die at exactly the awkward moments (see `fault_point` callers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Hashable, Mapping

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from collectors.sink import KafkaSink, SinkUnavailable
from tokenmeter.events import UsageEvent
from tokenmeter.kafka_topics import ReadIncomplete, TopicMissing, read_to_end, topic_partitions
from tokenmeter.settings import fetch_wait as settings_fetch_wait

log = logging.getLogger("tokenmeter.collect.delivery")

FAULT_ENV = "TOKENMETER_COLLECT_FAULT"
_fault_hits: Counter = Counter()

Positions = dict[str, dict[int, int]]  # topic -> partition -> offset
LetterKey = Callable[[dict[str, Any]], Hashable]


def fault_point(name: str) -> None:
    """Test hook: die like kill -9 here when TOKENMETER_COLLECT_FAULT names this point."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _fault_hits[name] += 1
    if _fault_hits[name] >= int(nth or 1):
        log.warning("fault injection: SIGKILL at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)


def write_json_atomically(path: Path, record: Any) -> None:
    """temp file + fsync + rename + fsync of the directory: after a crash the file is the old or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def positions_from_json(raw: dict[str, Any]) -> Positions:
    return {topic: {int(p): int(o) for p, o in parts.items()} for topic, parts in raw.items()}


@dataclass
class Written:
    """What a read-back found on the output topics since the recorded positions."""

    event_ids: set[str] = field(default_factory=set)
    letter_keys: set[Hashable] = field(default_factory=set)


class DeliveryGuard:
    """Takes output positions before a batch and reads back what was written since them. `fetch_wait` is the
    collector's `Settings.fetch_wait` (the process's one settings object); None: the environment's settings."""

    def __init__(self, sink: KafkaSink, *, timeout_s: float = 30.0, fetch_wait: Mapping[str, int] | None = None):
        self.sink = sink
        self.timeout_s = timeout_s
        self.fetch_wait = fetch_wait
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[str, list[int]] = {}
        self._starting = asyncio.Lock()  # the bridge asks for end offsets ahead while a batch asks for its own

    @property
    def topics(self) -> list[str]:
        return [self.sink.topic, self.sink.deadletter_topic]

    async def _client(self) -> AIOKafkaConsumer:
        async with self._starting:
            return await self._start_client()

    async def _start_client(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(bootstrap_servers=self.sink.bootstrap_servers, group_id=None,
                                        enable_auto_commit=False, request_timeout_ms=int(self.timeout_s * 1000),
                                        **(self.fetch_wait or settings_fetch_wait()))
            try:
                await asyncio.wait_for(consumer.start(), self.timeout_s)
            except Exception as exc:  # noqa: BLE001 - any start failure means "broker unavailable"
                await _quiet_stop(consumer)
                raise SinkUnavailable(f"cannot connect to Kafka at {self.sink.bootstrap_servers}: {exc!r}") from None
            self._consumer = consumer
        return self._consumer

    async def _topic_partitions(self) -> list[TopicPartition]:
        missing = [t for t in self.topics if not self._partitions.get(t)]
        if missing:  # topics we never subscribe to: asked of the cluster (tokenmeter.kafka_topics says why)
            try:
                found = await topic_partitions(self.sink.bootstrap_servers, *dict.fromkeys(missing),
                                               timeout=self.timeout_s, wait=False)
            except TopicMissing as exc:
                raise SinkUnavailable(f"{exc}; not there yet") from None
            for tp in found:
                self._partitions.setdefault(tp.topic, []).append(tp.partition)
        return [TopicPartition(t, p) for t in self.topics for p in self._partitions[t]]

    async def log_ends(self) -> dict[TopicPartition, int]:
        """The output partitions' end offsets as the broker reports them now (ListOffsets: never above the end)."""
        try:
            consumer = await self._client()
            tps = await self._topic_partitions()
            return await asyncio.wait_for(consumer.end_offsets(tps), self.timeout_s)
        except SinkUnavailable:
            await self._reset()
            raise
        except Exception as exc:  # noqa: BLE001 - broker trouble: the caller retries
            await self._reset()
            raise SinkUnavailable(f"cannot read the output topics' end offsets: {exc!r}") from None

    async def positions(self, ends: dict[TopicPartition, int] | None = None) -> Positions:
        """Per output partition, an offset at or below where the next message will be written. `ends`: a
        `log_ends()` taken earlier (ends only grow, so it is still a lower bound), raised to just past our own
        acknowledged messages, as a fresh one is."""
        if ends is None:
            ends = await self.log_ends()
        out: Positions = {}
        for tp, end in ends.items():
            acked = self.sink.acked_end(tp.topic, tp.partition)
            out.setdefault(tp.topic, {})[tp.partition] = max(end, acked)
        return out

    async def written_since(self, positions: Positions, letter_key: LetterKey) -> Written:
        """Event ids and dead-letter keys (of this sink's stage) on the output topics from `positions` on."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.sink.bootstrap_servers, group_id=None,
                                    enable_auto_commit=False, request_timeout_ms=int(self.timeout_s * 1000),
                                    **(self.fetch_wait or settings_fetch_wait()))
        written = Written()
        try:
            await asyncio.wait_for(consumer.start(), self.timeout_s)
            start = {TopicPartition(t, int(p)): int(offset) for t, parts in positions.items()
                     for p, offset in parts.items()}
            await read_to_end(consumer, start, lambda rec: self._collect(written, rec.topic, rec.value, letter_key),
                              timeout=self.timeout_s, start=start)
        except ReadIncomplete as exc:
            raise SinkUnavailable(f"could not read back the output topics: {exc}") from None
        except SinkUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001
            raise SinkUnavailable(f"cannot read back the output topics: {exc!r}") from None
        finally:
            await _quiet_stop(consumer)
        return written

    def _collect(self, written: Written, topic: str, value: bytes | None, letter_key: LetterKey) -> None:
        if value is None:
            return
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            return  # someone else's record; ours are always JSON
        if topic == self.sink.topic:
            for event in decoded if isinstance(decoded, list) else [decoded]:
                if isinstance(event, dict) and isinstance(event.get("event_id"), str):
                    written.event_ids.add(event["event_id"])
        elif isinstance(decoded, dict) and decoded.get("stage") == self.sink.stage:
            written.letter_keys.add(letter_key(decoded))

    async def _reset(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _quiet_stop(consumer)

    async def stop(self) -> None:
        await self._reset()


async def deliver(sink: KafkaSink, guard: DeliveryGuard, events: list[UsageEvent], letters: list[dict[str, Any]],
                  *, label: str, letter_key: LetterKey, record_pending: Callable[[Positions], None],
                  stopped: Callable[[float], Awaitable[bool]], positions: Positions | None = None,
                  in_doubt: Callable[[UsageEvent], bool] | None = None,
                  letter_in_doubt: Callable[[dict[str, Any]], bool] | None = None,
                  early_ends: dict[TopicPartition, int] | None = None) -> bool:
    """Publish events, then dead letters, each exactly once; True when all are acknowledged, False if stopped.

    `record_pending(positions)` must durably store the positions before anything is produced. With
    `positions` given (a pending batch found at start), that was done by the previous run, which may have
    written part of the batch: the batch is first filtered against what is on the topics. The same filter
    runs before every retry of a failed send, whose outcome is unknown. `in_doubt`/`letter_in_doubt` limit
    that filter to the records the pending batch covered (default: all of them). `early_ends`: the output's end
    offsets asked for ahead (`DeliveryGuard.log_ends`, while the previous batch was in flight), used for the
    first attempt's positions instead of asking now.
    """
    delay = 0.5
    doubtful = positions is not None
    while True:
        try:
            if positions is None:
                positions = await guard.positions(early_ends)
                early_ends = None  # a retry asks afresh
                record_pending(positions)
                fault_point("after-pending")
            if doubtful:
                written = await guard.written_since(positions, letter_key)
                before = len(events) + len(letters)
                events = [e for e in events
                          if e.event_id not in written.event_ids or (in_doubt is not None and not in_doubt(e))]
                letters = [d for d in letters if letter_key(d) not in written.letter_keys
                           or (letter_in_doubt is not None and not letter_in_doubt(d))]
                if before != len(events) + len(letters):
                    log.info("%s: %d record(s) of the interrupted batch were already written; not sending them again",
                             sink.stage, before - len(events) - len(letters))
                doubtful, in_doubt, letter_in_doubt = False, None, None
            if events:
                doubtful = True  # from here until acknowledged, a failure leaves the outcome unknown
                await sink.publish(events, label)
                events = []
                fault_point("after-publish")
            if letters:
                doubtful = True
                await sink.dead_letter(letters)
                letters = []
            return True
        except SinkUnavailable as exc:
            log.warning("%s; retrying in %.1fs", exc, delay)
            if await stopped(delay):
                return False
            delay = min(delay * 2, 30.0)


async def _quiet_stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await asyncio.wait_for(consumer.stop(), 5)
    except Exception:  # noqa: BLE001 - closing a broken client must not mask the real error
        pass
