"""What the two bound tests of the columnar step share (cap33's attribution bounds, trust34's text bounds): the
traffic as messages of 500 events, and the check that both steps letter the hostile events alike, on the frame path
(the whole batch, at least FRAME_MIN_BYTES) and on the dict path (the third message alone), for JSON and Arrow."""

from __future__ import annotations

from typing import Any

import orjson

from streams.batch import RawRecord
from streams.columnar.equivalence import compare
from streams.columnar.pipeline import FRAME_MIN_BYTES, process_batch_columnar
from tokenmeter.priced_wire import ARROW

AT_BOUNDS_IDS = {"e80000", "e80001", "e80002"}  # events exactly at the bounds: priced, never lettered


def messages_of_500(events: list[dict]) -> list[RawRecord]:
    return [RawRecord(orjson.dumps(events[i:i + 500]), "tokenmeter.usage", 0, i) for i in range(0, len(events), 500)]


def lettered_alike(records: list[RawRecord], book: Any, hostile: list[str], small: bool) -> Any:
    """Both steps agree; exactly the `hostile` ids are lettered, in order, the at-bounds events priced; an Arrow
    worker letters and prices the same. `small`: the dict path (the third message). Returns the comparison's result."""
    if small:
        records = records[2:3]
    assert (sum(len(r.value) for r in records) >= FRAME_MIN_BYTES) is not small
    problems, result = compare(records, book)
    assert problems == []
    assert [d["payload"]["event_id"] for d in result.deadletters] == hostile
    assert AT_BOUNDS_IDS <= {e["event_id"] for _, _, e in result.origins}
    arrow = process_batch_columnar(records, book, priced_format=ARROW)
    assert [d["reason"] for d in arrow.deadletters] == [d["reason"] for d in result.deadletters]
    assert arrow.priced_count == result.priced_count
    return result
