"""tests/kafka_support.py's TopicTail, which polling tests use instead of reading a whole topic each poll: read on
while a producer writes, it holds every record of the topic once, as a whole read after the writes does."""

from __future__ import annotations

import asyncio
import threading
import uuid

from kafka_support import TopicTail, create_topic, produce_values
from streams.topic_reader import read_topic


def test_a_tail_read_on_during_writes_holds_each_record_once(kafka_bootstrap):
    topic = f"test-tail-{uuid.uuid4().hex[:8]}"
    asyncio.run(create_topic(kafka_bootstrap, topic, 4))
    done = threading.Event()

    def write() -> None:
        for batch in range(12):
            asyncio.run(produce_values(kafka_bootstrap, topic, [f"{batch}-{i}".encode() for i in range(9)], keyed=True))
        done.set()

    writer = threading.Thread(target=write)
    with TopicTail(kafka_bootstrap, topic) as tail:
        writer.start()
        reads = 0
        while not done.is_set() or reads < 2:
            tail.read()
            reads += 1
        writer.join(60)
        tail.read()
        seen = [(r.partition, r.offset, r.value) for r in tail.records]
    whole = [(r.partition, r.offset, r.value) for r in asyncio.run(read_topic(kafka_bootstrap, topic))]
    assert len(whole) == 12 * 9
    assert sorted(seen) == sorted(whole)  # none missing, none twice
