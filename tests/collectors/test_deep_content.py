"""hostile24: content nested deeper than a JSON writer goes. The models accepted it, every collector's sink then
failed to write the event (pydantic-core stops at ~255 levels): `collect http` answered 500 to the whole request,
so a LiteLLM batch with one such entry lost its good entries too, without a dead letter."""

from __future__ import annotations

import copy

import orjson
import pytest

from collectors.http_ingest import parse_keeping
from collectors.sink import encode_batches
from streams.batch import RawRecord, process_batch
from streams.pricing import load_price_book
from tokenmeter.events import MAX_CONTENT_DEPTH


def _nested(levels: int) -> dict:
    value: object = "deep"
    for _ in range(levels):
        value = {"k": value}
    return value  # type: ignore[return-value]


def _canonical(event_id: str, content: dict) -> dict:
    return {"event_id": event_id, "ts": "2026-12-06T10:00:00Z", "source": "sdk", "provider": "openai",
            "model": "gpt-4o", "attribution": {"team": "h24"}, "content": content}


def test_a_litellm_batch_keeps_its_good_entry_and_dead_letters_the_deep_one(payload):
    good = payload("litellm_success")
    deep = copy.deepcopy(good)
    deep["id"] = "deep-entry"
    for field in ("prompt_tokens", "completion_tokens", "total_tokens"):
        deep.pop(field, None)
    deep["response"] = {}
    deep["messages"] = [{"role": "user", "content": _nested(300)}]
    events, _, failures = parse_keeping([good, deep], "litellm", None)
    assert [index for index, _ in failures] == [1]
    assert "nested deeper than" in failures[0][1].reason, failures[0][1].reason
    assert len(encode_batches(events)) == 1  # the good entry is written (this raised for the whole batch)


@pytest.mark.parametrize("field", ["prompt", "tools"])
def test_a_canonical_event_with_too_deep_content_is_a_record_error(field):
    value = [{"role": "user", "content": _nested(MAX_CONTENT_DEPTH + 1)}]
    events, _, failures = parse_keeping([_canonical("deep-1", {field: value})], "canonical", None)
    assert events == [] and len(failures) == 1
    assert f"content.{field}" in failures[0][1].reason
    assert f"nested deeper than {MAX_CONTENT_DEPTH} levels" in failures[0][1].reason


def test_content_at_the_limit_is_written_and_counted():
    # the limit counts levels below the field: [ {message} ... ] is 2, each {"k": ...} one more
    value = [{"role": "user", "content": _nested(MAX_CONTENT_DEPTH - 2)}]
    events, _, failures = parse_keeping([_canonical("deep-ok", {"prompt": value})], "canonical", None)
    assert failures == [] and len(events) == 1
    (_, message), = encode_batches(events)
    result = process_batch([RawRecord(message, "tokenmeter.usage", 0, 0)], load_price_book())
    assert result.priced_count == 1 and result.deadletters == []


def test_the_worker_names_the_depth_of_a_deep_record_on_its_topic():
    value = orjson.dumps(_canonical("deep-topic", {"prompt": [{"role": "user", "content": _nested(240)}]}))
    result = process_batch([RawRecord(value, "tokenmeter.usage", 0, 7)], load_price_book())
    assert result.priced_count == 0 and len(result.deadletters) == 1
    assert "nested deeper than" in result.deadletters[0]["reason"], result.deadletters[0]["reason"]
