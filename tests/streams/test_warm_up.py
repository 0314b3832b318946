"""streams/warm_up.py (issue 14, first33): a worker prices one chunk of generated traffic on its pricing thread as it
starts, so its first batch is not priced cold; nothing of it is sent, and what the traffic taught the step (the JSON
fields sent) is as it was."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import orjson

from streams.batch import RawRecord
from streams.batch_overlap import CHUNK_BYTES, OverlappedPricing, _price
from streams.columnar import frames, process_batch_columnar
from streams.pricing import load_price_book
from streams.warm_up import WARM_UP_TOPIC, warm_up, warm_up_records
from tokenmeter.priced_wire import ARROW, JSON


def _records(n_messages: int) -> list[RawRecord]:
    def event(i: int) -> dict:
        return {"event_id": f"w{i}", "ts": "2026-11-01T10:15:00Z", "source": "t", "provider": "openai",
                "model": "gpt-4o", "attribution": {"team": f"t{i % 3}"},
                "usage": {"input_tokens": 1000 + i, "output_tokens": 10}}
    return [RawRecord(orjson.dumps([event(m * 100 + i) for i in range(100)]), "tokenmeter.usage", 0, m)
            for m in range(n_messages)]


def test_the_warm_up_is_one_chunk_of_generated_traffic():
    records = warm_up_records(CHUNK_BYTES)
    assert sum(len(r.value) for r in records) >= CHUNK_BYTES > sum(len(r.value) for r in records[1:])
    assert {r.topic for r in records} == {WARM_UP_TOPIC}
    assert len(orjson.loads(records[0].value)) == 500


def test_the_warm_up_leaves_the_fields_learnt_as_they_were():
    book = load_price_book()
    for learnt in frames._LEARNT.values():  # nothing learnt yet, as in a fresh worker
        learnt.sent, learnt.skip = frozenset(), 0
    warm_up(lambda records: _price(process_batch_columnar, records, book, ARROW), 300_000)
    assert frames.learnt_state() == {False: (frozenset(), 0), True: (frozenset(), 0)}
    process_batch_columnar(_records(40), book)  # the traffic's own fields (fewer than the generated traffic's)
    taught = frames.learnt_state()
    assert taught[False][0] and ("service_tier",) not in taught[False][0]
    warm_up(lambda records: _price(process_batch_columnar, records, book, ARROW), 300_000)
    assert frames.learnt_state() == taught


def test_a_failing_warm_up_is_logged_and_the_learnt_fields_are_kept(caplog):
    kept = frames.learnt_state()

    def fails(records):  # noqa: ANN001, ANN202
        frames._LEARNT[False].sent = frozenset({("ts",)})  # taught something before failing
        raise RuntimeError("boom")

    warm_up(fails, 1000)
    assert frames.learnt_state() == kept
    assert "pricing warm-up failed" in caplog.text


def test_the_worker_warm_up_runs_on_the_pricing_thread_before_the_first_batch_and_sends_nothing():
    """Queued first on the pricing thread: the batch's chunks run after it; its outputs reach no send."""
    book = load_price_book()
    order, sent = [], []

    def step(chunk, book, priced_format=JSON):  # noqa: ANN001, ANN202
        order.append((threading.current_thread().name, chunk[0].topic))
        return process_batch_columnar(chunk, book, priced_format=priced_format)

    async def send(result, messages, letters):  # noqa: ANN001, ANN202
        sent.extend(messages)
        return []

    async def main():  # noqa: ANN202
        pricing = OverlappedPricing(step, book, chunk_bytes=200_000)
        warming = pricing.warm_up()
        total, _ = await pricing.run(_records(3), send)
        return warming.result(), total

    cpu, total = asyncio.run(main())
    assert cpu > 0 and total.events_in == total.priced_count == 300
    assert [topic for _, topic in order] == [WARM_UP_TOPIC, "tokenmeter.usage"]
    assert len({name for name, _ in order}) == 1 and order[0][0].startswith("tokenmeter-pricing")
    assert sorted(e["event_id"] for _, value in sent for e in orjson.loads(value)) == sorted(f"w{i}" for i in range(300))


# A fresh process prices one full chunk, after the warm-up or not, and prints the page faults that took.
_FAULTS_CHILD = """
import os, resource, sys
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:30000,muzzy_decay_ms:30000")  # as streams/worker.py
from streams.allocator import keep_freed_memory
keep_freed_memory()
from streams.batch import RawRecord
from streams.batch_overlap import CHUNK_BYTES, _price
from streams.columnar import process_batch_columnar
from streams.pricing import load_price_book
from streams.warm_up import warm_up, warm_up_records
from tokenmeter.priced_wire import ARROW
book = load_price_book()
price = lambda records: _price(process_batch_columnar, records, book, ARROW)
price([RawRecord(b'[]', "tokenmeter.usage", 0, 0)])  # imports and the price table, as a started worker has them
if sys.argv[1] == "warm":
    warm_up(price, CHUNK_BYTES)
chunk = [RawRecord(r.value.replace(b'"bench"', b'"other"'), "tokenmeter.usage", 0, r.offset)
         for r in warm_up_records(CHUNK_BYTES)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
price(chunk)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_full_chunk_after_the_warm_up_faults_in_far_fewer_pages():
    """The point of it: the working set is in place before the first batch (first33: a cold 8 MB chunk faulted in
    ~18,000-30,000 pages, one after the warm-up ~6,000). Fresh processes, so no earlier test warmed them."""
    root = Path(__file__).resolve().parents[2]

    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS_CHILD, mode], cwd=root, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(root)}, check=True, timeout=300)
        return int(out.stdout.split()[-1])

    cold, warm = faults("cold"), faults("warm")
    assert warm * 2 < cold, (cold, warm)
