"""Which inputs hold the anomaly detector's event-time watermark: one input per (partition, message key).

Kafka keeps records in order per key, not per partition, and so does tokenmeter: the collectors' sink and the worker
group each batch by partition key (the team), so a partition of `tokenmeter.priced` carries one team's next hours,
then another team's same hours (measured through the real worker on a 14-day backfill: one worker batch spanned ~45
hours of history per key; every event was in order within its key, a third were behind their partition's newest).
A watermark per partition therefore made history late. The detector's inputs are the (partition, key) substreams.

The rules follow Flink's per-partition watermarks (the output watermark is the minimum over the inputs) with
`WatermarkStrategy.withIdleness` (an input that stops delivering stops holding the watermark back):

- a substream holds the watermark at its newest event time until it is *idle*: its partition went on delivering
  (or, once its partition is read to its end, the whole input went on delivering) for `idle_after_s` seconds
  without it. Idleness is measured on a progress clock that advances only while records arrive (at most
  `MAX_STEP_S` per batch), so a pause of the producer or the worker idles nobody;
- a partition that has delivered nothing since the start holds the watermark while it has unread records, or
  until the input has made `idle_after_s` of progress without it, or until the input is live (every partition
  read to its end, the newest event recent): an unused partition must not stall detection;
- while the input is live (every partition read to its end, the newest event recent), wall time counts as progress
  (`live_tick`): quiet live input is the present, not a paused backfill, so keys that delivered long ago (another
  producer's old records on a shared topic, a partition's one old record) stop holding after `idle_after_s`;
- a substream that delivered only unreadable events holds nothing (bad input never stalls detection);
- the engine gets the watermark computed `TRAIL_S` seconds (wall clock) earlier: a key seen for the first time
  cannot hold a watermark before it arrives, and the worker writes a batch key after key (a key's first records
  come after other keys' hours of the same batch). Keys appearing within `TRAIL_S` of the others are on time. This
  is Flink's bounded out-of-orderness in processing time; live detection is delayed by those seconds only.

What no watermark can repair: one key's whole history produced after another key's on the same partition (a loop
over log files). The second key's events arrive behind the watermark and are counted late; the runner names the key.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from typing import Callable, Iterable

IDLE_AFTER_S = 30.0
TRAIL_S = 10.0  # the watermark given to the engine is the one computed this many (wall) seconds ago
TRAIL_SOURCE = -1_000_000  # the engine source that carries the trailed watermark (never a partition or a key)
MAX_STEP_S = 10.0  # a longer gap between two batches counts as this much progress: a pause idles nobody
FORGET_AFTER_S = 3600.0  # a substream silent this long (wall time) is forgotten (bounded state: keys come and go)


def substream_id(partition: int, key: bytes | None) -> int:
    """Stable (restart-proof) id of a (partition, key) substream: the partition in the high bits, a hash below."""
    digest = hashlib.blake2b(key or b"", digest_size=6).digest()
    return (partition << 48) | int.from_bytes(digest, "big")


def partition_holder(partition: int) -> int:
    """The id standing for a partition that has delivered nothing yet: never an engine source, so it freezes."""
    return -1 - partition


class Substreams:
    def __init__(self, idle_after_s: float = IDLE_AFTER_S, clock: Callable[[], float] = time.monotonic,
                 trail_s: float = TRAIL_S):
        self.idle_after_s = idle_after_s
        self.trail_s = trail_s
        self.clock = clock
        self._candidates: deque[tuple[float, int]] = deque()  # (wall time, watermark candidate)
        self._trailed: int | None = None
        self.progress = 0.0  # seconds during which the input delivered records
        self.partition_progress: dict[int, float] = {}
        self._last_tick: dict[int | None, float] = {}
        # id -> (partition, progress and partition progress at its last delivery, wall time of it)
        self.seen: dict[int, tuple[int, float, float, float]] = {}
        self.names: dict[int, str] = {}  # id -> "team:search" (for logs)
        self.delivered_partitions: set[int] = set()

    def _step(self, who: int | None, now: float) -> float:
        last = self._last_tick.get(who)
        self._last_tick[who] = now
        return 0.0 if last is None else min(now - last, MAX_STEP_S)

    def delivered(self, batch: dict[int, Iterable[tuple[int, str]]]) -> None:
        """A batch delivered events: partition -> (substream id, key text) pairs."""
        if not batch:
            return
        now = self.clock()
        self.progress += self._step(None, now)
        for partition, substreams in batch.items():
            progress = self.partition_progress[partition] = (self.partition_progress.get(partition, 0.0)
                                                             + self._step(partition, now))
            self.delivered_partitions.add(partition)
            for sid, name in substreams:
                self.seen[sid] = (partition, self.progress, progress, now)
                self.names[sid] = name

    def live_tick(self) -> None:
        """The input is live: every partition is read to its end and the newest event is recent (the runner's
        `live`). Then wall time is progress too, as in Flink's `withIdleness` (processing time): the present being
        quiet is not a paused backfill. Without it, keys that delivered long ago (another producer's old records on
        a shared topic, a key gone quiet, a partition's one old record) held the watermark for as long as nothing
        new arrived, and the wall clock may not close buckets behind a watermark that is history (`live_lag_s`):
        live detection stalled until new traffic came. Now they stop holding after `idle_after_s` of quiet."""
        self.progress += self._step(None, self.clock())

    def holders(self, partitions: Iterable[int], behind: set[int], known=None, live: bool = False) -> set[int]:
        """The ids that hold the watermark now. `behind`: partitions with unread records. `known`: the engine's
        sources (ids it has an event time for); a substream not among them delivered nothing readable and holds
        nothing. Without `known` (before a batch is folded) every non-idle substream holds. `live`: every
        partition is read to its end and the newest event is recent: a partition that never delivered holds
        nothing (the wall clock closes buckets anyway)."""
        out = set() if live else {partition_holder(p) for p in partitions if p not in self.delivered_partitions
                                  and (p in behind or self.progress < self.idle_after_s)}
        for sid, (partition, at, at_partition, _wall) in self.seen.items():
            if known is not None and sid not in known:
                continue
            if partition in behind:
                idle = self.partition_progress[partition] - at_partition >= self.idle_after_s
            else:
                idle = self.progress - at >= self.idle_after_s
            if not idle:
                out.add(sid)
        return out

    def trailed(self, holders: set[int], sources: dict) -> set[int]:
        """Record the watermark the holders allow now and put the one allowed `trail_s` ago into `sources` as the
        trail source; returns the holders with the trail source added (so the engine takes the lower of the two)."""
        now = self.clock()
        real = {s: t for s, t in sources.items() if s != TRAIL_SOURCE}
        if not holders:
            candidate = max(real.values(), default=None)
        elif all(s in real for s in holders):
            candidate = min(real[s] for s in holders)
        else:
            candidate = None  # an input with unread records has delivered nothing yet
        if candidate is not None:
            self._candidates.append((now, candidate))
        while self._candidates and self._candidates[0][0] <= now - self.trail_s:
            self._trailed = self._candidates.popleft()[1]
        if self._trailed is not None:
            sources[TRAIL_SOURCE] = self._trailed
        return holders | {TRAIL_SOURCE}

    def forget_silent(self, sources: dict) -> int:
        """Drop substreams silent for FORGET_AFTER_S (also from the engine's `sources`); returns how many."""
        horizon = self.clock() - FORGET_AFTER_S
        gone = [sid for sid, entry in self.seen.items() if entry[3] < horizon]
        for sid in gone:
            del self.seen[sid]
            self.names.pop(sid, None)
            sources.pop(sid, None)
        return len(gone)
