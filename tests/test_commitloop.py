"""The shared commit loop (tokenmeter/commitloop.py) against the real broker: a crash in the processing function
commits nothing and the batch comes again; a produced record the broker refuses is not committed; a revoke in the
middle of a batch commits no offsets of partitions no longer owned. Each test uses its own topic and group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from tokenmeter.commitloop import CommitLoop, await_acks

pytestmark = pytest.mark.slow(seconds=6)  # rough seconds: longest files first (tests/suite_order.py)
PARTITIONS = 4


async def _topic_with_records(bootstrap: str, count: int) -> str:
    name = f"loop-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(count):
            await producer.send_and_wait(name, b"%d" % i, partition=i % PARTITIONS)
    finally:
        await producer.stop()
    return name


def _consumer(bootstrap: str, group: str, **options) -> AIOKafkaConsumer:
    # the run's session timeout (4 s, tests/conftest.py), not aiokafka's 10 s: the embedded broker answers a join
    # after half of it and the revoke test's rebalance after about twice it (docs/testing.md)
    session_ms = round(float(os.environ.get("TOKENMETER_KAFKA_SESSION_TIMEOUT_SECONDS", "10")) * 1000)
    return AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                            auto_offset_reset="earliest", session_timeout_ms=session_ms, heartbeat_interval_ms=300,
                            fetch_max_wait_ms=100, **options)


async def _committed(bootstrap: str, topic: str, group: str) -> dict[int, int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
    finally:
        await consumer.stop()


async def _wait(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class _Assigned(CommitLoop):
    """A loop whose consumer assigns every partition itself (no group join: seconds faster on the embedded broker);
    the group still stores and serves the committed offsets."""

    def __init__(self, bootstrap: str, group: str, topic: str, **options):
        super().__init__(_consumer(bootstrap, group), name="test", **options)
        self.topic = topic

    async def __aenter__(self) -> "_Assigned":
        await super().__aenter__()
        self.consumer.assign([TopicPartition(self.topic, p) for p in range(PARTITIONS)])
        return self


class Crash(Exception):
    pass


def test_a_crash_in_processing_commits_nothing_and_the_batch_comes_again(kafka_bootstrap):
    async def scenario():
        topic = await _topic_with_records(kafka_bootstrap, 8)
        group = f"g-{topic}"
        seen: list[list[bytes]] = []

        async def crash(batch):
            if not len(batch):
                return None
            seen.append(sorted(r.value for r in batch))
            raise Crash("the role's bug")

        async def succeed(batch):
            if len(batch):
                seen.append(sorted(r.value for r in batch))
                stop.set()

        stop = asyncio.Event()
        async with _Assigned(kafka_bootstrap, group, topic) as loop:
            with pytest.raises(Crash):
                await asyncio.wait_for(loop.run(crash, stop), 20)
            assert loop.stats.failed_batches == 1 and loop.stats.commits == 0
            assert set((await _committed(kafka_bootstrap, topic, group)).values()) == {None}
            await asyncio.wait_for(loop.run(succeed, stop), 20)  # the same consumer, rewound to the batch's start
        assert seen[1][:len(seen[0])] == seen[0] or set(seen[0]) <= set(seen[1])
        committed = await _committed(kafka_bootstrap, topic, group)
        assert sum(o or 0 for o in committed.values()) == len(seen[1])

        # After a crash that ends the process, a new member of the group gets the batch too.
        group2, again = f"g2-{topic}", []
        async with _Assigned(kafka_bootstrap, group2, topic) as loop:
            with pytest.raises(Crash):
                await asyncio.wait_for(loop.run(crash, asyncio.Event()), 20)
        stop = asyncio.Event()

        async def collect(batch):
            again.extend(r.value for r in batch)
            if len(again) >= 8:
                stop.set()

        async with _Assigned(kafka_bootstrap, group2, topic) as loop:
            await asyncio.wait_for(loop.run(collect, stop), 30)
        assert set(seen[-1]) <= set(again) and sorted(again) == sorted(b"%d" % i for i in range(8))

    asyncio.run(scenario())


def test_a_record_the_broker_refuses_leaves_the_batch_uncommitted(kafka_bootstrap):
    """The embedded broker accepts oversized records, unknown partitions' topics and odd timestamps alike; what it
    refuses is a topic name Kafka does not allow (UNKNOWN_TOPIC_OR_PARTITION after its metadata check)."""
    async def scenario():
        topic = await _topic_with_records(kafka_bootstrap, 4)
        group = f"g-{topic}"
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, request_timeout_ms=1000)
        await producer.start()
        sent_good = []

        async def refused(batch):
            if not len(batch):
                return None
            await batch.send(topic, b"an output the broker takes")
            sent_good.append(True)
            await batch.send("not a valid topic!", b"an output the broker refuses")
            return None

        try:
            async with _Assigned(kafka_bootstrap, group, topic, producer=producer) as loop:
                with pytest.raises(KafkaError):
                    await asyncio.wait_for(loop.run(refused, asyncio.Event()), 30)
                assert sent_good and loop.stats.commits == 0 and loop.stats.failed_batches == 1
        finally:
            await producer.stop()
        assert set((await _committed(kafka_bootstrap, topic, group)).values()) == {None}

    asyncio.run(scenario())


def test_a_revoke_mid_batch_commits_nothing_for_partitions_no_longer_owned(kafka_bootstrap):
    async def scenario():
        topic = await _topic_with_records(kafka_bootstrap, 40)
        group = f"g-{topic}"
        revoked: set[TopicPartition] = set()
        first = CommitLoop(_consumer(kafka_bootstrap, group), topics=[topic], name="first",
                           on_revoked=revoked.update)
        second_consumer = _consumer(kafka_bootstrap, group)
        second = CommitLoop(second_consumer, topics=[topic], name="second")
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        in_flight: dict[TopicPartition, int] = {}
        second_read: list[tuple[int, int]] = []
        second_run: list[asyncio.Task] = []

        async def read_second(batch):
            second_read.extend((r.partition, r.offset) for r in batch)
            return {}  # the second member commits nothing: every committed offset is the first member's

        async def slow_first(batch):
            if not len(batch) or in_flight:
                stop_first.set()
                return {}
            in_flight.update(batch.next_offsets())
            await second.__aenter__()  # a second member joins while this batch is being processed
            second_run.append(asyncio.create_task(second.run(read_second, stop_second)))
            await _wait(lambda: revoked and second_consumer.assignment(), "the rebalance")
            return None  # the batch finishes; its revoked partitions must not be committed

        try:
            async with first:
                await asyncio.wait_for(first.run(slow_first, stop_first), 60)
                committed = await _committed(kafka_bootstrap, topic, group)
                taken = second_consumer.assignment()
                assert set(in_flight) <= revoked  # an eager rebalance revokes every partition, then assigns anew
                assert taken  # some of the batch's partitions are the second member's now, some may be back here
                # the rule: the finished batch commits nothing of a partition revoked meanwhile, even one given back
                assert {tp: committed[tp.partition] for tp in in_flight} == {tp: None for tp in in_flight}
                assert first.stats.dropped_revoked >= len(in_flight)
                # ...and never attempts a commit the client refuses (aiokafka: IllegalStateError "not assigned")
                assert first.stats.commit_failures == 0
            # the second member, owning every partition once the first left, reads the batch's records again
            await _wait(lambda: len(second_read) >= 40, "the re-reads", 60)
            for tp, end in in_flight.items():
                assert (tp.partition, end - 1) in second_read, f"{tp}: the batch's last record was not read again"
        finally:
            stop_second.set()
            for task in second_run:
                await asyncio.wait_for(task, 30)
            await second.__aexit__(None, None, None)

    asyncio.run(scenario())


def test_finish_before_revoke_commits_the_batch_in_flight_and_the_new_owner_starts_after_it(kafka_bootstrap):
    # The collectors' bridge's variant of protocol 6: the revocation waits for the batch being processed, whose
    # commit then goes through (the partitions are still ours while the listener runs); the next owner starts there.
    async def scenario():
        topic = await _topic_with_records(kafka_bootstrap, 40)
        group = f"g-{topic}"
        first = CommitLoop(_consumer(kafka_bootstrap, group), topics=[topic], name="first", max_records=10,
                           finish_before_revoke=True)
        second_consumer = _consumer(kafka_bootstrap, group)
        second = CommitLoop(second_consumer, topics=[topic], name="second")
        stop_first, stop_second = asyncio.Event(), asyncio.Event()
        in_flight: dict[TopicPartition, int] = {}
        second_read: list[tuple[int, int]] = []
        second_run: list[asyncio.Task] = []

        async def read_second(batch):
            second_read.extend((r.partition, r.offset) for r in batch)
            return None

        async def slow_first(batch):
            if not len(batch) or in_flight:
                stop_first.set()
                return {}
            in_flight.update(batch.next_offsets())
            await second.__aenter__()  # a second member joins while this batch is being processed
            second_run.append(asyncio.create_task(second.run(read_second, stop_second)))
            await _wait(lambda: first._revocations, "the revocation to begin (it now waits for this batch)")
            return None

        try:
            async with first:
                await asyncio.wait_for(first.run(slow_first, stop_first), 60)
                committed = await _committed(kafka_bootstrap, topic, group)
                assert {tp: committed[tp.partition] for tp in in_flight} == in_flight
                assert first.stats.commit_failures == 0 and first.stats.dropped_revoked == 0
            await _wait(lambda: len(second_read) >= 40 - sum(in_flight.values()), "the rest read", 60)
            again = [(p, o) for p, o in second_read if TopicPartition(topic, p) in in_flight
                     and o < in_flight[TopicPartition(topic, p)]]
            assert not again, f"the second member read the committed batch again: {again}"
        finally:
            stop_second.set()
            for task in second_run:
                await asyncio.wait_for(task, 30)
            await second.__aexit__(None, None, None)

    asyncio.run(scenario())


def test_an_output_never_acknowledged_leaves_the_batch_uncommitted(kafka_bootstrap):
    """Outputs go to another cluster (as the Kafka bridge's do) whose broker dies after the record is handed to the
    producer: the acknowledgement fails, and the input batch stays uncommitted."""
    from app.broker import embedded_broker
    from tokenmeter.settings import free_port

    async def scenario(output_bootstrap: str, kill_output_broker) -> None:
        topic = await _topic_with_records(kafka_bootstrap, 4)
        group = f"g-{topic}"
        producer = AIOKafkaProducer(bootstrap_servers=output_bootstrap, request_timeout_ms=1000, linger_ms=50)
        await producer.start()
        handed_over = []

        async def send_then_lose_the_broker(batch):
            if not len(batch):
                return None
            await batch.send("tokenmeter.usage", b"an output whose acknowledgement never comes")
            handed_over.append(True)  # send() returned: the record waits in the producer for its ack
            kill_output_broker()
            return None

        try:
            async with _Assigned(kafka_bootstrap, group, topic, producer=producer) as loop:
                with pytest.raises(KafkaError):
                    await asyncio.wait_for(loop.run(send_then_lose_the_broker, asyncio.Event()), 60)
                assert handed_over and loop.stats.commits == 0 and loop.stats.failed_batches == 1
        finally:
            await asyncio.wait_for(producer.stop(), 30)
        assert set((await _committed(kafka_bootstrap, topic, group)).values()) == {None}

    with contextlib.ExitStack() as stack:
        output = stack.enter_context(embedded_broker("127.0.0.1", free_port(), partitions=1))
        asyncio.run(scenario(output, stack.close))


def test_await_acks_waits_for_every_output_before_raising_the_first_refusal():
    """Step 3 for both drivers (the Faust worker's batch too): a refusal is raised only once every other send has
    its answer, so a retry never starts while outputs of the failed attempt are still in flight."""

    async def scenario():
        loop = asyncio.get_running_loop()
        refused, in_flight = loop.create_future(), loop.create_future()
        refused.set_exception(KafkaError("refused"))
        waiting = asyncio.create_task(await_acks([refused, in_flight]))
        for _ in range(20):  # event-loop turns enough for the refusal to reach await_acks
            await asyncio.sleep(0)
        assert not waiting.done()  # the other output has no answer yet
        in_flight.set_result("stored")
        with pytest.raises(KafkaError, match="refused"):
            await waiting
        await await_acks([])  # nothing sent: nothing to wait for

    asyncio.run(scenario())


def test_preparing_ahead_keeps_processing_and_commits_in_order(kafka_bootstrap):
    """Protocol 8: `prepare(N+1)` runs while N's step is in flight, `process` sees the batches in fetch order, one at
    a time, each prepared exactly once (or not at all). And a batch that stops unfinished (offsets not committed, as
    the bridge's does when stopped while Kafka is down) is not overtaken: the batch prepared behind it is neither
    processed nor committed, else its commit would skip the unfinished one's records."""

    async def scenario():
        topic = await _topic_with_records(kafka_bootstrap, 40)
        group = f"g-{topic}"
        order: list[tuple[str, int]] = []
        processed: list[list[bytes]] = []
        in_step = 0

        async def prepare(batch):
            if len(batch):
                order.append(("prepare", in_step))
                batch.prepared = [r.value for r in batch]
                await asyncio.sleep(0.01)

        async def process(batch):
            nonlocal in_step
            if not len(batch):
                return None
            in_step += 1
            try:
                assert batch.prepared is None or batch.prepared == [r.value for r in batch]
                await asyncio.sleep(0.05)  # acks, commit: the next batch is prepared meanwhile
                processed.append(sorted(r.value for r in batch))
                if len(processed) == 3:
                    stop.set()
                    return {}  # stopped unfinished: nothing of this batch committed
                return None
            finally:
                in_step -= 1

        stop = asyncio.Event()
        async with _Assigned(kafka_bootstrap, group, topic, max_records=5) as loop:
            await asyncio.wait_for(loop.run(process, stop, prepare=prepare), 30)
        assert len(processed) == 3
        assert any(busy for _, busy in order), "no batch was prepared while another was in flight"
        committed = await _committed(kafka_bootstrap, topic, group)
        assert sum(o or 0 for o in committed.values()) == len(processed[0]) + len(processed[1])

    asyncio.run(scenario())
