"""What every collector entry point (Kafka bridge fetch, file chunk, HTTP request) does per batch of records.

Converting a batch creates many small objects (decoded JSON, field values, events, their encodings) that all
stay alive until the batch is acknowledged; the cyclic garbage collector, triggered by those allocations, would
rescan the growing heap again and again while they pile up: ~20% of a Kong or OTel batch's CPU time, measured
(`collectors/equivalence.py` timing, 20,000 events). So a batch's conversion runs with collection paused and the
collector catches up once, after it. The only reference cycles a conversion makes are the tracebacks of the
`DialectError`s of hostile records, which wait for that one collection.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from typing import Iterator


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
