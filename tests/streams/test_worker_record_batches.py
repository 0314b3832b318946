"""The worker's producer packs several priced messages into one Kafka record batch (streams.worker.PRICED_BATCH_BYTES):
with aiokafka's 16 KB default every ~240 KB priced message was a record batch of its own, compressed, checksummed and
framed apart on the event loop (worker35: ~1.5x the producer's CPU). The records are the same either way: every
event is priced once, as the in-process batch step prices it."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from decimal import Decimal

import aiokafka.consumer.fetcher as fetcher
import orjson
import pytest

from streams import load_book
from streams.batch import RawRecord, process_batch
from streams.topic_reader import read_topic
from tests.streams.test_worker_batches import _produce_burst, start_worker
from tests.streams.test_worker_poison import event, health, stop, wait_for
from tokenmeter import topics
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE
from tokenmeter.priced_wire import decode_priced
from tokenmeter.settings import free_port, load_settings

pytestmark = pytest.mark.slow(seconds=12)  # rough seconds: longest files first (tests/suite_order.py)


@pytest.fixture(scope="module")
def kafka_bootstrap(own_broker):
    """The record batches of the priced topic are counted whole: only this file's worker writes them."""
    return own_broker


class _SeenBatches:
    """MemoryRecords as the consumer's fetcher reads it, noting each record batch's (partition, base offset) and
    record count on the way (the batches are handed on as they are)."""

    def __init__(self, records, partition: int, seen: dict) -> None:
        self._records, self._partition, self._seen = records, partition, seen

    def has_next(self) -> bool:
        return self._records.has_next()

    def next_batch(self):  # noqa: ANN201 - aiokafka's batch type
        batch = self._records.next_batch()
        if batch is not None:
            self._seen[(self._partition, batch.base_offset)] = batch.next_offset - batch.base_offset
        return batch

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._records, name)


def _read_priced_with_batches(bootstrap: str, monkeypatch) -> tuple[list, dict]:  # noqa: ANN001
    seen: dict[tuple[int, int], int] = {}
    original = fetcher.PartitionRecords

    class Counted(original):
        def __init__(self, tp, records, *args, **kwargs) -> None:  # noqa: ANN001
            super().__init__(tp, _SeenBatches(records, tp.partition, seen), *args, **kwargs)

    monkeypatch.setattr(fetcher, "PartitionRecords", Counted)
    records = asyncio.run(read_topic(bootstrap, topics.PRICED))
    monkeypatch.setattr(fetcher, "PartitionRecords", original)
    return records, seen


def test_priced_messages_share_record_batches_and_are_priced_as_in_process(kafka_bootstrap, tmp_path, monkeypatch):
    team = f"batches-{uuid.uuid4().hex[:8]}"
    events = [event(team, i) for i in range(12 * MAX_EVENTS_PER_MESSAGE)]  # one key, one partition: 12 messages
    values = [orjson.dumps(events[i:i + MAX_EVENTS_PER_MESSAGE]) for i in range(0, len(events), MAX_EVENTS_PER_MESSAGE)]
    port = free_port()
    worker = start_worker(kafka_bootstrap, tmp_path, port, {"TOKENMETER_WORKER_WARM_UP": "false"})
    try:
        wait_for(lambda: health(port)[0] == 200, what="worker health")
        asyncio.run(_produce_burst(kafka_bootstrap, f"team:{team}".encode(), values))

        def all_priced() -> list:
            records = asyncio.run(read_topic(kafka_bootstrap, topics.PRICED))
            return records if sum(len(decode_priced(r.value, r.headers)) for r in records) >= len(events) else []

        wait_for(all_priced, timeout=60, what="every event priced")
    finally:
        stop(worker)

    records, batches = _read_priced_with_batches(kafka_bootstrap, monkeypatch)
    in_batches = Counter(batches.values())
    assert sum(n * count for n, count in in_batches.items()) == len(records)  # every record seen in one batch
    assert len(records) >= 12
    # before: one record batch per priced message (12 batches of 1); now ~4-6 messages per ~1 MB batch
    assert len(batches) <= len(records) // 2, f"record batches of n records: {dict(in_batches)}"

    priced = [e for r in records for e in decode_priced(r.value, r.headers)]
    assert sorted(e["event_id"] for e in priced) == sorted(e["event_id"] for e in events)  # each once
    expected = process_batch([RawRecord(v, topics.USAGE, 0, i) for i, v in enumerate(values)],
                             load_book(load_settings()))
    expected_events = [e for _, value in expected.priced_messages() for e in decode_priced(value, None)]
    by_id = {e["event_id"]: {k: v for k, v in e.items() if k != "priced_at"} for e in expected_events}
    assert {e["event_id"]: {k: v for k, v in e.items() if k != "priced_at"} for e in priced} == by_id
    assert sum(Decimal(e["cost_usd"]) for e in priced) == sum(Decimal(e["cost_usd"]) for e in expected_events)
