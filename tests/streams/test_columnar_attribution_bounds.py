"""cap33: an attribution value or tags past the contract's bounds are lettered by the columnar step exactly as by
the per-event step, on the frame path (certified messages of at least FRAME_MIN_BYTES, where polars reads the
dimensions and the tags' text) and on the dict path, for a JSON and an Arrow worker."""

from __future__ import annotations

import orjson
import pytest
from test_batch import event, hostile_attributions  # same directory (pytest's rootdir-relative import)

from streams import load_book
from streams.batch import RawRecord
from streams.columnar.equivalence import compare
from streams.columnar.pipeline import FRAME_MIN_BYTES, process_batch_columnar
from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS
from tokenmeter.priced_wire import ARROW
from tokenmeter.settings import load_settings


@pytest.fixture(scope="module")
def book():
    return load_book(load_settings())


def _records() -> tuple[list[RawRecord], list[str]]:
    """Messages of 500 events, the hostile ones (and ones at the bounds, priced) inside the third."""
    events = [event(i, team=f"t{i % 7}", env=None) for i in range(3000)]
    for e in events:
        e.pop("env")
        e["attribution"]["tags"] = {"env": "prod"} if int(e["event_id"][1:]) % 2 else {}
    hostile = [event(90_000 + n, attribution=a) for n, (a, _) in enumerate(hostile_attributions().values())]
    at_bounds = [event(80_000, attribution={"team": "t" * MAX_ATTRIBUTION_CHARS}),
                 event(80_001, attribution={"team": "a", "tags": {f"k{i}": "v" for i in range(MAX_TAGS)}}),
                 event(80_002, attribution={"team": "a", "tags": {"k" * MAX_TAG_KEY_CHARS: "v" * MAX_ATTRIBUTION_CHARS}})]
    events[1010:1010] = hostile + at_bounds
    records = [RawRecord(orjson.dumps(events[i:i + 500]), "tokenmeter.usage", 0, i) for i in range(0, len(events), 500)]
    return records, [e["event_id"] for e in hostile]


@pytest.mark.parametrize("small", [False, True], ids=["frames", "dicts"])
def test_past_the_bounds_is_lettered_alike_by_both_steps(book, small):
    records, hostile = _records()
    if small:
        records = records[2:3]
    assert (sum(len(r.value) for r in records) >= FRAME_MIN_BYTES) is not small
    problems, result = compare(records, book)
    assert problems == []
    assert [d["payload"]["event_id"] for d in result.deadletters] == hostile
    assert all(d["reason"].startswith("invalid event: attribution.") for d in result.deadletters)
    assert {"e80000", "e80001", "e80002"} <= {e["event_id"] for _, _, e in result.origins}
    arrow = process_batch_columnar(records, book, priced_format=ARROW)
    assert [d["reason"] for d in arrow.deadletters] == [d["reason"] for d in result.deadletters]
    assert arrow.priced_count == result.priced_count
