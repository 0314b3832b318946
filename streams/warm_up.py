"""A worker's pricing path priced once at start, on its pricing thread, before the first batch (issue 14, first33).

A fresh worker paid its cold start inside its first large batch: each allocator's working set faulted in page by
page (glibc for Python's bytes, jemalloc for polars, mimalloc for pyarrow: ~18,000 faults for an 8 MB chunk), and
the first queries on a full chunk ran cold. Pricing one full chunk (CHUNK_BYTES of input) in a fresh process took
~10 CPU-us per event against ~4-5 warm (docs/rounds/worker.md, first33), so the first batch after every start, often
a backlog, was priced at half speed. Now the worker prices one chunk of generated traffic as it starts (~0.7 CPU-s,
once) and drops every output: nothing is sent, counted or acked.

The step's only state beside its caches is the set of JSON fields the traffic has sent (streams/columnar/frames.py,
`_LEARNT`): the warm-up's fields are not the traffic's, so that state is put back as it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from streams.batch import RawRecord

log = logging.getLogger("tokenmeter.worker")

WARM_UP_TOPIC = "tokenmeter.warm-up"  # a name no record of the worker's input carries (letters are dropped anyway)
EVENTS_PER_MESSAGE = 500  # as collectors send them


def warm_up_records(limit: int) -> list[RawRecord]:
    """Messages of generated traffic (a mix of models, usage kinds and fields) reaching `limit` bytes of input: one
    message of 500 events, repeated (the step prices each copy as it would any message; ids repeat, harmlessly)."""
    from streams.columnar.bench import traffic

    value = orjson.dumps(traffic(EVENTS_PER_MESSAGE, seed=3))
    return [RawRecord(value, WARM_UP_TOPIC, 0, offset) for offset in range(max(1, -(-limit // len(value))))]


def warm_up(price: Callable[[list[RawRecord]], Any], limit: int) -> float:
    """Price `limit` bytes of generated traffic with `price` (the worker's `_price` of one chunk) and drop the result;
    the learnt fields are kept as they were. Returns the CPU seconds this thread spent."""
    from streams.columnar import frames

    started = time.thread_time()
    kept = frames.learnt_state()
    try:
        price(warm_up_records(limit))
    except Exception:  # noqa: BLE001 - the warm-up is an optimisation: the worker prices its traffic regardless
        log.exception("pricing warm-up failed; the first batch pays its cold start")
    finally:
        frames.restore_learnt(kept)
    return time.thread_time() - started


__all__ = ["WARM_UP_TOPIC", "warm_up", "warm_up_records"]
