"""A worker whose group assignment holds none of its source topics' partitions processes nothing, silently: it
stays a healthy-looking member of the group. This guard sees it after every assignment, reports it on /health
(503, so `tokenmeter up` and operators see it), and asks the group to rebalance again a few times (with back-off)
when the broker's metadata shows the source topics have partitions.

Why such an assignment happens: Faust uses aiokafka's round-robin assignor here (no tables), and the group leader
assigns only the partitions its own cluster metadata knows. A source topic missing from that metadata at the
moment of the join ("No partition metadata for topic ..." in the log) gets no owner, and aiokafka's leader notices
the topic later only on its next metadata refresh (`metadata_max_age_ms`, 5 minutes by default), or a member
joins. Other members can also hold every source partition (more workers than partitions, or a member that died
without leaving, until its session times out). The re-join fixes the first case and is bounded, so a surplus
worker does not rebalance the group forever; it then stays reported as idle.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("tokenmeter.worker")

REJOIN_DELAYS_S = (2.0, 5.0, 10.0, 20.0, 40.0)  # then stay idle and reported: a surplus member is legitimate


class SourceAssignment:
    """What the last assignment gave this member of the worker's source topics (topics its agents consume)."""

    def __init__(self, source_topics: Iterable[str], rejoin_delays: Iterable[float] = REJOIN_DELAYS_S) -> None:
        self.source_topics = tuple(source_topics)
        self.rejoin_delays = tuple(rejoin_delays)
        self.assigned: set[tuple[str, int]] | None = None  # None until the first assignment
        self.assignments = 0
        self.rejoins = 0
        self.attempts = 0
        self._task: asyncio.Task | None = None

    def held(self) -> dict[str, list[int]]:
        held: dict[str, list[int]] = {t: [] for t in self.source_topics}
        for topic, partition in sorted(self.assigned or ()):
            if topic in held:
                held[topic].append(partition)
        return held

    def problem(self) -> str | None:
        """Why this worker processes nothing, or None while it holds a source partition."""
        if self.assigned is None:
            return "no partition assignment yet (joining the consumer group)"
        if not any(topic in self.source_topics for topic, _ in self.assigned):
            return (f"the group assignment holds no partition of {', '.join(self.source_topics)}: this worker "
                    f"processes nothing (re-joined {self.rejoins} time(s))")
        return None

    def to_json(self) -> dict[str, Any]:
        return {"partitions": self.held(), "assignments": self.assignments, "rejoins": self.rejoins}

    def on_assigned(self, assigned: Iterable[Any], rejoin: Any = None) -> None:
        """Record an assignment (Faust's TPs); when it holds no source partition, start `rejoin()` attempts:
        `rejoin` is an async callable returning True when it asked the group to rebalance."""
        self.assigned = {(tp.topic, tp.partition) for tp in assigned}
        self.assignments += 1
        if self._task is not None and not self._task.done():
            self._task.cancel()
            self._task = None
        if self.problem() is None:
            self.attempts = 0
            return
        log.warning("%s; assigned: %s", self.problem(), sorted(self.assigned))
        if rejoin is not None:
            self._task = asyncio.ensure_future(self._rejoin_while_idle(rejoin, self.assignments))

    async def _rejoin_while_idle(self, rejoin: Any, assignment: int) -> None:
        # attempts count across assignments (reset by one that holds a source partition): bounded in total
        while self.attempts < len(self.rejoin_delays):
            await asyncio.sleep(self.rejoin_delays[self.attempts])
            if self.assignments != assignment or self.problem() is None:
                return  # a new assignment came (it is checked on its own)
            self.attempts += 1
            try:
                asked = await rejoin()
            except Exception as exc:  # noqa: BLE001 - never break the worker; try again later
                log.warning("could not ask the consumer group to rebalance: %r", exc)
                continue
            if asked:
                self.rejoins += 1
                log.warning("asked the consumer group to rebalance: this worker holds no source partition")
                return  # the rebalance brings a new assignment, checked again
        log.error("%s; not re-joining again (other members may legitimately hold every partition)", self.problem())


__all__ = ["REJOIN_DELAYS_S", "SourceAssignment"]
