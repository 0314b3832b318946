"""`tokenmeter collect kafka`: bridge a gateway's own topic into tokenmeter.usage.

Sources: Kong kafka-log (one entry, or a JSON array per message with max_batch_size > 1), APISIX kafka-logger,
the OpenTelemetry Collector kafka exporter (topic `otlp_spans`, otlp_proto or otlp_json TracesData per record).
Source offsets are committed only after Kafka acknowledged the events and dead letters of that fetch (the shared
commit loop, tokenmeter/commitloop.py, writes the protocol), so a crash never loses a record. Kafka transactions
are not available (the embedded broker cannot do them), and the embedded broker drops offset-commit metadata, so
each fetch is first recorded as *pending* (source offset ranges + output positions, see collectors.delivery), one
record per source partition in a directory the group's members share (collectors/pending_records.py: taken under a
lock by whoever is assigned the partition). A member given a partition whose committed offset is still inside its
pending range (the previous owner was killed mid-batch: this process before a restart, or another member) reads the
output back and does not send again what was written. A rebalance waits for the batch in flight to be acknowledged
and committed before the partitions are given up, and a batch converted ahead for them is dropped unsent (the
commit loop's `finish_before_revoke`), so members joining and leaving repeat nothing either.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from collectors import AttributionMapping, DialectError, parse_record
from collectors.batch import DeliveryPause, collection_paused
from collectors.delivery import DeliveryGuard, Positions, deliver, fault_point
from collectors.pending_records import PendingRecords, lowest
from collectors.sink import KafkaSink, SinkUnavailable, log_counters_every
from tokenmeter import kafka_refused
from tokenmeter.commitloop import Batch, CommitLoop, Offsets
from tokenmeter.events import UsageEvent
from tokenmeter.settings import fetch_wait as settings_fetch_wait

log = logging.getLogger("tokenmeter.collect.kafka")

# Work converted between two turns of the event loop while the previous batch is in flight (`_prepare`), counted as
# records + events made (+ dead letters): ~2 ms, so an acknowledgement, an offsets answer or the next fetch waits
# about that long for the loop. Not records alone: a Kong record holds up to 50 entries (~0.5 ms), a LiteLLM record
# one (~10 us), and Kong's batches (one partition's 4 MB fetch, ~80 records) were converted in one slice of 250
# records with the loop stopped (docs/rounds/collectors.md, coll26). Not wall time: under load every record would be a turn.
CONVERT_TURN_WORK = 256


class KafkaBridge:
    def __init__(self, source_bootstrap: str, topic: str, dialect: str | None, group: str, sink: KafkaSink, *,
                 mapping: AttributionMapping | None = None, from_beginning: bool = False,
                 batch_records: int = 5000, exit_when_idle: float | None = None, log_every_s: float = 30.0,
                 state_path: Path | None = None, group_timeouts: dict[str, int] | None = None,
                 fetch_wait: dict[str, int] | None = None, leave_group_on_stop: bool = True):
        self.source_bootstrap = source_bootstrap
        self.group_timeouts = group_timeouts or {}  # Settings.group_timeouts; empty: aiokafka's defaults
        self.fetch_wait = fetch_wait  # Settings.fetch_wait; None: the environment's settings
        self.leave_group_on_stop = leave_group_on_stop  # False for `--processes` members (CommitLoop says why)
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
        self.state_path = state_path  # None: no pending record, a kill -9 may resend one batch (same ids)
        # the records live in `<state_path stem>.pending/`, one per source partition (pending_records.py)
        self.pending = PendingRecords(state_path) if state_path is not None else None
        self.guard = DeliveryGuard(sink, fetch_wait=fetch_wait)
        # A killed owner's pending batches of partitions taken: {"ranges": {(topic, partition): [start, end)},
        # "by_partition": {(topic, partition): positions}, "positions": the lowest of those still in doubt}
        self.recovery: dict[str, Any] | None = None
        self._recovery_checked = False
        # batches converted by `_prepare`, not yet delivered: their GC pause -> their early end offsets
        self._ahead: dict[DeliveryPause, asyncio.Future] = {}
        self.on_assigned: Any = None  # the group's assignment callback (the multi-process bench watches it)

    async def run(self, stop: asyncio.Event) -> None:
        if self.pending is not None:
            self.pending.migrate_legacy()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.source_bootstrap, group_id=self.group, enable_auto_commit=False,
            auto_offset_reset="earliest" if self.from_beginning else "latest",
            max_partition_fetch_bytes=4 * 1024 * 1024, **self.group_timeouts,
            **(self.fetch_wait if self.fetch_wait is not None else settings_fetch_wait()))
        # The shared loop (tokenmeter/commitloop.py has the protocol); the source offsets it commits after each
        # batch's events and dead letters are acknowledged.
        loop = CommitLoop(consumer, topics=[self.topic], name=f"bridge {self.topic}", max_records=self.batch_records,
                          fetch_timeout_ms=500, on_committed=self._committed, on_revoked=self._revoked,
                          on_assigned=self.on_assigned,
                          finish_before_revoke=True,  # no repeats when members join or leave (protocol 6)
                          leave_group_on_stop=self.leave_group_on_stop,
                          pass_refused=True)  # a refused batch's marker is dead-lettered by _convert_one
        self.loop = loop
        reporter = asyncio.create_task(log_counters_every(self.sink, stop, self.log_every_s))
        self._last_record = asyncio.get_running_loop().time()
        try:
            async with loop:
                log.info("bridging %s (%s, group %s) -> %s", self.topic, self.label, self.group, self.sink.topic)
                await loop.run(lambda batch: self._process(batch, consumer, stop), stop, prepare=self._prepare)
        finally:
            stop.set()
            for pause, early_ends in self._ahead.items():  # converted ahead, dropped unprocessed (stop, failure)
                pause.end()
                early_ends.cancel()
            self._ahead.clear()
            await reporter
            await self.guard.stop()
            await self.sink.stop()
            if self.pending is not None:
                self.pending.release_all()

    async def _process(self, batch: Batch, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> Offsets | None:
        """One batch of the commit loop: convert, deliver exactly once; the loop then commits the source."""
        now = asyncio.get_running_loop().time()
        events = letters = None
        if not len(batch):
            if not consumer.assignment():
                self._last_record = now  # still joining the group: not idle yet
            elif self.exit_when_idle is not None and now - self._last_record >= self.exit_when_idle:
                stop.set()
            return {}
        self._last_record = now
        if batch.revoked:  # fetched before a rebalance: its partitions start again from the last commit
            self._drop_revoked(batch)
            if not len(batch):
                return {}
        if self.pending is not None:
            await self._take(batch)
        if not self._recovery_checked:
            await self._settle_recovery(consumer)
        early_ends = None
        if batch.prepared is not None:  # converted ahead: its pause began then
            (events, letters, pause, early_ends), batch.prepared = batch.prepared, None
            self._doubtful_ids = set()
            for messages in batch.records.values():  # counted now, as an unprepared batch is
                self.sink.counters.count(self.label, "read", len(messages))
        else:
            pause = DeliveryPause().begin()  # collect once the batch's events are gone
        try:
            if early_ends is not None:
                early_ends = await early_ends
            if events is None:
                events, letters = self._convert(batch.records)
            if not await self._deliver(stop, batch.records, events, letters, early_ends):
                return {}  # stopped while Kafka was down: offsets not committed, the batch is read again
            rejected = len(letters)
            del events, letters
        finally:
            pause.end()
            self._ahead.pop(pause, None)
        if self._ahead:
            fault_point("after-ack-next-prepared")  # the window `_prepare` opens: N acked, N+1 converted
        fault_point("after-ack")
        self.sink.counters.count(self.label, "rejected", rejected)
        return None

    async def _prepare(self, batch: Batch) -> None:
        """Convert a batch while the previous one is being produced, acknowledged and committed (commitloop.py,
        protocol 8): the broker's work on batch N then overlaps this process's conversion of N+1. The conversion
        writes nothing and records nothing, so the pending record and the commit stay one batch at a time, in
        order. It gives the event loop a turn between slices of records, so N's produce requests (aiokafka has
        one in flight per broker) and acknowledgements go on meanwhile. Not done for the first batch (its
        recovery is settled first) nor while a killed run's batch is in doubt (the conversion marks its records)."""
        if not len(batch) or not self._recovery_checked or self.recovery is not None or not self._held(batch):
            return
        # The output's end offsets asked for now, answered while converting: a lower bound of where this batch
        # will land (ends only grow), so its pending record needs no request of its own (`DeliveryGuard.positions`).
        early_ends = asyncio.ensure_future(self._early_ends())
        pause = DeliveryPause().begin()  # until this batch is delivered, as `_process` does
        self._ahead[pause] = early_ends
        events: list[UsageEvent] = []
        letters: list[dict[str, Any]] = []
        try:
            # Two turns first: the fetcher task, woken when `getmany` took the buffered records, then the fetch
            # request it starts as a task of its own. The broker serves the next batch while this one converts.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            records = 0
            turn_at = CONVERT_TURN_WORK
            for tp, messages in batch.records.items():
                for message in messages:
                    self._convert_one(tp, message, events, letters)
                    records += 1
                    if records + len(events) + len(letters) >= turn_at:
                        await asyncio.sleep(0)
                        turn_at = records + len(events) + len(letters) + CONVERT_TURN_WORK
        except BaseException:
            pause.end()
            self._ahead.pop(pause, None)
            early_ends.cancel()
            raise
        batch.prepared = (events, letters, pause, early_ends)

    async def _early_ends(self) -> dict[TopicPartition, int] | None:
        try:
            return await self.guard.log_ends()
        except SinkUnavailable:
            return None  # asked again when the batch is delivered

    def _committed(self, ends: Offsets) -> None:
        fault_point("after-commit")
        self._recovered(ends)

    # Pending batches -----------------------------------------------------------------------------------
    def _held(self, batch: Batch) -> bool:
        if self.pending is None:
            return True
        held = self.pending.held()
        return all((tp.topic, tp.partition) in held for tp in batch.records)

    async def _take(self, batch: Batch) -> None:
        """Lock the batch's partitions not yet ours and read their pending records (a previous owner's batch in
        doubt); settled against the committed offsets before the batch is converted."""
        wanted = {(tp.topic, tp.partition) for tp in batch.records} - self.pending.held()
        if not wanted:
            return
        ranges, positions = await self.pending.take(wanted)
        if ranges:
            if self.recovery is None:
                self.recovery = {"ranges": {}, "by_partition": {}, "positions": {}}
            self.recovery["ranges"].update(ranges)
            self.recovery["by_partition"].update(positions)
            self._recovery_checked = False

    def _revoked(self, revoked: set[TopicPartition]) -> None:
        """The loop has committed the batch in flight (finish_before_revoke): give the partitions up."""
        keys = {(tp.topic, tp.partition) for tp in revoked}
        if self.recovery is not None:  # still in doubt: the record stays on disk for the next owner
            for key in keys:
                self.recovery["ranges"].pop(key, None)
                self.recovery["by_partition"].pop(key, None)
            self._recovery_positions()
        if self.pending is not None:
            self.pending.release(keys)

    def _drop_revoked(self, batch: Batch) -> None:
        """A batch fetched (and maybe converted) before its partitions were revoked is not sent: the new owner (or
        this process, assigned them again) reads them from the commit the revocation waited for."""
        dropped = [tp for tp in batch.records if tp in batch.revoked]
        if not dropped:
            return
        for tp in dropped:
            del batch.records[tp]
        if batch.prepared is not None:  # converted with the dropped records: converted again without them
            (_, _, pause, early_ends), batch.prepared = batch.prepared, None
            pause.end()
            self._ahead.pop(pause, None)
            early_ends.cancel()
        log.info("dropped a batch of %s fetched before a rebalance (read again from the last commit)", dropped)

    def _save_state(self, ranges: dict[tuple[str, int], tuple[int, int]], positions: Positions) -> None:
        if self.pending is not None:
            self.pending.save(ranges, positions)

    async def _settle_recovery(self, consumer: AIOKafkaConsumer) -> None:
        """Drop in-doubt ranges already committed (their batch was finished), or of partitions not ours now."""
        self._recovery_checked = True
        if self.recovery is None:
            return
        assigned = consumer.assignment()
        for (topic, partition), (_, end) in list(self.recovery["ranges"].items()):
            tp = TopicPartition(topic, partition)
            if tp in assigned and (await consumer.committed(tp) or 0) < end:
                continue
            del self.recovery["ranges"][(topic, partition)]
            self.recovery["by_partition"].pop((topic, partition), None)
        self._recovery_positions()
        if self.recovery is not None:
            log.info("resuming the batch a previous owner was producing: %s", self.recovery["ranges"])

    def _recovery_positions(self) -> None:
        if not self.recovery["ranges"]:
            self.recovery = None
        else:  # read back from the lowest position of any batch still in doubt
            self.recovery["positions"] = lowest(list(self.recovery["by_partition"].values()))

    def _recovered(self, ends: dict[TopicPartition, int]) -> None:
        if self.recovery is None:
            return
        for tp, end in ends.items():
            window = self.recovery["ranges"].get((tp.topic, tp.partition))
            if window is not None and end >= window[1]:
                del self.recovery["ranges"][(tp.topic, tp.partition)]
                self.recovery["by_partition"].pop((tp.topic, tp.partition), None)
        self._recovery_positions()

    async def _deliver(self, stop: asyncio.Event, batch: dict[TopicPartition, list[Any]], events: list[UsageEvent],
                       letters: list[dict[str, Any]], early_ends: dict[TopicPartition, int] | None = None) -> bool:
        ranges = {(tp.topic, tp.partition): (messages[0].offset, messages[-1].offset + 1)
                  for tp, messages in batch.items()}
        positions, in_doubt, letter_in_doubt = None, None, None
        if self.recovery is not None:
            # Keep the killed run's (earlier) positions, so that a second kill still finds its writes.
            old = self.recovery["ranges"]
            doubtful_ids = self._doubtful_ids
            positions = self.recovery["positions"]
            for key, (start, end) in old.items():
                if key in ranges:
                    ranges[key] = (min(start, ranges[key][0]), max(end, ranges[key][1]))
                else:
                    ranges[key] = (start, end)
            self._save_state(ranges, positions)
            in_doubt = lambda e: e.event_id in doubtful_ids  # noqa: E731
            letter_in_doubt = lambda d: _within(old, d)  # noqa: E731
        return await deliver(self.sink, self.guard, events, letters, label=self.label, letter_key=_letter_key,
                             record_pending=lambda found: self._save_state(ranges, found),
                             stopped=lambda s: _sleep(stop, s), positions=positions,
                             in_doubt=in_doubt, letter_in_doubt=letter_in_doubt,
                             early_ends=early_ends if positions is None else None)

    def _convert(self, batch: dict[TopicPartition, list[Any]]) -> tuple[list[UsageEvent], list[dict[str, Any]]]:
        events: list[UsageEvent] = []
        letters: list[dict[str, Any]] = []
        self._doubtful_ids: set[str] = set()  # ids from records of a killed run's pending range
        ranges = self.recovery["ranges"] if self.recovery is not None else {}
        with collection_paused():
            self._convert_all(batch, ranges, events, letters)
        return events, letters

    def _convert_all(self, batch: dict[TopicPartition, list[Any]], ranges: dict[tuple[str, int], tuple[int, int]],
                     events: list[UsageEvent], letters: list[dict[str, Any]]) -> None:
        for tp, messages in batch.items():
            window = ranges.get((tp.topic, tp.partition))
            self.sink.counters.count(self.label, "read", len(messages))
            for message in messages:
                if window is not None and window[0] <= message.offset < window[1]:
                    mark_from = len(events)
                else:
                    mark_from = None
                self._convert_one(tp, message, events, letters)
                if mark_from is not None:
                    self._doubtful_ids.update(e.event_id for e in events[mark_from:])

    def _convert_one(self, tp: TopicPartition, message: Any, events: list[UsageEvent],
                     letters: list[dict[str, Any]]) -> None:
        if message.value is None and kafka_refused.refusal(message) is not None:  # over the inflation bound
            reason, about = kafka_refused.letter_fields(message)
            letters.append(self.sink.letter(reason, None, **self._where(tp, message), **about))
            self.sink.counters.count(self.label, "refused_batches")
            return
        if message.value is None:
            letters.append(self.sink.letter("empty message (tombstone)", None, **self._where(tp, message)))
            return
        try:
            found = parse_record(message.value, self.dialect, self.mapping, encoded=True)
        except DialectError as exc:
            letters.append(self._letter(str(exc), message.value, **self._where(tp, message)))
            events.extend(exc.partial)  # the good entries of a partly bad batch still count
            return
        if not found:
            self.sink.counters.count(self.label, "skipped")
        events.extend(found)

    def _letter(self, reason: str, value: bytes, **where: Any) -> dict[str, Any]:
        """Dead-letter payloads are JSON: text stays text, binary (OTLP protobuf) is kept as hex."""
        try:
            return self.sink.letter(reason, value.decode("utf-8"), **where)
        except UnicodeDecodeError:
            return self.sink.binary_letter(reason, value, **where)

    def _where(self, tp: TopicPartition, message: Any) -> dict[str, Any]:
        """A dead letter's source location (also its key for the read-back after a crash, `_letter_key`)."""
        return {"topic": tp.topic, "partition": tp.partition, "offset": message.offset, "dialect": self.label}


def _letter_key(letter: dict[str, Any]) -> tuple[Any, Any, Any]:
    return letter.get("topic"), letter.get("partition"), letter.get("offset")


def _within(ranges: dict[tuple[str, int], tuple[int, int]], letter: dict[str, Any]) -> bool:
    window = ranges.get((letter.get("topic"), letter.get("partition")))
    return window is not None and window[0] <= int(letter.get("offset", -1)) < window[1]


async def _sleep(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep unless stopped; True when stop was requested."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False

