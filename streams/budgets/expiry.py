"""The open holds of one budget ordered by expiry time, so the owner's 5-second tick finds the expired ones in
O(expired x log n) instead of scanning every open hold: the scan took 1.4 ms of the admitting event loop with
20,000 open holds and 8.6 ms with 100,000, every tick (docs/rounds/budgets.md, reserve7 and reserve8).

A min-heap of (expiry as a POSIX timestamp, admission number, reservation id): floats compare several times faster
than aware datetimes (a push or pop compares log n times), and holds of equal expiry leave in the order they were
put in, as the scan of the dict (admission order) gave them. Holds leave the owner's dict in many ways (settled, released,
superseded, expired, a budget deleted); their heap entries are not removed then but skipped when they come up
(an entry counts only while the dict still holds a hold of that id with that expiry). So that skipped entries
cannot pile up (settled holds never come up before their TTL: 15 minutes of admissions at 2,000/s), the heap is
rebuilt from the open holds once it is more than twice their number: O(n) at most once per n removals.

Not a time-ordered dict scan from the front: expiry order is not admission order when the TTL setting differs
between workers (a forwarded hold carries the forwarding worker's expiry), for restored holds, and for a
reservation asked twice (its dict slot keeps the first position with the later expiry).
"""

from __future__ import annotations

import heapq
import itertools
from datetime import datetime

from .holds import Hold

REBUILD_SLACK = 1024  # a small heap is never rebuilt: skipping a few entries costs less than rebuilding


class ExpiryIndex:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        self._admissions = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, hold: Hold, open_holds: dict[str, Hold]) -> None:
        """Index `hold`, just put into `open_holds` (reservation id -> open hold)."""
        heapq.heappush(self._heap, (hold.expires_at.timestamp(), next(self._admissions), hold.reservation_id))
        if len(self._heap) > 2 * len(open_holds) + REBUILD_SLACK:  # the dict's order is admission order too
            self._heap = [(h.expires_at.timestamp(), next(self._admissions), reservation_id)
                          for reservation_id, h in open_holds.items()]
            heapq.heapify(self._heap)

    def due(self, open_holds: dict[str, Hold], now: datetime) -> list[str]:
        """The reservation ids of the open holds expired at `now` (expires_at <= now), in expiry order, each once;
        their entries leave the index (the caller drops the holds)."""
        heap, due, now_ts = self._heap, {}, now.timestamp()
        while heap and heap[0][0] <= now_ts:
            reservation_id = heapq.heappop(heap)[2]
            hold = open_holds.get(reservation_id)  # gone, or asked again with a later expiry: its own entry decides
            if hold is not None and hold.expires_at <= now:
                due[reservation_id] = None
        return list(due)


__all__ = ["ExpiryIndex"]
