"""The worker's fixes (streams/faust_patches.py) for Faust + aiokafka record losses around a rebalance (the first two against the real broker).

Faust seeks every partition back to its committed offset after a rebalance, but aiokafka skips partitions with no
committed offset, so their first records were lost: the worker rewinds those stream partitions to their beginning.
Faust then resumes flow control, which clears the agents' queues: the worker seeks back to what was still queued.
(Two workers joining lost a budget's first spend and a team's first usage record.)"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from kafka_support import create_topic, produce_values

from streams.gaps import SEEK_POSITIONS
from streams.faust_patches import _rewind_uncommitted_partitions


class _ConsumerThreadStandIn:
    """What `AIOKafkaConsumerThread.seek_to_committed` touches of Faust's consumer thread, around a real consumer."""

    def __init__(self, consumer: AIOKafkaConsumer, acking_topics: set[str]):
        self._consumer = consumer
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: topic in acking_topics))

    def _ensure_consumer(self) -> AIOKafkaConsumer:
        return self._consumer

    async def call_thread(self, fun, *args):  # noqa: ANN001
        return await fun(*args)


async def _scenario(bootstrap: str, acking: bool) -> dict[int, int]:
    topic = f"rewind-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions=2)
    for partition in (0, 1):
        await produce_values(bootstrap, topic, [b"r0", b"r1", b"r2"], partition=partition)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=f"g-{topic}", enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(tps)
        await consumer.commit({tps[1]: OffsetAndMetadata(2, "")})  # partition 1 committed, partition 0 never
        await consumer.seek_to_beginning(tps[0])
        seen = 0
        while seen < 4:  # partition 0 fetched (and, in Faust, dropped when flow stopped), partition 1 from 2
            seen += sum(len(v) for v in (await consumer.getmany(*tps, timeout_ms=1000)).values())
        assert [await consumer.position(tp) for tp in tps] == [3, 3]
        await AIOKafkaConsumerThread.seek_to_committed(_ConsumerThreadStandIn(consumer, {topic} if acking else set()))
        # the gap guard (streams/gaps.py) expects each partition's records to resume where it was seeked to
        expected = {1: 2} | ({0: 0} if acking else {})
        assert {p: SEEK_POSITIONS.get((topic, p)) for p in expected} == expected
        assert ((topic, 0) in SEEK_POSITIONS) == acking  # changelog-like partitions get no resume position
        return {tp.partition: await consumer.position(tp) for tp in tps}
    finally:
        await consumer.stop()


@pytest.fixture(scope="module", autouse=True)
def _patched():
    _rewind_uncommitted_partitions()


def test_partition_without_committed_offset_is_rewound_to_its_beginning(kafka_bootstrap):
    assert asyncio.run(_scenario(kafka_bootstrap, acking=True)) == {0: 0, 1: 2}


def test_changelog_like_partitions_are_left_alone(kafka_bootstrap):
    # acks disabled (Faust's table changelogs): recovery owns their positions
    assert asyncio.run(_scenario(kafka_bootstrap, acking=False)) == {0: 3, 1: 2}


def test_records_still_queued_when_flow_resumes_are_read_again(monkeypatch):
    """Faust's recovery seeks back, then resumes flow control, which clears the agents' queues. The worker notes the
    lowest queued offset per assigned stream partition first and seeks back there, so those records come again."""
    from faust.types import TP

    from streams.worker import create_worker_app
    from tokenmeter import topics
    from tokenmeter.settings import Settings

    app = create_worker_app(Settings())
    usage, changelog, revoked = TP(topics.USAGE, 2), TP("tokenmeter-worker-x-changelog", 0), TP(topics.USAGE, 3)
    seeks = []
    consumer = app.consumer
    monkeypatch.setattr(consumer, "assignment", lambda: {usage, changelog})
    monkeypatch.setattr(consumer, "_thread", SimpleNamespace(seek=lambda tp, offset: seeks.append((tp, offset))))
    # a started worker acks its agents' topics (the conductor fills this when it subscribes); changelogs are not acked
    monkeypatch.setattr(app.topics, "acks_enabled_for", lambda topic: topic == topics.USAGE)
    queue = app.FlowControlQueue(maxsize=100, clear_on_resume=True)  # like an agent's channel queue
    for tp, offset in ((usage, 7), (usage, 5), (changelog, 3), (revoked, 9)):
        queue.put_nowait(SimpleNamespace(message=SimpleNamespace(tp=tp, offset=offset)))
    app.flow_control.resume()
    assert queue.qsize() == 0  # Faust's clearing still happens
    assert seeks == [(usage, 5)]  # not the changelog (acks off), not a partition no longer assigned
    assert consumer._read_offset[usage] == 5 and SEEK_POSITIONS[(topics.USAGE, 2)] == 5
    SEEK_POSITIONS.pop((topics.USAGE, 2), None)
