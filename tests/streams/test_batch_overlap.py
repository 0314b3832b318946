"""streams/batch_overlap.py: chunks priced on the pricing thread, outputs handed over in input order, a failing
send fails the whole batch (the worker retries it unacked), every output future returned for the acks."""

from __future__ import annotations

import asyncio
import threading

import orjson
import pytest

from streams.batch import RawRecord
from streams.batch_overlap import OverlappedPricing, chunks
from streams.columnar import process_batch_columnar
from streams.pricing import load_price_book


def _event(i: int) -> dict:
    return {"event_id": f"o{i}", "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openai", "model": "gpt-4o",
            "attribution": {"team": f"t{i % 3}"}, "usage": {"input_tokens": 1000 + i, "output_tokens": 10}}


def _records(n_messages: int, per_message: int = 200) -> list[RawRecord]:
    return [RawRecord(orjson.dumps([_event(m * per_message + i) for i in range(per_message)]), "tokenmeter.usage", 0, m)
            for m in range(n_messages)]


def test_chunks_close_at_the_byte_limit_and_keep_every_record_in_order():
    records = [RawRecord(b"x" * size, "t", 0, i) for i, size in enumerate([3, 3, 3, 10, 1, 1, 0])]
    got = list(chunks(records, limit=6))
    assert [[r.offset for r in c] for c in got] == [[0, 1], [2, 3], [4, 5, 6]]
    assert list(chunks([], limit=6)) == []


def test_outputs_are_handed_over_in_input_order_while_later_chunks_are_priced():
    book = load_price_book()
    records = _records(12)
    threads, sent = set(), []

    def step(chunk, book):
        threads.add(threading.current_thread().name)
        return process_batch_columnar(chunk, book)

    async def send(result, messages, letters):
        if not sent:
            await asyncio.sleep(0.2)  # the first chunk's sends are slow: the next chunks must wait their turn
        sent.extend(messages)
        return [len(messages)]

    async def main():
        pricing = OverlappedPricing(step, book, chunk_bytes=60_000)  # several chunks from a few messages
        return await pricing.run(records, send)

    total, futures = asyncio.run(main())
    assert len(futures) > 2 and total.events_in == total.priced_count == 2_400
    ids = [e["event_id"] for _, value in sent for e in orjson.loads(value)]
    for team in ("t0", "t1", "t2"):  # per key, the input order
        keyed = [e["event_id"] for key, value in sent if key == f"team:{team}".encode() for e in orjson.loads(value)]
        assert keyed == [f"o{i}" for i in range(2_400) if f"t{i % 3}" == team]
    assert sorted(ids) == sorted(f"o{i}" for i in range(2_400))
    assert threads == {t for t in threads if t.startswith("tokenmeter-pricing")}  # never on the event loop


def test_a_failing_send_fails_the_batch_and_leaves_no_task_behind():
    book = load_price_book()
    calls = []

    async def send(result, messages, letters):
        calls.append(len(messages))
        if len(calls) == 2:
            raise RuntimeError("the broker refused it")
        return [1]

    async def main():
        with pytest.raises(RuntimeError, match="refused"):
            await OverlappedPricing(process_batch_columnar, book, chunk_bytes=60_000).run(_records(12), send)
        await asyncio.sleep(0)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []
    assert len(calls) == 2
