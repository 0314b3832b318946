"""The Kafka bridge lets the event loop run while it converts a batch ahead (`KafkaBridge._prepare`, coll26).

While batch N+1 converts, the loop has other work: aiokafka's fetcher sends the request for N+2 (it sends one only
once `getmany` has taken the buffered records, and only from its own task), and batch N's offsets request, produce,
acknowledgements and commit go on. A Kong batch (one partition's 4 MB fetch, ~80 records of 50 entries) used to be
converted in one slice of 250 records: none of that ran until the whole batch was converted, so in `tokenmeter bench`
the next fetch went out only after the conversion and the bridge then waited for it (docs/rounds/collectors.md, coll26).
A stand-in task counts the loop's turns the way those tasks would get them."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from kafka_support import create_topic

from collectors.bench import _TimedBridge, gateway_records
from collectors.kafka_bridge import KafkaBridge
from collectors.sink import KafkaSink
from tokenmeter.commitloop import Batch
from tokenmeter.settings import Settings


class _CountingBridge(KafkaBridge):
    """The real bridge; notes how many turns the other task had when each record's conversion began."""

    def __init__(self, *args, turns: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.turns = turns
        self.seen: list[int] = []

    def _convert_one(self, tp, message, events, letters) -> None:
        self.seen.append(self.turns[0])
        super()._convert_one(tp, message, events, letters)


def test_preparing_a_kong_batch_gives_the_loop_turns_first_and_throughout(kafka_bootstrap):
    records, _ = gateway_records("kong", 40 * 50)  # 40 arrays of 50 entries: well over a few ms to convert
    topic = f"kong-turns-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    batch = Batch(records={tp: [ConsumerRecord(topic, 0, offset, 0, 0, None, value, None, 0, len(value), ())
                                for offset, value in enumerate(records)]})

    async def scenario() -> tuple[list[int], int, int]:
        turns = [0]
        sink = KafkaSink(kafka_bootstrap, "collect:kafka")
        bridge = _CountingBridge(kafka_bootstrap, topic, "kong", f"bridge-{topic}", sink, turns=turns)
        bridge._recovery_checked = True  # as after the first batch: no killed run's batch in doubt
        done = asyncio.Event()

        async def other_task() -> None:
            while not done.is_set():
                turns[0] += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(other_task())
        await asyncio.sleep(0)  # the stand-in is ready and waiting for its turn, as the fetcher is
        start = turns[0]
        try:
            await bridge._prepare(batch)
        finally:
            done.set()
            await ticker
            for pause, early_ends in bridge._ahead.items():  # as `KafkaBridge.run` ends, with the answer awaited
                pause.end()
                await asyncio.gather(early_ends, return_exceptions=True)
            await bridge.guard.stop()
            await sink.stop()
        events, letters, _, _ = batch.prepared
        assert (len(events), len(letters)) == (40 * 50, 0)
        return [seen - start for seen in bridge.seen], turns[0] - start, len(events)

    seen, total, _ = asyncio.run(scenario())
    assert len(seen) == 40
    # two turns before the first record: the fetcher's wake-up, then the fetch request's own task
    assert seen[0] >= 2, f"the loop stood still until the conversion began: {seen[:3]}"
    # and turns while the batch converts, not only after it
    assert seen[-1] > seen[0], f"no turn between the first and the last record: {seen[0]} .. {seen[-1]} of {total}"


class _NotingBridge(_TimedBridge):
    """The bench's bridge; notes, per processed batch, its records and whether it had been converted ahead."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.converted_ahead: list[tuple[int, bool]] = []

    async def _process(self, batch, consumer, stop):
        if len(batch):
            self.converted_ahead.append((len(batch), batch.prepared is not None))
        return await super()._process(batch, consumer, stop)


def test_the_bench_converts_the_second_batch_ahead_as_the_bridge_does_unheld(kafka_bootstrap, tmp_path):
    # `tokenmeter bench` holds each bridge at a door with its first batch fetched. 10 records in one record batch,
    # bridge batches of 5: the first fetch brings all 10, so the second batch is in the consumer's buffer at the
    # door. With the door inside the first batch's recovery check, the loop took the second batch meanwhile and,
    # the recovery not yet settled, did not convert it ahead: [(5, False), (5, False)]; an unheld bridge does.
    records, _ = gateway_records("kong", 10 * 50)
    records = [orjson.dumps(orjson.loads(value)[:2]) for value in records]  # arrays of 2 entries
    topic = f"kong-ahead-{uuid.uuid4().hex[:8]}"
    settings = Settings(kafka_bootstrap=kafka_bootstrap)

    async def scenario() -> list[tuple[int, bool]]:
        await create_topic(kafka_bootstrap, topic, 1)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=100, max_batch_size=1_000_000)
        await producer.start()
        try:  # one record batch: the broker hands all 10 to the first fetch
            await asyncio.gather(*[await producer.send(topic, value, partition=0) for value in records])
        finally:
            await producer.stop()
        sink = KafkaSink(kafka_bootstrap, "collect:kafka")
        bridge = _NotingBridge(kafka_bootstrap, topic, "kong", f"bridge-{topic}", sink, from_beginning=True,
                               batch_records=5, state_path=tmp_path / "state.json",
                               group_timeouts=settings.group_timeouts)
        stop = asyncio.Event()
        running = asyncio.create_task(bridge.run(stop))
        try:
            await asyncio.wait_for(bridge.at_door.wait(), 60)
            bridge.go.set()
            deadline = asyncio.get_running_loop().time() + 60
            while sink.counters.written < 20 and not running.done():  # both batches acknowledged
                assert asyncio.get_running_loop().time() < deadline, sink.counters.summary()
                await asyncio.sleep(0.01)
        finally:
            stop.set()
            bridge.abandoned = not bridge.go.is_set()
            bridge.go.set()
            await asyncio.gather(running, return_exceptions=True)
        assert (sink.counters.read, sink.counters.written, sink.counters.rejected) == (10, 20, 0)
        return bridge.converted_ahead

    assert asyncio.run(scenario()) == [(5, False), (5, True)]
