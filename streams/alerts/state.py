"""What the dispatcher remembers across restarts, and which outbox offsets it may commit.

Delivery state lives in the compacted topic `tokenmeter.alert-deliveries` (key `<alert id>|<route_id>`, latest
record wins). It is read to its end at start; the end is the high watermark carried in fetch responses, not
`end_offsets()`, which the embedded broker under-reports (see streams/budgets/store.py, environment.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import orjson

from streams.topic_reader import TopicReadError, TopicRecord, read_topic

from .delivery import FINAL_STATUSES

if TYPE_CHECKING:  # annotations only
    from aiokafka import TopicPartition

__all__ = ["TopicReadError", "TopicRecord", "read_topic", "latest_deliveries", "load_delivery_state", "is_final",
           "OffsetTracker"]


def latest_deliveries(records: list[TopicRecord]) -> dict[str, dict[str, Any]]:
    """Delivery state per `<alert id>|<route_id>`: the latest readable record per key (tombstones forget)."""
    state: dict[str, dict[str, Any]] = {}
    for record in records:  # one key always lands in one partition, so per-partition order is enough
        if record.key is None:
            continue
        if record.value is None:
            state.pop(record.key, None)
            continue
        try:
            value = orjson.loads(record.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(value, dict):
            state[record.key] = value
    return state


async def load_delivery_state(bootstrap: str, topic: str, timeout: float = 30.0, *,
                              fetch_wait: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    return latest_deliveries(await read_topic(bootstrap, topic, timeout, fetch_wait=fetch_wait))


def is_final(state: dict[str, Any] | None) -> bool:
    return bool(state) and state.get("status") in FINAL_STATUSES


class OffsetTracker:
    """Per partition: offsets handed out and not yet final. The committable offset is the lowest unfinished
    offset, or one past the last offset seen when all are finished, so a commit never skips an alert whose
    deliveries are still open (it is re-read after a restart)."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}

    def seen(self, tp: TopicPartition, offset: int) -> None:
        self._open.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def finished(self, tp: TopicPartition, offset: int) -> None:
        if tp in self._open:
            self._open[tp].discard(offset)

    def open_count(self) -> int:
        return sum(len(offsets) for offsets in self._open.values())

    def to_commit(self) -> dict[TopicPartition, int]:
        """Offsets that moved since the last `committed()` call."""
        out = {}
        for tp, nxt in self._next.items():
            offset = min(self._open[tp]) if self._open.get(tp) else nxt
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: list[TopicPartition] | set[TopicPartition]) -> None:
        """A partition was revoked: whoever gets it next resumes from its committed offset."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)
