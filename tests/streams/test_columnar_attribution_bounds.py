"""cap33: an attribution value or tags past the contract's bounds are lettered by the columnar step exactly as by
the per-event step, on the frame path (certified messages of at least FRAME_MIN_BYTES, where polars reads the
dimensions and the tags' text) and on the dict path, for a JSON and an Arrow worker."""

from __future__ import annotations

import pytest
from columnar_bounds_support import lettered_alike, messages_of_500
from test_batch import event, hostile_attributions  # same directory (pytest's rootdir-relative import)

from streams import load_book
from streams.batch import RawRecord
from tokenmeter.events import MAX_ATTRIBUTION_CHARS, MAX_TAG_KEY_CHARS, MAX_TAGS
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
    return messages_of_500(events), [e["event_id"] for e in hostile]


@pytest.mark.parametrize("small", [False, True], ids=["frames", "dicts"])
def test_past_the_bounds_is_lettered_alike_by_both_steps(book, small):
    records, hostile = _records()
    result = lettered_alike(records, book, hostile, small)
    assert all(d["reason"].startswith("invalid event: attribution.") for d in result.deadletters)
