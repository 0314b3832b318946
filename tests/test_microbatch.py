"""The wire framing shared by collectors and the worker."""

import orjson
import pytest

from tokenmeter import microbatch


def test_frame_cuts_by_count_and_by_bytes_keeping_order():
    events = [orjson.dumps({"n": i}) for i in range(7)]
    messages = list(microbatch.frame(events, max_events=3))
    assert [len(orjson.loads(m)) for m in messages] == [3, 3, 1]
    assert [e["n"] for m in messages for e in orjson.loads(m)] == list(range(7))
    big = [b'"' + b"x" * 400 + b'"'] * 5
    assert all(len(m) <= 1000 for m in microbatch.frame(big, max_bytes=1000))
    assert list(microbatch.frame([b'"' + b"y" * 2000 + b'"'], max_bytes=1000))  # too big alone: its own message


def test_unframe_takes_one_object_or_an_array_and_refuses_a_flood():
    assert microbatch.unframe({"a": 1}) == [{"a": 1}]
    assert microbatch.unframe([1, 2]) == [1, 2]
    with pytest.raises(ValueError, match="too many events in one message"):
        microbatch.unframe([{}] * (microbatch.MAX_EVENTS_PER_RECORD + 1))
