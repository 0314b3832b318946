"""cap33: a call costing more than the warehouse stores is lettered by the columnar step exactly as by the per-event
step, on each of its paths: the frame path (a batch of certified messages of at least FRAME_MIN_BYTES), the dict
path, the slow rows after tool fees, and an Arrow worker's mixed batch. Before, the columns priced it (its lines each
fit int64) and it was sent, counted by budgets, then lettered by the loader."""

from __future__ import annotations

import orjson
import pytest
from test_batch import OVER_LIMIT_USAGE, event  # same directory (pytest's rootdir-relative import)

from streams import load_book
from streams.batch import RawRecord
from streams.columnar.equivalence import compare
from streams.columnar.pipeline import FRAME_MIN_BYTES, process_batch_columnar
from tokenmeter.priced_wire import ARROW
from tokenmeter.settings import load_settings


@pytest.fixture(scope="module")
def book():
    return load_book(load_settings())


def _records(over_at: int) -> list[RawRecord]:
    """Messages of 500 events, with the over-limit calls inside the `over_at`-th."""
    events = [event(i, team=f"t{i % 7}") for i in range(3000)]
    over = [event(90_000 + n, usage=usage) for n, usage in enumerate(OVER_LIMIT_USAGE.values())]
    events[over_at * 500 + 10:over_at * 500 + 10] = over
    return [RawRecord(orjson.dumps(events[i:i + 500]), "tokenmeter.usage", i % 3, i)
            for i in range(0, len(events), 500)]


@pytest.mark.parametrize("small", [False, True], ids=["frames", "dicts"])
def test_over_the_limit_is_lettered_alike_by_both_steps(book, small):
    records = _records(2)
    if small:  # under FRAME_MIN_BYTES: the dict-fed columns
        records = records[2:3]
    assert (sum(len(r.value) for r in records) >= FRAME_MIN_BYTES) is not small
    problems, result = compare(records, book)
    assert problems == []
    assert [d["payload"]["event_id"] for d in result.deadletters] == ["e90000", "e90001", "e90002"]
    assert all(d["reason"].startswith("cost too large") for d in result.deadletters)
    assert not {"e90000", "e90001", "e90002"} & {e["event_id"] for _, _, e in result.origins}
    arrow = process_batch_columnar(records, book, priced_format=ARROW)
    assert [d["reason"] for d in arrow.deadletters] == [d["reason"] for d in result.deadletters]
    assert arrow.priced_count == result.priced_count and len(arrow.origins) == result.priced_count
