"""OffsetGaps: records an agent never received are found by their offsets and read again from the real broker."""

from __future__ import annotations

import asyncio
import uuid

from kafka_support import create_topic, produce_values

from streams.gaps import SEEK_POSITIONS, OffsetGaps


def test_jumps_after_the_seek_position_and_inside_a_batch_are_gaps():
    gaps = OffsetGaps("t-find")
    SEEK_POSITIONS[("t-find", 0)] = 5
    try:
        assert gaps.find([(0, 6), (0, 7)]) == [(0, 5, 6)]  # offset 5 never arrived
        assert gaps.find([(0, 8), (0, 11)]) == [(0, 9, 11)]
        assert gaps.find([(0, 9), (0, 12)]) == []  # redelivered after a seek back: not a gap, not a rewind
        assert gaps.find([(1, 40), (1, 41)]) == []  # no committed offset: the first record is the start
        gaps.forget()  # reassigned: partition 0 resumes from its seek position again
        assert gaps.find([(0, 5)]) == []
    finally:
        SEEK_POSITIONS.pop(("t-find", 0), None)


def test_a_refused_batchs_marker_stands_for_all_its_offsets():
    """A compressed batch refused by the inflation bound reaches the worker as one marker record at its last offset
    (tokenmeter/kafka_refused.py); the worker passes (partition, first, last) for it: its other offsets are not
    a gap to re-read (they would be the same refused batch)."""
    gaps = OffsetGaps("t-refused")
    SEEK_POSITIONS[("t-refused", 0)] = 5
    try:
        assert gaps.find([(0, 5), (0, 6, 9), (0, 10)]) == []
        assert gaps.find([(0, 11, 14), (0, 16)]) == [(0, 15, 16)]
    finally:
        SEEK_POSITIONS.pop(("t-refused", 0), None)


def test_missing_records_are_read_from_the_broker(kafka_bootstrap):
    topic = f"gaps-{uuid.uuid4().hex[:8]}"

    async def run():
        await create_topic(kafka_bootstrap, topic, partitions=1)
        await produce_values(kafka_bootstrap, topic, [b"v%d" % i for i in range(5)], partition=0)
        gaps = OffsetGaps(topic)
        SEEK_POSITIONS[(topic, 0)] = 1
        try:
            skipped = await gaps.missing_records(kafka_bootstrap, [(0, 3), (0, 4)])
        finally:
            SEEK_POSITIONS.pop((topic, 0), None)
        assert [(r.offset, r.value) for r in skipped] == [(1, b"v1"), (2, b"v2")]
        assert gaps.refetched == 2
        assert await gaps.missing_records(kafka_bootstrap, [(0, 0)]) == []  # lower than expected: nothing to read

    asyncio.run(run())
