from __future__ import annotations

import base64
import copy
import json
from datetime import datetime, timezone

import pytest

from collectors import DIALECTS, AttributionMapping, DialectError, parse_record

cloudevents = DIALECTS["cloudevents"]
canonical = DIALECTS["canonical"]

CANONICAL = {"event_id": "evt-1", "ts": "2025-03-01T12:00:00Z", "source": "sdk", "provider": "anthropic",
             "model": "claude-sonnet-4-5", "attribution": {"team": "search"},
             "usage": {"input_tokens": 100, "cached_input_tokens": 40, "output_tokens": 10}}


def test_openmeter_style_input_event(payload):
    [event] = cloudevents.parse(payload("cloudevent_openmeter"))
    assert event.event_id == "my-app:5c10fade-1c9e-4d6c-8275-c52c36731d3d"
    assert event.ts == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert (event.provider, event.model, event.source) == ("openai", "gpt-4o", "cloudevents")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (100, 0)
    assert (event.attribution.user, event.attribution.project) == ("customer-1", "my-app")


def test_openmeter_output_string_tokens_and_batch(payload):
    first = payload("cloudevent_openmeter")
    second = payload("cloudevent_openmeter") | {"id": "2", "data": {"tokens": "123456", "model": "gpt4-turbo",
                                                                     "type": "output", "provider": "openai"}}
    events = parse_record(json.dumps([first, second]))
    assert [e.usage.output_tokens for e in events] == [0, 123456]


@pytest.mark.parametrize("data, message", [
    ({"tokens": 10, "model": "gpt-4o"}, r"data\.type: expected one of input"),
    ({"tokens": -10, "model": "gpt-4o", "type": "input"}, r"data\.tokens: must not be negative"),
    ({"tokens": 10, "type": "input"}, r"data\.model: missing model"),
    ({"tokens": 10, "model": "my-model", "type": "input"}, r"data\.provider: no provider"),
])
def test_openmeter_malformed(payload, data, message):
    with pytest.raises(DialectError, match=message):
        cloudevents.parse(payload("cloudevent_openmeter") | {"data": data})


def test_envelope_must_have_id_and_source(payload):
    with pytest.raises(DialectError, match="id: missing id"):
        cloudevents.parse(payload("cloudevent_openmeter") | {"id": None})
    with pytest.raises(DialectError, match="source: missing source"):
        cloudevents.parse(payload("cloudevent_openmeter") | {"source": ""})


def test_canonical_like_data_and_base64(payload):
    body = copy.deepcopy({k: v for k, v in CANONICAL.items() if k not in ("event_id", "ts")})
    envelope = {"specversion": "1.0", "id": "42", "source": "billing", "type": "llm.call",
                "time": "2025-03-01T12:00:00Z", "team": "ignored-because-data-says-search",
                "data_base64": base64.b64encode(json.dumps(body).encode()).decode()}
    [event] = cloudevents.parse(envelope)
    assert event.event_id == "billing:42" and event.source == "sdk"
    assert event.attribution.team == "search" and event.attribution.project == "billing"
    assert event.usage.cached_input_tokens == 40
    body["usage"]["output_tokenz"] = 3
    with pytest.raises(DialectError, match=r"data: invalid event in data: usage\.output_tokenz"):
        cloudevents.parse(envelope | {"data_base64": None, "data": body})


def test_canonical_event_round_trip_and_errors():
    [event] = canonical.parse(CANONICAL)
    assert event.model_dump(mode="json", exclude_none=True)["usage"]["input_tokens"] == 100
    assert parse_record(json.dumps(CANONICAL))[0].event_id == "evt-1"
    with pytest.raises(DialectError, match=r"usage\.input_tokens: Input should be greater than or equal to 0"):
        canonical.parse(CANONICAL | {"usage": {"input_tokens": -1}})
    with pytest.raises(DialectError, match="model"):
        canonical.parse({k: v for k, v in CANONICAL.items() if k != "model"})
    with pytest.raises(DialectError, match="exceed input_tokens"):
        canonical.parse(CANONICAL | {"usage": {"input_tokens": 10, "cached_input_tokens": 40}})


def test_canonical_mapping_fills_only_gaps():
    mapping = AttributionMapping.from_dict({"org": "const:acme", "team": "const:other"})
    [event] = canonical.parse(CANONICAL, mapping)
    assert (event.attribution.org, event.attribution.team) == ("acme", "search")
