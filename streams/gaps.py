"""Records Faust skipped, found by their offsets and read again.

Around a rebalance Faust can lose records it had already fetched. Its recovery seeks the stream partitions back,
then resumes flow control, which clears the agents' queues: a record delivered in between is gone, while later
ones arrive (seen with two workers joining at once, and once with a single worker: the first usage record of a
partition, a budget's first spend; Faust then commits past them as an offset "gap"). Nothing in Faust reports it.
The worker seeks back to records still queued when flow resumes (streams/worker.py); this module is the safety net
for any other way a record goes missing.

tokenmeter's own input topics (usage, budget-spend) are append-only: not compacted, never written in transactions.
So the records of one partition reach an agent with consecutive offsets, starting at the position the consumer
was seeked to after the rebalance, and any jump is a loss. `OffsetGaps` remembers the next expected offset per
partition, reports the missing ranges of each batch, and the agent reads them straight from the broker
(`read_records`) and processes them before the batch, so their outputs are stored before the batch is acked.
"""

from __future__ import annotations

import logging
from typing import Iterable, Mapping

from .topic_reader import TopicRecord, read_records

log = logging.getLogger("tokenmeter.gaps")

# (topic, partition) -> offset the group's consumer was seeked to after the last rebalance: its committed offset,
# or its beginning for a partition never committed (rewound there). Written by the worker's patched
# `seek_to_committed`; a partition absent here takes its first record received as the start.
SEEK_POSITIONS: dict[tuple[str, int], int] = {}


class OffsetGaps:
    """Missing offset ranges in what one agent receives from one append-only topic."""

    def __init__(self, topic: str, *, fetch_wait: Mapping[str, int] | None = None):
        self.topic = topic
        self.fetch_wait = fetch_wait  # the worker's Settings.fetch_wait, for the re-reads
        self.expected: dict[int, int] = {}  # partition -> next offset
        self._pending: dict[int, int] = {}
        self._generation = 0  # bumped by forget(): a read that spans a rebalance must not restore old offsets
        self.refetched = 0

    def forget(self) -> None:
        """Partitions were (re)assigned: the next record of each starts from the seek position again."""
        self.expected.clear()
        self._generation += 1

    def find(self, positions: Iterable[tuple[int, int]], commit: bool = True) -> list[tuple[int, int, int]]:
        """(partition, offset) of a batch in arrival order -> [(partition, start, end)] ranges never received.
        With commit=False the expected offsets are not advanced (see `missing_records`)."""
        gaps = []
        expected_now = dict(self.expected)
        for position in positions:  # (partition, offset), or (partition, first, last) for a refused batch's marker
            partition, offset, last = position[0], position[1], position[-1]
            expected = expected_now.get(partition)
            if expected is None:
                expected = SEEK_POSITIONS.get((self.topic, partition))
            if expected is not None and offset > expected:
                gaps.append((partition, expected, offset))
            if expected is None or offset >= expected:
                expected_now[partition] = last + 1
        if commit:
            self.expected = expected_now
        self._pending = expected_now
        return gaps

    async def missing_records(self, bootstrap: str, positions: Iterable[tuple[int, int]]) -> list[TopicRecord]:
        """The records of this batch's gaps, read from the broker (empty when nothing was skipped)."""
        out: list[TopicRecord] = []
        gaps, generation = self.find(positions, commit=False), self._generation
        for partition, start, end in gaps:
            records = await read_records(bootstrap, self.topic, partition, start, end, fetch_wait=self.fetch_wait)
            log.warning("%s[%d]: offsets %d..%d were skipped by the consumer; re-read %d record(s)",
                        self.topic, partition, start, end - 1, len(records))
            out += records
        # Only once every gap was read: a failed read leaves the batch's gaps to be found again on its retry.
        if generation == self._generation:
            self.expected = self._pending
        self.refetched += len(out)
        return out


__all__ = ["SEEK_POSITIONS", "OffsetGaps"]
