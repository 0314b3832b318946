from __future__ import annotations

import json

import pytest
import yaml

from collectors import (DIALECTS, AttributionMapping, DialectError, anthropic_usage, detect_dialect, gemini_usage,
                        openai_usage, otel_usage, parse_record)

REFERENCE = {
    "kong_openai": "kong", "kong_legacy": "kong", "litellm_success": "litellm", "apisix_entry": "apisix",
    "otlp_traces": "otel", "cloudevent_openmeter": "cloudevents", "openai_chat": "openai",
    "anthropic_message": "anthropic", "gemini_response": "gemini", "openai_stream": "openai",
    "anthropic_stream": "anthropic",
}


@pytest.mark.parametrize("name, dialect", REFERENCE.items())
def test_detection_and_deterministic_ids(payload, name, dialect):
    record = payload(name)
    assert detect_dialect(record) == dialect
    as_bytes = (record if isinstance(record, str) else json.dumps(record)).encode()
    assert detect_dialect(as_bytes) == dialect
    first, again = parse_record(record), parse_record(as_bytes)
    assert first and [e.event_id for e in first] == [e.event_id for e in again]
    for event in first:  # every event survives the JSON round trip of the contract
        assert type(event).model_validate_json(event.model_dump_json()) == event


def test_detection_of_canonical_wrapper_and_unknown(payload):
    canonical = {"event_id": "e", "ts": "2025-01-01T00:00:00Z", "source": "s", "provider": "openai", "model": "m"}
    assert detect_dialect(canonical) == "canonical"
    assert detect_dialect({"tokenmeter": {}, "response": payload("anthropic_message")}) == "anthropic"
    assert detect_dialect([payload("kong_openai"), payload("kong_legacy")]) == "kong"
    with pytest.raises(DialectError, match=r"unknown record shape \(top-level keys: foo\)"):
        detect_dialect({"foo": 1})
    with pytest.raises(DialectError, match="array mixes dialects"):
        detect_dialect([payload("kong_openai"), payload("apisix_entry")])
    with pytest.raises(DialectError, match="invalid JSON"):
        detect_dialect('{"truncated": ')
    with pytest.raises(DialectError, match="neither JSON nor server-sent events"):
        parse_record("hello")
    with pytest.raises(DialectError, match="unknown dialect 'nope'"):
        parse_record({}, dialect="nope")
    assert parse_record([]) == []


def test_forcing_a_dialect_on_the_wrong_shape_names_the_problem(payload):
    with pytest.raises(DialectError, match="missing startTime"):
        DIALECTS["litellm"].parse(payload("kong_openai"))
    with pytest.raises(DialectError, match="not an Anthropic message"):
        parse_record(payload("openai_chat"), dialect="anthropic")
    with pytest.raises(DialectError, match="expected a Kong log entry object, got str"):
        DIALECTS["kong"].parse(["x"])


def test_openai_usage_never_double_counts_cached():
    usage = openai_usage({"prompt_tokens": 100, "completion_tokens": 5,
                          "prompt_tokens_details": {"cached_tokens": 60}, "cache_read_input_tokens": 60})
    assert (usage.input_tokens, usage.cached_input_tokens) == (100, 60)
    assert openai_usage({"prompt_tokens": 100, "prompt_cache_hit_tokens": 30}).cached_input_tokens == 30  # DeepSeek
    assert openai_usage({"model": "x"}) is None
    assert openai_usage({"prompt_tokens": "7", "completion_tokens": 2.0}).total_tokens == 9
    with pytest.raises(DialectError, match=r"usage\.prompt_tokens_details: expected an object, got int"):
        openai_usage({"prompt_tokens": 1, "prompt_tokens_details": 5})
    with pytest.raises(DialectError, match=r"usage\.completion_tokens: expected an integer, got boolean"):
        openai_usage({"prompt_tokens": 1, "completion_tokens": True})


def test_anthropic_gemini_otel_usage_shapes():
    a = anthropic_usage({"input_tokens": 10, "output_tokens": 3})
    assert (a.input_tokens, a.cached_input_tokens, a.cache_write_tokens) == (10, 0, 0)
    g = gemini_usage({"promptTokenCount": 100, "candidatesTokenCount": 10, "toolUsePromptTokenCount": 5})
    assert (g.input_tokens, g.output_tokens, g.reasoning_tokens) == (105, 10, 0)
    o = otel_usage({"gen_ai.usage.input_tokens": 50, "gen_ai.usage.output_tokens": 7,
                    "gen_ai.usage.cache_read.input_tokens": 20, "gen_ai.usage.cache_read_input_tokens": 20})
    assert (o.input_tokens, o.cached_input_tokens) == (50, 20)
    assert otel_usage({"gen_ai.request.model": "m"}) is None
    with pytest.raises(DialectError, match=r"usageMetadata\.thoughtsTokenCount: must not be negative"):
        gemini_usage({"promptTokenCount": 1, "thoughtsTokenCount": -2})


def test_mapping_loads_from_yaml_and_rejects_typos():
    mapping = AttributionMapping.from_dict(yaml.safe_load("""
team: [header:x-my-team, field:consumer_groups.0.name]
org: const:acme
project: null
tags: {env: header:x-env}
provider: openai
"""))
    assert mapping.selectors("kong")["team"] == ("header:x-my-team", "field:consumer_groups.0.name")
    assert mapping.selectors("kong")["project"] == ()
    assert mapping.selectors("kong")["user"][0] == "field:consumer.username"  # inherited default
    assert AttributionMapping.from_dict({"inherit_defaults": False}).selectors("kong")["user"] == ()
    with pytest.raises(ValueError, match=r"unknown key\(s\) 'teams'"):
        AttributionMapping.from_dict({"teams": "header:x"})
    with pytest.raises(ValueError, match="unknown selector kind 'hdr'"):
        AttributionMapping.from_dict({"team": "hdr:x-team"})
    with pytest.raises(ValueError, match="team: expected a selector string"):
        AttributionMapping.from_dict({"team": 5})
