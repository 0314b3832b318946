"""Price a worker batch in chunks on a thread of its own while the event loop sends the chunks already priced.

Before, `price_and_send` priced the whole batch on the event loop and only then sent its outputs: the broker
(receiving ~2x the input bytes as priced messages) and the CPU took turns, and for the length of a batch (a
second for 50,000 events) the loop answered nothing: no `/health`, no `/v1/decision`, no reservation.

Now each chunk of about `CHUNK_BYTES` of input is priced (and its messages and dead letters encoded) on one
pricing thread, and its outputs are handed to `send` on the loop while the next chunk is priced. Sends stay in
input order: a chunk's `send` starts only after the chunk before it has handed every output to the producer, so a
key's priced messages keep their order (docs/worker.md, "Order of priced messages"). The caller awaits every
send's acknowledgement before the batch's offsets are acked (at-least-once, unchanged); on any failure the whole
batch is priced and sent again, as before (outputs of chunks already sent become duplicates the warehouse drops
on `event_id`, and the budget owner skips offsets it applied).

The batch step is pure and keeps no state between calls except its caches; one thread runs one chunk at a time.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import cache
from typing import Any

from streams.batch import BatchResult, RawRecord
from tokenmeter import deadletters
from tokenmeter.priced_wire import JSON

# input bytes per chunk: ~25,000 bench events, ~16 MB of priced messages. Each chunk pays a fixed ~9-10 ms (~110
# polars queries planned, their expressions built in Python): 4 MB chunks paid it per ~12,500 events (~0.75 us per
# event); 8 MB halves that (fast20: 4.66 -> 3.89 us CPU per event, best of 8 passes alternating in one process).
# A batch's first sends start after its first chunk is priced (~0.1 s at 8 MB; batches under 8 MB are one chunk
# either way).
CHUNK_BYTES = 8_000_000

Outputs = tuple[BatchResult, list[tuple[bytes, bytes]], list[bytes]]
Send = Callable[[BatchResult, list[tuple[bytes, bytes]], list[bytes]], Awaitable[list[Any]]]


def chunks(records: Iterable[RawRecord], limit: int = CHUNK_BYTES) -> Iterator[list[RawRecord]]:
    """Consecutive runs of records, each closed once its values reach `limit` bytes (a larger record is a run of
    its own)."""
    chunk: list[RawRecord] = []
    size = 0
    for record in records:
        chunk.append(record)
        size += len(record.value or b"")
        if size >= limit:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@cache
def _takes_format(step: Callable[..., BatchResult]) -> bool:
    """Whether the batch step is told the priced format (the columnar one: an Arrow worker writes no JSON text)."""
    try:
        return "priced_format" in inspect.signature(step).parameters
    except (TypeError, ValueError):
        return False


def _price(step: Callable[..., BatchResult], records: list[RawRecord], book: Any, priced_format: str = JSON
           ) -> Outputs:
    result = step(records, book, priced_format=priced_format) if _takes_format(step) else step(records, book)
    return (result, result.messages(priced_format),
            [deadletters.encode(letter) for letter in result.deadletters])


class OverlappedPricing:
    def __init__(self, step: Callable[..., BatchResult], book: Any, chunk_bytes: int = CHUNK_BYTES,
                 priced_format: str = JSON) -> None:
        self.step = step
        self.book = book
        self.chunk_bytes = chunk_bytes
        self.priced_format = priced_format  # TOKENMETER_PRICED_FORMAT: the priced messages' format
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="tokenmeter-pricing")

    def warm_up(self) -> Future:
        """Price one chunk of generated traffic on the pricing thread, outputs dropped (streams/warm_up.py): queued
        first, so the first batch's chunks run after it, warm. The future gives the CPU seconds it took."""
        from streams.warm_up import warm_up

        return self.pool.submit(warm_up, lambda records: _price(self.step, records, self.book, self.priced_format),
                                self.chunk_bytes)

    async def run(self, records: list[RawRecord], send: Send) -> tuple[BatchResult, list[Any]]:
        """(the batch's counters and dead letters, the futures of every output sent); raises what a send raised."""
        loop = asyncio.get_running_loop()
        total = BatchResult()
        sending: asyncio.Future | None = None
        try:
            for chunk in chunks(records, self.chunk_bytes):
                result, messages, letters = await loop.run_in_executor(self.pool, _price, self.step, chunk, self.book,
                                                                   self.priced_format)
                total.add_counts(result)
                sending = asyncio.ensure_future(_after(sending, send, result, messages, letters))
            return total, (await sending if sending is not None else [])
        except BaseException:
            if sending is not None and not sending.done():
                sending.cancel()
            if sending is not None:
                await asyncio.gather(sending, return_exceptions=True)  # retrieved: no "never retrieved" warning
            raise


async def _after(before: asyncio.Future | None, send: Send, result: BatchResult, messages: list, letters: list
                 ) -> list[Any]:
    futures = list(await before) if before is not None else []  # the chunk before has handed over its outputs
    return futures + await send(result, messages, letters)


__all__ = ["CHUNK_BYTES", "OverlappedPricing", "chunks"]
