"""The worker's priced messages keep the input's order across keys, up to a segment of the batch (issue #17,
backfill): a worker batch of a backfill can span days of history, and writing it key after key put one team's
whole span on a partition before another team's same span, which the anomaly detector (event time per key) can
only absorb when each key's block is read within seconds. Both batch paths (per row and columnar)."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson
import pytest

from streams import load_book
from streams.batch import PRICED_SEGMENT_EVENTS, RawRecord, process_batch
from streams.columnar import process_batch_columnar
from tests.streams.anomaly_traffic import MONDAY
from tokenmeter.settings import load_settings


def usage(team: str, n: int) -> dict:
    return {"event_id": f"{team}-{n}", "ts": datetime.fromtimestamp(MONDAY + n * 10, timezone.utc).isoformat(),
            "source": "test", "provider": "openai", "model": "gpt-4o-mini",
            "attribution": {"team": team}, "usage": {"input_tokens": 100, "output_tokens": 10}}


@pytest.fixture(scope="module")
def book():
    return load_book(load_settings())


@pytest.mark.parametrize("step", [process_batch, process_batch_columnar])
def test_priced_messages_keep_cross_key_order_within_a_segment(book, step):
    events = 3 * PRICED_SEGMENT_EVENTS
    records = []
    for i in range(0, events, 100):  # usage messages of 100 events, teams alternating, in event-time order
        team = "a" if (i // 100) % 2 == 0 else "b"
        chunk = [usage(team, n) for n in range(i, i + 100)]
        records.append(RawRecord(orjson.dumps(chunk), "tokenmeter.usage", 0, len(records)))
    result = step(records, book)
    assert result.priced_count == events
    position = 0  # the input index of every priced event, in the order the messages are written
    order = []
    for _key, value in result.priced_messages():
        order += [int(e["event_id"].split("-")[1]) for e in orjson.loads(value)]
    assert sorted(order) == list(range(events))
    for index in order:  # no event is written more than a segment after a later one of another key
        assert index > position - PRICED_SEGMENT_EVENTS
        position = max(position, index)
