"""What every collector entry point (Kafka bridge fetch, file chunk, HTTP request) does per batch of records.

Converting a batch creates many small objects (decoded JSON, field values, events, their encodings) that all
stay alive until the batch is acknowledged; the cyclic garbage collector, triggered by those allocations, would
rescan the growing heap again and again while they pile up: ~20% of a Kong or OTel batch's CPU time, measured
(`collectors/equivalence.py` timing, 20,000 events). So a batch's conversion runs with collection paused and the
collector catches up once, after it. The only reference cycles a conversion makes are the tracebacks of the
`DialectError`s of hostile records, which wait for that one collection. The Kafka bridge keeps the pause until the
batch is delivered (`collection_paused_until_delivered`), when its events are gone.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Iterator


@contextmanager
def collection_paused() -> Iterator[None]:
    """Pause the cyclic GC for one batch's synchronous conversion (nests; restores what was there)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


# A batch still waiting for its acknowledgement after this long (the broker is down, delivery retries) lets the
# collector collect again: a long outage must not pile up the retries' garbage.
DELIVERY_PAUSE_LIMIT_S = 5.0


class DeliveryPause:
    """The cyclic GC paused from a batch's conversion until its delivery (`begin`, then `end` once), at most
    DELIVERY_PAUSE_LIMIT_S. Pauses of batches that overlap (the bridge converts batch N+1 while N is delivered)
    are counted: collection resumes when the LAST one ends, not when the first does (which would let a
    collection scan the next batch's events, alive until their own acknowledgement)."""

    _holders = 0  # pauses begun and not ended, process-wide
    _resume_after = False  # whether collection was on when the first of them began

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None
        self._held = False

    def begin(self) -> "DeliveryPause":
        cls = DeliveryPause
        if cls._holders == 0:
            cls._resume_after = gc.isenabled()
        gc.disable()
        cls._holders += 1
        self._held = True
        if cls._resume_after:
            self._timer = asyncio.get_running_loop().call_later(DELIVERY_PAUSE_LIMIT_S, gc.enable)
        return self

    def end(self) -> None:
        if not self._held:
            return
        self._held = False
        if self._timer is not None:
            self._timer.cancel()
        cls = DeliveryPause
        cls._holders -= 1
        if cls._holders == 0 and cls._resume_after:
            gc.enable()


@asynccontextmanager
async def collection_paused_until_delivered() -> AsyncIterator[None]:
    """`collection_paused` over a batch's conversion AND its delivery (awaits included), at most
    DELIVERY_PAUSE_LIMIT_S: collection resumes when the batch's events have been dropped, so the catch-up
    collection no longer scans a batch's events that are alive only until their acknowledgement (~1-2 us per
    event in `tokenmeter bench`: a gen-0 collection over everything the batch made, promoted, scanned again).
    The pause is process-wide: other tasks that run during the awaits also wait for that collection."""
    pause = DeliveryPause().begin()
    try:
        yield
    finally:
        pause.end()
