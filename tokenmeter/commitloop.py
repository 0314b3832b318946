"""The one consume -> process -> produce -> await acks -> commit loop of every non-Faust role.

THE PROTOCOL (role modules refer here; docs/commit-loop.md is the operator's version)

1. Fetch. The loop owns the role's AIOKafkaConsumer (started and stopped by `async with CommitLoop(...)`). It
   either subscribes with its own ConsumerRebalanceListener (`topics=`) or the role assigns partitions itself
   after start (no group rebalance; the group only stores offsets). A batch is gathered with `getmany` bounded
   in records (`max_records` per fetch) and, optionally, in the role's own unit (`max_size`, e.g. rows, counted
   by `accept`) within a time window (`window_s`; 0 = one fetch). A stop never waits for a fetch (a group join
   can block `getmany` for seconds); records already fetched are still processed. While the role says `hold`
   (too much work open), every owned partition is paused; fetching resumes when it says so.
2. Process. `process(batch)` is called once per window, also with an empty batch (roles that act on time:
   commit finished work, advance a wall clock, exit when idle). It produces its outputs through
   `batch.send(...)` (or its own producer, awaiting them itself) and returns which offsets it finished:
   `None` = the whole batch; an explicit `{TopicPartition: next offset}` = exactly those (a role whose records
   finish later, like alert deliveries, or `{}` when stopped before finishing).
3. Await acks. Every record sent with `batch.send` is acknowledged by the broker BEFORE any offset is
   committed (the sinks flush before the checkpoint, as in Quix Streams). A send or an acknowledgement that
   fails is a processing failure (4).
4. Processing failure. If `process` raises, or an acknowledgement fails, NOTHING of the batch is committed: the
   consumer is rewound to the batch's first offsets (so a caller that runs the loop again gets the same records
   first) and the error propagates (the role stops; a restart, or the next owner, reads the batch again from
   the last commit). At-least-once: every output carries an idempotency key (event_id, alert/anomaly id, dead
   letter source location) so a redelivered batch repeats outputs that consumers drop.
5. Commit exactly what was processed, and only what is still ours. The offsets are committed only for
   partitions this consumer has owned WITHOUT INTERRUPTION since the batch was fetched.
6. Revocation mid-batch (the written rule): the in-flight batch is FINISHED, not cancelled (its outputs may
   already be partly out, and finishing costs no more than redoing), but the offsets of partitions revoked
   meanwhile are DROPPED, even if they were assigned back: the new owner re-reads those records from the last
   commit and the idempotency keys absorb the repeats. Dropping a partition assigned back costs nothing: the
   assignment reset its position to the last commit, so its records are fetched again anyway (and a commit of
   a partition another member took would make aiokafka refuse the whole commit). The listener does not wait
   for the batch: a slow batch must not stall the group's rebalance. What a role has already finished when
   partitions are revoked (e.g. alerts whose deliveries are final) is committed from the listener, while the
   partitions are still ours (`on_revoked` returns those offsets).
   A role whose outputs cannot absorb a repeat cheaply (the collectors' bridge: `finish_before_revoke=True`) asks
   the other way round: the listener WAITS for the batch being processed, which is then committed normally (the
   partitions are still ours while the listener runs), and a batch fetched ahead (protocol 8) is marked revoked so
   the role drops it unsent; the new assignment starts from that commit, so its records are read again by whoever
   owns them. A fetch answered before the revocation but not yet taken by the loop is discarded for the same
   reason. A batch slow to finish then delays the group's rebalance (bounded by the role's own stop).
7. A failed commit (a rebalance in between, a broker hiccup) is logged and counted, not fatal: everything up to
   it is processed and acknowledged, and the next commit covers it; at worst a restart repeats a batch.
8. Preparing ahead (optional, `run(..., prepare=)`): while batch N's processing, acknowledgements and commit are in
   flight, the loop fetches batch N+1 and runs `prepare(N+1)`, work that produces nothing and records nothing
   (e.g. decoding). Processing stays strictly in order: `process(N+1)` starts only after N is committed (or
   failed), so steps 2-7 hold for each batch as above; a revocation counts against every batch still open.
9. A refused batch (tokenmeter/kafka_refused.py: a compressed batch over the inflation bound arrives as one marker
   record at the batch's last offset). The loop takes the markers out of what the role sees, sends one dead letter
   per marker through the batch (`batch.send`: acknowledged with the outputs, step 3), counts it
   (`stats.refused_batches`, the role's `on_refused`) and commits past it with the batch. A role whose own
   conversion handles them (`pass_refused=True`: the collectors' bridge) gets them in its records instead.

The Faust worker (streams/worker.py) follows the same protocol with a second driver: Faust owns its consumer and
acks offsets after the `take_events` body returns, so the body awaits every produced record's future with
`await_acks` (the same step 3 as `Batch.acked`) before returning (steps 3-4). Faust cannot share this loop: its
consumer runs in Faust's own thread with its own rebalance handling (patched in streams/faust_patches.py). One
protocol, two drivers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterator, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from tokenmeter import deadletters, kafka_inflate, kafka_refused, topics

kafka_inflate.install()  # bounded decoders before this process's first fetch (as tokenmeter.kafka_topics does)

log = logging.getLogger("tokenmeter.commitloop")

Offsets = dict[TopicPartition, int]  # partition -> next offset to read (what Kafka stores as committed)


@dataclass
class Batch:
    """One fetch window's records per partition (the shape `getmany` returns), and the role's view of them."""

    records: dict[TopicPartition, list[Any]] = field(default_factory=dict)
    state: Any = None  # the role's parsed view, built by its `accept` as records arrive
    size: int = 0  # in the role's unit (records unless `accept` says otherwise)
    producer: AIOKafkaProducer | None = None
    prepared: Any = None  # what `prepare` made of it ahead of `process` (protocol 8)
    revoked: set[TopicPartition] = field(default_factory=set)  # partitions revoked since it was fetched
    refused: list[Any] = field(default_factory=list)  # marker records of refused batches (protocol 9)
    _acks: list[asyncio.Future] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values())

    def __iter__(self) -> Iterator[Any]:
        for records in self.records.values():
            yield from records

    def add(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        for tp, records in fetched.items():
            self.records.setdefault(tp, []).extend(records)

    def next_offsets(self) -> Offsets:
        """Per partition, one past the last record (or refused batch, protocol 9) of the batch: what committing it all
        stores."""
        ends = {tp: records[-1].offset + 1 for tp, records in self.records.items() if records}
        for marker in self.refused:
            tp = TopicPartition(marker.topic, marker.partition)
            ends[tp] = max(ends.get(tp, 0), marker.offset + 1)
        return ends

    def first_offsets(self) -> Offsets:
        firsts = {tp: records[0].offset for tp, records in self.records.items() if records}
        for marker in self.refused:  # seeking to the marker's offset fetches its batch again (aiokafka skips none)
            tp = TopicPartition(marker.topic, marker.partition)
            firsts[tp] = min(firsts.get(tp, marker.offset), marker.offset)
        return firsts

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Produce one output of this batch; the loop awaits its acknowledgement before committing."""
        if self.producer is None:
            raise RuntimeError("this CommitLoop has no producer: pass producer= to send through the batch")
        self._acks.append(await self.producer.send(topic, value=value, key=key))

    async def acked(self) -> None:
        """Wait for every output sent so far; raises the first refusal (then nothing may be committed)."""
        acks, self._acks = self._acks, []
        await await_acks(acks)


async def await_acks(acks: Sequence[Awaitable[Any]]) -> None:
    """Step 3 of the protocol, for both drivers: wait until the broker has answered for EVERY output sent (aiokafka
    or Faust send futures), then raise the first refusal, so no retry starts while outputs are still in flight
    and no refusal goes unretrieved. Nothing may be committed or acked when this raises."""
    if not acks:
        return
    for result in await asyncio.gather(*acks, return_exceptions=True):
        if isinstance(result, BaseException):
            raise result


@dataclass
class LoopStats:
    batches: int = 0
    records: int = 0
    commits: int = 0
    commit_failures: int = 0
    failed_batches: int = 0  # processing failures: nothing committed, batch rewound
    dropped_revoked: int = 0  # partitions whose offsets were not committed because they were revoked mid-batch
    refused_batches: int = 0  # compressed batches over the inflation bound, dead-lettered (protocol 9)


Process = Callable[[Batch], Awaitable["Offsets | None"]]
Prepare = Callable[[Batch], Awaitable[None]]


class CommitLoop:
    """Owns one consumer and runs THE PROTOCOL above for one role. Use as `async with CommitLoop(...) as loop:`
    then `await loop.run(process, stop)`."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        *,
        topics: Sequence[str] | None = None,
        producer: AIOKafkaProducer | None = None,
        name: str = "role",
        max_records: int = 500,
        fetch_timeout_ms: int = 200,
        window_s: float = 0.0,
        max_size: int | None = None,
        start_batch: Callable[[], Any] | None = None,
        accept: Callable[[Batch, list[Any]], int] | None = None,
        hold: Callable[[bool], bool] | None = None,
        on_assigned: Callable[[set[TopicPartition]], Awaitable[None] | None] | None = None,
        on_revoked: Callable[[set[TopicPartition]], Awaitable[Offsets | None] | Offsets | None] | None = None,
        on_committed: Callable[[Offsets], None] | None = None,
        on_refused: Callable[[dict[str, Any]], None] | None = None,
        pass_refused: bool = False,
        stage: str | None = None,
        finish_before_revoke: bool = False,
        leave_group_on_stop: bool = True,
    ):
        self.consumer = consumer
        self.topics = list(topics) if topics else None
        self.producer = producer
        self.name = name
        self.max_records = max_records
        self.fetch_timeout_ms = fetch_timeout_ms
        self.window_s = window_s
        self.max_size = max_size
        self.start_batch = start_batch
        self.accept = accept
        self.hold = hold
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.on_committed = on_committed
        self.on_refused = on_refused  # the role counts a refused batch's dead letter (protocol 9)
        self.pass_refused = pass_refused
        self.stage = stage or name  # a refused batch's dead letter's stage
        self.stats = LoopStats()
        self._held = False
        self._revoked_since_fetch: set[TopicPartition] = set()
        self._open: list[Batch] = []  # fetched and not yet committed or failed (two while preparing ahead)
        if finish_before_revoke and window_s > 0:  # a window's early records would be old, its later ones new
            raise ValueError("finish_before_revoke needs one fetch per batch (window_s=0)")
        self.finish_before_revoke = finish_before_revoke  # protocol 6, second paragraph
        self.leave_group_on_stop = leave_group_on_stop  # False: the group notices at the session timeout instead
        self._revocations = 0  # counted as a revocation begins: a fetch answered before it holds old records
        self._answered_in = 0  # `_revocations` when the last fetch was answered
        self._gathering: Batch | None = None  # the batch whose fetch is open (its records come after any revocation)
        self._stepping: Batch | None = None  # the batch being processed, acknowledged and committed
        self._step_done = asyncio.Event()
        self._step_done.set()

    # Lifecycle ---------------------------------------------------------------------------------------------
    async def __aenter__(self) -> "CommitLoop":
        try:
            await self.consumer.start()
        except BaseException:
            await self.consumer.stop()  # close what a half-done start opened
            raise
        if self.topics:
            self.consumer.subscribe(self.topics, listener=_Listener(self))
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self.leave_group_on_stop:
            _leave_group_even_in_generation_zero(self.consumer)
        else:
            _stop_without_leaving(self.consumer)
        try:
            await self.consumer.stop()
        except Exception as error:  # shutting down: report, never mask the error that brought us here
            log.warning("%s: error stopping the consumer: %r", self.name, error)

    # The loop ----------------------------------------------------------------------------------------------
    async def run(self, process: Process, stop: asyncio.Event, *, prepare: Prepare | None = None) -> None:
        """Batches until `stop` is set (steps 1-7 of the protocol, 8 with `prepare`); a processing failure
        propagates."""
        in_flight: asyncio.Task | None = None  # the previous batch's step, while the next one is prepared
        try:
            while not stop.is_set():
                self._apply_hold()
                batch = await self._gather(stop)
                if batch is None:
                    break
                if prepare is None:
                    await self.step(batch, process)
                    continue
                try:
                    await prepare(batch)
                finally:
                    if in_flight is not None:
                        in_flight, previous = None, in_flight
                        await previous  # its failure propagates (this batch is then fetched again, unprocessed)
                if stop.is_set():
                    # the previous batch may have stopped unfinished (its offsets not committed): committing this
                    # later one would skip it. Not processed, it is fetched again from the last commit.
                    self._open.remove(batch)
                    break
                in_flight = asyncio.create_task(self.step(batch, process))
        finally:
            if in_flight is not None:
                await in_flight

    async def step(self, batch: Batch, process: Process) -> None:
        """Process one gathered batch, await its acknowledgements, commit what is done and still owned."""
        self._stepping = batch
        self._step_done.clear()
        try:
            try:
                finished = await process(batch)
                await self._dead_letter_refused(batch)
                await batch.acked()
            except BaseException:
                self.stats.failed_batches += 1
                self._rewind(batch)
                raise
            self.stats.batches += 1
            self.stats.records += len(batch)
            self.stats.refused_batches += len(batch.refused)
            await self.commit(batch.next_offsets() if finished is None else finished, batch)
        finally:
            if batch in self._open:
                self._open.remove(batch)
            self._stepping = None
            self._step_done.set()

    async def commit(self, offsets: Offsets, batch: Batch | None = None) -> Offsets:
        """Commit `offsets` for the partitions owned without interruption since `batch` (default: the last
        fetch) was fetched (protocol 5-7); returns what was committed."""
        owned = self.consumer.assignment()
        revoked = batch.revoked if batch is not None else self._revoked_since_fetch
        keep = {tp: offset for tp, offset in offsets.items() if tp in owned and tp not in revoked}
        self.stats.dropped_revoked += len(offsets) - len(keep)
        if not keep:
            return {}
        try:
            await self.consumer.commit(keep)
        except KafkaError as exc:
            self.stats.commit_failures += 1
            log.warning("%s: offset commit failed (processed and acknowledged; a restart may repeat it): %r",
                        self.name, exc)
            return {}
        self.stats.commits += 1
        if self.on_committed is not None:
            self.on_committed(keep)
        return keep

    async def _dead_letter_refused(self, batch: Batch) -> None:
        """One dead letter per refused batch, sent through the batch: acknowledged before anything is committed."""
        for marker in batch.refused:
            letter = kafka_refused.dead_letter(marker, self.stage)
            if self.producer is None:  # nowhere to put it: stop on it as before, rather than skip it unrecorded
                raise kafka_inflate.InflateRefused(f"{self.name}: {letter['reason']} (no producer for its dead "
                                                   "letter)", letter["codec"], b"")
            await batch.send(topics.DEADLETTER, deadletters.encode(letter))
            if self.on_refused is not None:
                self.on_refused(letter)

    # Fetching ----------------------------------------------------------------------------------------------
    def _apply_hold(self) -> None:
        if self.hold is None:
            return
        self._held = self.hold(self._held)
        assigned = self.consumer.assignment()
        if self._held:
            self.consumer.pause(*assigned)  # every round: partitions assigned since are paused too
        else:
            self.consumer.resume(*self.consumer.paused())

    async def _gather(self, stop: asyncio.Event) -> Batch | None:
        """One window's records; None when stopped before anything was fetched."""
        batch = Batch(state=self.start_batch() if self.start_batch else None, producer=self.producer)
        self._revoked_since_fetch = set()
        self._open.append(batch)
        self._gathering = batch
        try:
            return await self._gather_into(batch, stop)
        finally:
            self._gathering = None

    async def _gather_into(self, batch: Batch, stop: asyncio.Event) -> Batch | None:
        deadline = time.monotonic() + self.window_s
        while True:
            wait_s = min(self.fetch_timeout_ms / 1000, max(0.0, deadline - time.monotonic()))
            if self.window_s <= 0:
                wait_s = self.fetch_timeout_ms / 1000
            room = self.max_records if self.max_size is None else max(1, min(self.max_records,
                                                                             self.max_size - batch.size))
            fetched = await self._fetch_unless_stopped(stop, int(wait_s * 1000), room)
            if fetched and self.finish_before_revoke and self._answered_in != self._revocations:
                # answered before a revocation that began since (aiokafka holds a fetch waiting across one until
                # the new assignment): old records, fetched again from the commit by whoever owns them now
                fetched = {}
            if fetched is None:
                if len(batch):
                    return batch
                self._open.remove(batch)
                return None
            if fetched and not self.pass_refused:
                fetched = _without_refused(fetched, batch.refused)
            if fetched:
                batch.add(fetched)
                new = [record for records in fetched.values() for record in records]
                batch.size += self.accept(batch, new) if self.accept else len(new)
            if (self.window_s <= 0 or time.monotonic() >= deadline or stop.is_set()
                    or (self.max_size is not None and batch.size >= self.max_size)):
                return batch

    async def _fetch_unless_stopped(self, stop: asyncio.Event, timeout_ms: int, max_records: int) -> dict | None:
        """getmany() can block for a whole group join (~5 s on the embedded broker); a stop must not wait for it."""
        fetch = asyncio.ensure_future(self._getmany(timeout_ms, max_records))
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({fetch, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if fetch.done():
            return fetch.result()  # records already fetched are processed even when stopping
        fetch.cancel()
        await asyncio.gather(fetch, return_exceptions=True)
        return None

    async def _getmany(self, timeout_ms: int, max_records: int) -> dict:
        fetched = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        self._answered_in = self._revocations  # noted as it returns, not when the loop gets to it
        return fetched

    def _rewind(self, batch: Batch) -> None:
        owned = self.consumer.assignment()
        for tp, offset in batch.first_offsets().items():
            if tp in owned:
                self.consumer.seek(tp, offset)

    # Rebalances --------------------------------------------------------------------------------------------
    async def _revoked(self, revoked: set[TopicPartition]) -> None:
        if self.finish_before_revoke:
            await self._finish_before_revoke(revoked)
        if self.on_revoked is not None:
            final = self.on_revoked(revoked)
            if asyncio.iscoroutine(final):
                final = await final
            if final:  # still ours while the listener runs: the documented place to commit finished work
                await self.commit({tp: o for tp, o in final.items() if tp in revoked})
        self._revoked_since_fetch |= revoked
        for batch in self._open:
            if not (self.finish_before_revoke and batch is self._gathering):  # its records come from the new
                batch.revoked |= revoked  # assignment (an older answer is discarded in `_gather_into`)

    async def _finish_before_revoke(self, revoked: set[TopicPartition]) -> None:
        """Protocol 6, second paragraph: batches fetched ahead are marked first (so the loop, once the running step
        ends, drops them rather than send them), then the running step is awaited: its commit goes through, as the
        partitions are still ours until this listener returns."""
        if not revoked:
            return  # the first join (aiokafka calls the listener with nothing to revoke)
        self._revocations += 1
        for batch in self._open:
            if batch is not self._stepping and batch is not self._gathering:
                batch.revoked |= revoked
        if self._stepping is not None:
            started = time.monotonic()
            await self._step_done.wait()
            log.info("%s: revocation waited %.2f s for the batch in flight to be committed", self.name,
                     time.monotonic() - started)

    async def _assigned(self, assigned: set[TopicPartition]) -> None:
        if self.on_assigned is not None:
            result = self.on_assigned(assigned)
            if asyncio.iscoroutine(result):
                await result


def _without_refused(fetched: dict[TopicPartition, list[Any]], refused: list[Any]) -> dict[TopicPartition, list[Any]]:
    """`fetched` without the marker records of refused batches (kept in `refused`); records with a value (nearly
    all) cost one comparison each."""
    out = {}
    for tp, records in fetched.items():
        markers = [r for r in records if r.value is None and kafka_refused.refusal(r) is not None]
        if markers:  # (by identity: a record equal to a marker is not one)
            refused.extend(markers)
            marked = {id(m) for m in markers}
            records = [r for r in records if id(r) not in marked]
        if records:
            out[tp] = records
    return out


class _Listener(ConsumerRebalanceListener):
    def __init__(self, loop: CommitLoop):
        self.loop = loop

    async def on_partitions_revoked(self, revoked):  # noqa: ANN001
        await self.loop._revoked(set(revoked))  # noqa: SLF001 - the loop's own listener

    async def on_partitions_assigned(self, assigned):  # noqa: ANN001
        await self.loop._assigned(set(assigned))  # noqa: SLF001


def _leave_group_even_in_generation_zero(consumer: AIOKafkaConsumer) -> None:
    """aiokafka sends LeaveGroup on stop only when the generation is > 0, but the embedded broker (tansu) starts
    groups at generation 0: without a leave, the next member's join waits out the old member's session
    (measured with the alert dispatcher: 18.8 s instead of 5.7 s). The request carries only group and member id,
    so the generation we report does not matter; it is read only by aiokafka's own leave check."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and getattr(coordinator, "generation", None) == 0 and coordinator.member_id:
        coordinator.generation = 1


def _stop_without_leaving(consumer: AIOKafkaConsumer) -> None:
    """No LeaveGroup on stop: the group drops the member at its session timeout. For members stopped together
    (`collect kafka --processes N` on Ctrl-C): on the embedded broker (tansu) two LeaveGroups a few ms apart, the second
    during the rebalance the first began, left the group stuck for the next run (its members rejoined every ~6 s and
    were never assigned: 1 of 3-4 restarts, docs/rounds/collectors.md multi29); members that vanish were never stuck (5 of
    5), the next run assigned after ~9 s (4 s session). aiokafka leaves only when its generation is > 0."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        coordinator.generation = -1
