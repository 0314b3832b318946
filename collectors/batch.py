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


@asynccontextmanager
async def collection_paused_until_delivered() -> AsyncIterator[None]:
    """`collection_paused` over a batch's conversion AND its delivery (awaits included), at most
    DELIVERY_PAUSE_LIMIT_S: collection resumes when the batch's events have been dropped, so the catch-up
    collection no longer scans a batch's events that are alive only until their acknowledgement (~1-2 us per
    event in `tokenmeter bench`: a gen-0 collection over everything the batch made, promoted, scanned again).
    The pause is process-wide: other tasks that run during the awaits also wait for that collection."""
    collecting = gc.isenabled()
    gc.disable()
    resume = asyncio.get_running_loop().call_later(DELIVERY_PAUSE_LIMIT_S, gc.enable) if collecting else None
    try:
        yield
    finally:
        if resume is not None:
            resume.cancel()
            gc.enable()
