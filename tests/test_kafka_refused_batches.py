"""A compressed batch over the inflation bound (tokenmeter/kafka_inflate.py) between two good batches, on the real
broker: each kind of reader stays up, processes every good record once, writes ONE dead letter for the refused
batch (reason, first and last offset, codec, sizes; no payload), counts it, and commits past it only after the
letter is acknowledged, so a restart neither reads nor dead-letters it again (inflate28, tokenmeter/kafka_refused.py).
Before, the consumer raised InflateRefused on it: the reader stopped, and every restart stopped on it again."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka_support import SESSION_TIMEOUT_MS, create_topic

from streams.topic_reader import read_topic
from tokenmeter import topics
from tokenmeter.commitloop import CommitLoop

pytestmark = pytest.mark.slow(seconds=25)  # rough seconds: longest files first (tests/suite_order.py)

BOMB = bytes(4 << 20)  # 4 MiB of zeros: gzip ~4 KB on the wire (~1,000x, over the 64x bound)
REASON = "compressed record batch refused: gzip batch"


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """A bomb on tokenmeter.usage and the refused batches' dead letters stay on a broker of this file's own."""
    return own_broker


async def _send_batch(bootstrap: str, topic: str, values: list[bytes], codec: str | None,
                      key: bytes | None = None, partition: int | None = 0) -> list[int]:
    """`values` as one record batch (one producer, one linger); their offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=50,
                                max_request_size=32 << 20, max_batch_size=32 << 20)
    await producer.start()
    try:
        sent = await asyncio.gather(*[await producer.send(topic, value, key=key, partition=partition)
                                      for value in values])
        return [meta.offset for meta in sent]
    finally:
        await producer.stop()


async def _good_bomb_good(bootstrap: str, topic: str, first: list[bytes], second: list[bytes],
                          key: bytes | None = None, partition: int | None = 0, bomb: tuple[bytes, ...] = (BOMB,)):
    """A good gzip batch, the bomb (a gzip batch of its own), a good uncompressed batch; the bomb's (first) offset."""
    await _send_batch(bootstrap, topic, first, "gzip", key, partition)
    offsets = await _send_batch(bootstrap, topic, list(bomb), "gzip", key, partition)
    await _send_batch(bootstrap, topic, second, None, key, partition)
    return offsets[0]


def _letters(bootstrap: str, topic: str) -> list[dict]:
    records = asyncio.run(read_topic(bootstrap, topics.DEADLETTER))
    return [letter for letter in (orjson.loads(r.value) for r in records) if letter.get("topic") == topic]


def _assert_the_letter(letters: list[dict], topic: str, bomb: int, stage: str) -> None:
    [letter] = [x for x in letters if x["reason"].startswith(REASON)]
    assert (letter["topic"], letter["partition"], letter["offset"]) == (topic, letter["partition"], bomb)
    assert (letter["first_offset"], letter["last_offset"], letter["codec"]) == (bomb, bomb, "gzip")
    assert 0 < letter["compressed_bytes"] < 10_000 and letter["bound_bytes"] == 64 * letter["compressed_bytes"]
    assert "inflates beyond" in letter["reason"] and letter["stage"] == stage
    assert letter["payload"] == "" and letter["payload_bytes"] == 0  # no payload bytes: they cannot be redacted


def test_a_consumer_gets_one_marker_in_place_of_a_refused_batch_and_reads_on(kafka_bootstrap):
    """aiokafka itself: the good records before the bomb in the same fetch are not lost, the position moves past
    the batch, the records after it come. The refused batch holds two records: one marker, at its last offset."""
    topic = f"refused-raw-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await create_topic(kafka_bootstrap, topic, 1)
        bomb = await _good_bomb_good(kafka_bootstrap, topic, [b"a", b"b"], [b"c"], bomb=(BOMB, b"hidden"))
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            got = []
            for _ in range(40):
                got += (await consumer.getmany(tp, timeout_ms=200)).get(tp, [])
                if len(got) >= 4:
                    break
            return bomb, got, await consumer.position(tp)
        finally:
            await consumer.stop()

    bomb, got, position = asyncio.run(scenario())
    assert [(r.offset, r.value) for r in got] == [(0, b"a"), (1, b"b"), (bomb + 1, None), (bomb + 2, b"c")]
    marker = got[2]
    [(name, about)] = marker.headers
    assert marker.key is None and name == "tokenmeter-refused-batch"
    about = orjson.loads(about)
    assert (about["first_offset"], about["last_offset"], about["codec"]) == (bomb, bomb + 1, "gzip")
    assert about["bound_bytes"] == 64 * about["compressed_bytes"] and "inflates beyond" in about["reason"]
    assert position == bomb + 3


def test_the_commit_loop_dead_letters_a_refused_batch_commits_past_it_and_a_restart_skips_it(kafka_bootstrap):
    topic = f"refused-loop-{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"

    async def run_loop(until: int) -> tuple[list[bytes], int, dict]:
        """One reader's life: runs until `until` records (of a value) are processed and a commit reached the end."""
        seen: list[bytes] = []
        end = (await _end(kafka_bootstrap, topic))
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", fetch_max_wait_ms=100)
        loop = CommitLoop(consumer, producer=producer, name="test")
        committed: dict = {}
        stop = asyncio.Event()

        async def process(batch):
            seen.extend(r.value for r in batch)
            assert all(r.value is not None for r in batch)  # the role never sees a marker

        def on_committed(offsets):
            committed.update(offsets)
            if len(seen) >= until and committed.get(TopicPartition(topic, 0)) == end:
                stop.set()

        loop.on_committed = on_committed
        await producer.start()
        try:
            async with loop:
                consumer.assign([TopicPartition(topic, 0)])
                await asyncio.wait_for(loop.run(process, stop), 60)
        finally:
            await producer.stop()
        return seen, loop.stats.refused_batches, committed

    async def scenario():
        await create_topic(kafka_bootstrap, topic, 1)
        bomb = await _good_bomb_good(kafka_bootstrap, topic, [b"1", b"2"], [b"3"])
        first = await run_loop(until=3)
        await _send_batch(kafka_bootstrap, topic, [b"4"], None)
        second = await run_loop(until=1)  # a restart from the committed offsets
        return bomb, first, second

    bomb, (seen, refused, committed), (seen_again, refused_again, _) = asyncio.run(scenario())
    assert seen == [b"1", b"2", b"3"] and refused == 1
    assert committed[TopicPartition(topic, 0)] == bomb + 2
    assert seen_again == [b"4"] and refused_again == 0
    _assert_the_letter(_letters(kafka_bootstrap, topic), topic, bomb, "test")


async def _end(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


def test_the_kafka_bridge_dead_letters_a_refused_batch_and_a_restart_skips_it(kafka_bootstrap, tmp_path):
    from collectors.bench import gateway_records
    from collectors.kafka_bridge import KafkaBridge
    from collectors.sink import KafkaSink

    records, _ = gateway_records("litellm", 3)  # one call a record
    topic = f"refused-bridge-{uuid.uuid4().hex[:8]}"

    async def bridge_once():
        sink = KafkaSink(kafka_bootstrap, "collect:kafka")
        bridge = KafkaBridge(kafka_bootstrap, topic, "litellm", f"bridge-{topic}", sink, from_beginning=True,
                             exit_when_idle=1.5, state_path=tmp_path / "state.json",
                             group_timeouts={"session_timeout_ms": SESSION_TIMEOUT_MS,
                                             "heartbeat_interval_ms": SESSION_TIMEOUT_MS // 3})
        await asyncio.wait_for(bridge.run(asyncio.Event()), 90)
        return sink.counters

    async def scenario():
        await create_topic(kafka_bootstrap, topic, 1)
        bomb = await _good_bomb_good(kafka_bootstrap, topic, records[:2], records[2:])
        return bomb, await bridge_once(), await bridge_once()

    bomb, first, again = asyncio.run(scenario())
    assert (first.read, first.written, first.rejected, first.refused_batches) == (4, 3, 1, 1)
    assert (again.read, again.written, again.rejected, again.refused_batches) == (0, 0, 0, 0)
    _assert_the_letter(_letters(kafka_bootstrap, topic), topic, bomb, "collect:kafka")


def test_the_worker_dead_letters_a_refused_usage_batch_prices_the_rest_once_and_a_restart_skips_it(
        kafka_bootstrap, tmp_path):
    """The one process-level test: Faust's consumer (aiokafka underneath) in `tokenmeter worker`."""
    from tests.streams.test_worker_poison import event, health, priced_ids, start_worker, stop, wait_for
    from tokenmeter.settings import free_port

    team = f"refused-{uuid.uuid4().hex[:8]}"
    key = f"team:{team}".encode()
    first = [orjson.dumps([event(team, 1), event(team, 2)]), orjson.dumps([event(team, 3)])]
    second = [orjson.dumps([event(team, 4)])]
    later = [orjson.dumps([event(team, 5)])]
    port = free_port()

    def metric(name: str) -> int:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
        return int(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))

    bomb = asyncio.run(_good_bomb_good(kafka_bootstrap, topics.USAGE, first, second, key=key, partition=None))
    worker = start_worker(kafka_bootstrap, tmp_path, port)
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        expected = {f"{team}-{n}" for n in (1, 2, 3, 4)}
        wait_for(lambda: expected <= set(priced_ids(kafka_bootstrap, team)), what="the good events priced")
        wait_for(lambda: metric("tokenmeter_worker_refused_batches_total") == 1, what="the refused batch counted")
        assert health(port)[0] == 200 and worker.poll() is None
    finally:
        stop(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    worker = start_worker(kafka_bootstrap, tmp_path, port)  # a restart: the refused batch is behind the commit
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health after the restart")
        asyncio.run(_send_batch(kafka_bootstrap, topics.USAGE, later, None, key=key, partition=None))
        wait_for(lambda: f"{team}-5" in priced_ids(kafka_bootstrap, team), what="the next event priced")
        assert metric("tokenmeter_worker_refused_batches_total") == 0
    finally:
        stop(worker)
        print((tmp_path / "worker.log").read_text()[-3000:])
    ids = priced_ids(kafka_bootstrap, team)
    assert sorted(ids) == sorted(f"{team}-{n}" for n in (1, 2, 3, 4, 5))  # each exactly once
    _assert_the_letter(_letters(kafka_bootstrap, topics.USAGE), topics.USAGE, bomb, "worker")


def test_read_to_end_logs_and_skips_a_refused_batch(kafka_bootstrap, caplog):
    """The state readers (budgets, mutes, acknowledgements) and the topic listings read through `read_to_end`
    and write no dead letters: a refused batch's marker (no value: a tombstone to a state table) never reaches
    their callback; the refusal is logged as an error with its offsets."""
    from tokenmeter.kafka_topics import read_to_end

    topic = f"refused-read-{uuid.uuid4().hex[:8]}"

    async def scenario():
        await create_topic(kafka_bootstrap, topic, 1)
        bomb = await _good_bomb_good(kafka_bootstrap, topic, [b"a", b"b"], [b"c"])
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            got: list = []
            await read_to_end(consumer, [TopicPartition(topic, 0)], got.append, timeout=30)
            return bomb, got
        finally:
            await consumer.stop()

    with caplog.at_level("ERROR", logger="tokenmeter.kafka_refused"):
        bomb, got = asyncio.run(scenario())
    assert [(r.offset, r.value) for r in got] == [(0, b"a"), (1, b"b"), (bomb + 1, b"c")]
    assert any(f"{topic}[0] offsets {bomb}..{bomb}" in r.getMessage() and "refused" in r.getMessage()
               for r in caplog.records), caplog.records
