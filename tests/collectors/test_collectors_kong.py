from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pytest

from collectors import DIALECTS, AttributionMapping, DialectError, parse_record
from collectors.dialects.kong import KONG_STREAM_OUTPUT_NOT_LOGGED
from tokenmeter.events import UsageEvent

kong = DIALECTS["kong"]


def test_reference_entry(payload):
    [event] = kong.parse(payload("kong_openai"))
    assert event.event_id == "9ec9264afbbbad5fe5c64877d92eeb04"
    assert event.ts == datetime(2026, 8, 19, 4, 20, 1, 719000, tzinfo=timezone.utc)
    assert (event.source, event.provider, event.model, event.operation) == ("kong", "openai", "gpt-4o-2024-08-06",
                                                                           "chat")
    assert event.status == "ok"
    assert event.usage.input_tokens == 13 and event.usage.output_tokens == 12
    assert event.latency_ms == 972 and event.ttft_ms == 971
    assert event.attribution.project == "ai-gateway"  # service.name
    assert event.attribution.route == "openai-chat"
    assert event.content is None


def test_legacy_block_spellings_and_attribution(payload):
    [event] = kong.parse(payload("kong_legacy"))
    assert event.model == "gpt-3.5-turbo"  # no response_model: request_model
    assert event.usage.input_tokens == 25 and event.usage.output_tokens == 12
    assert event.event_id == "legacy-req-1"  # x-kong-request-id header when request.id is absent
    assert event.status == "ok"  # upstream_status "200" as a string
    a = event.attribution
    assert (a.team, a.user, a.api_key, a.feature, a.project) == ("search", "alice", "cred-7", "autocomplete", "llm-svc")


def test_cached_and_reasoning_details(payload):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["usage"].update(prompt_tokens_details={"cached_tokens": 8},
                                         completion_tokens_details={"reasoning_tokens": 5})
    [event] = kong.parse(entry)
    assert event.usage.cached_input_tokens == 8 and event.usage.input_tokens == 13
    assert event.usage.reasoning_tokens == 5 and event.usage.output_tokens == 12


@pytest.mark.parametrize("status", [502, "502", "429"])
def test_upstream_error_status(payload, status):
    entry = payload("kong_openai")
    entry["upstream_status"] = status
    [event] = kong.parse(entry)
    assert event.status == "error"


def test_kafka_log_array_is_a_batch(payload):
    first, second = payload("kong_openai"), payload("kong_openai")
    second["request"]["id"] = "second"
    events = parse_record(json.dumps([first, second]).encode())
    assert [e.event_id for e in events] == ["9ec9264afbbbad5fe5c64877d92eeb04", "second"]


def test_batch_with_a_broken_entry_keeps_the_good_ones(payload):
    good, bad = payload("kong_openai"), payload("kong_openai")
    bad["ai"]["proxy"]["usage"]["prompt_tokens"] = -3
    with pytest.raises(DialectError) as info:
        kong.parse([good, bad])
    assert "[1].ai.proxy.usage.prompt_tokens" in str(info.value)
    assert "negative" in str(info.value)
    assert [e.event_id for e in info.value.partial] == ["9ec9264afbbbad5fe5c64877d92eeb04"]


def test_stream_with_zero_completion_tokens_is_not_trusted(payload):
    entry = payload("kong_openai")
    proxy = entry["ai"]["proxy"]
    proxy["meta"]["request_mode"] = "stream"
    proxy["usage"].update(prompt_tokens=18, completion_tokens=0, total_tokens=18)
    proxy["payload"] = {"request": json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "1+1?"}]}),
                        "response": "The answer to 1 + 1 is 2."}
    [event] = kong.parse(entry)
    assert event.usage is None  # Kong/kong#14535: the worker counts the text instead
    assert event.content.prompt == [{"role": "user", "content": "1+1?"}]
    assert event.content.completion == "The answer to 1 + 1 is 2."


# What Kong logs for a stream (Kong/kong kong/llm/plugin/shared-filters/normalize-sse-chunk.lua @ 007d34e): with
# log_statistics on, ai.proxy.usage.prompt_tokens is the provider's count from its usage frame and completion_tokens
# Kong's own estimate, ceil(chars / 4) of each frame's choices[0].delta.content, added whether or not log_payloads
# is on. completion_tokens 0 therefore means Kong read no text from the frames (Kong/kong#14535, Kong 3.10 through
# OpenRouter: "completion_tokens to 0 and no response logging"; #14768, Responses API SSE: all counts 0), not an
# empty answer. The prompt count it did log is the provider's: billed. So such a call is metered with the logged
# prompt and marked a lower bound (left23; it was a dead letter, walk22), and only a stream with no count at all and
# no payload is a dead letter. The entries below are the Kong docs' reference entry (payloads/kong_openai.json, see
# /work/shared/reference/formats.md) turned into such a stream.


def _stream_without_output(payload, prompt_tokens=18):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["meta"]["request_mode"] = "stream"
    entry["ai"]["proxy"]["usage"].update(prompt_tokens=prompt_tokens, completion_tokens=0, total_tokens=prompt_tokens)
    return entry


@pytest.mark.parametrize("encoded", [False, True])
def test_stream_with_zero_completion_tokens_and_no_payload_is_a_marked_lower_bound(payload, encoded):
    [event] = parse_record(_stream_without_output(payload), "kong", encoded=encoded)
    if encoded:  # the batch form hands the collectors written events, those of the per-entry parser too (hostile32)
        event = UsageEvent.model_validate_json(event.json)
    assert (event.usage.input_tokens, event.usage.output_tokens) == (18, 0)
    assert event.usage_assumption == KONG_STREAM_OUTPUT_NOT_LOGGED


def test_stream_whose_payload_lost_the_answer_keeps_the_logged_prompt_count(payload):
    """#14535: the body buffer is filled from the same frames, so the payload holds the request but no answer;
    the provider's prompt count beats a count of the prompt text, and the event says output is missing."""
    entry = _stream_without_output(payload)
    entry["ai"]["proxy"]["payload"] = {"request": json.dumps({"messages": [{"role": "user", "content": "1+1?"}]})}
    [event] = kong.parse(entry)
    assert (event.usage.input_tokens, event.usage.output_tokens, event.content) == (18, 0, None)
    assert event.usage_assumption == KONG_STREAM_OUTPUT_NOT_LOGGED


def test_stream_with_no_count_and_no_payload_is_a_dead_letter_saying_why(payload):
    """Nothing logged at all (#14768's Responses stream): a dead letter naming the issue and log_payloads; the
    batch's other entries still count."""
    entry = _stream_without_output(payload, prompt_tokens=0)
    good = payload("kong_openai")
    good["request"]["id"] = "good-one"
    with pytest.raises(DialectError) as info:
        kong.parse([good, entry])
    assert "Kong/kong#14535" in info.value.reason and "log_payloads" in info.value.reason
    assert "[1].ai.proxy.usage" in str(info.value)
    assert [e.event_id for e in info.value.partial] == ["good-one"]


def test_a_block_without_usage_is_a_dead_letter_naming_log_statistics(payload):
    entry = payload("kong_openai")
    del entry["ai"]["proxy"]["usage"]
    with pytest.raises(DialectError) as info:
        parse_record(entry, "kong", encoded=True)
    assert "log_statistics" in info.value.reason


def test_a_failed_call_without_usage_is_still_an_error_event(payload):
    entry = payload("kong_openai")
    del entry["ai"]["proxy"]["usage"]
    entry["upstream_status"] = 500
    [event] = kong.parse(entry)
    assert (event.status, event.usage) == ("error", None)  # the worker meters a failed call as zero


def test_stream_with_real_completion_count_is_kept(payload):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["meta"]["request_mode"] = "stream"
    [event] = kong.parse(entry)
    assert event.usage.output_tokens == 12


def test_semantic_cache_hit_has_zero_usage(payload):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["meta"]["request_mode"] = "stream"
    entry["ai"]["proxy"]["usage"].update(prompt_tokens=0, completion_tokens=0)
    entry["ai"]["proxy"]["cache"] = {"cache_status": "Hit"}
    [event] = kong.parse(entry)
    assert event.usage.total_tokens == 0
    assert event.attribution.tags == {"cache_status": "Hit"}


def test_no_request_id_gives_a_deterministic_id(payload):
    entry = payload("kong_openai")
    del entry["request"]["id"]
    del entry["response"]["headers"]["x-kong-request-id"]
    first, second = kong.parse(entry)[0].event_id, kong.parse(payload("kong_openai") | {
        "request": entry["request"], "response": entry["response"]})[0].event_id
    assert first == second and first.startswith("kong:")


def test_string_token_counts(payload):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["usage"].update(prompt_tokens="13", completion_tokens="12")
    [event] = kong.parse(entry)
    assert event.usage.total_tokens == 25


@pytest.mark.parametrize("field, value, message", [
    ("prompt_tokens", "lots", "ai.proxy.usage.prompt_tokens: expected an integer"),
    ("prompt_tokens", 1.5, "ai.proxy.usage.prompt_tokens: expected an integer"),
    ("completion_tokens", -1, "ai.proxy.usage.completion_tokens: must not be negative"),
])
def test_bad_token_values_name_the_field(payload, field, value, message):
    entry = payload("kong_openai")
    entry["ai"]["proxy"]["usage"][field] = value
    with pytest.raises(DialectError, match=message.replace(".", r"\.")):
        kong.parse(entry)


def test_missing_model_and_missing_block(payload):
    entry = payload("kong_openai")
    meta = entry["ai"]["proxy"]["meta"]
    del meta["response_model"], meta["request_model"]
    del entry["ai"]["proxy"]["tried_targets"]
    with pytest.raises(DialectError, match=r"ai\.proxy: missing model"):
        kong.parse(entry)
    with pytest.raises(DialectError, match="no AI plugin block"):
        kong.parse(payload("kong_openai") | {"ai": {"something": 1}})


def test_entry_without_ai_block_is_skipped(payload):
    entry = payload("kong_openai")
    del entry["ai"]
    assert kong.parse(entry) == []


def test_mapping_overrides_defaults(payload):
    mapping = AttributionMapping.from_dict({"team": "field:consumer_groups.0.name", "org": "const:acme",
                                            "project": None, "tags": {"ws": "field:workspace_name"}})
    [event] = kong.parse(payload("kong_legacy"), mapping)
    a = event.attribution
    assert (a.team, a.org, a.project, a.user) == ("gold", "acme", None, "alice")
    [event] = kong.parse(payload("kong_openai"), mapping)
    assert event.attribution.tags == {"ws": "default"}


def test_abbreviated_ai_block_is_read_when_unambiguous(payload):
    """Kong's docs print some entries with `meta`/`usage` directly under `ai` (the plugin level left out).
    With both present and no plugin blocks beside them, there is one reading: it is the proxy block."""
    entry = payload("kong_openai")
    entry["ai"] = entry["ai"]["proxy"]
    [event] = kong.parse(entry)
    [full] = kong.parse(payload("kong_openai"))
    assert (event.model, event.provider, event.usage) == (full.model, full.provider, full.usage)
    assert event.event_id == full.event_id


@pytest.mark.parametrize("ai, missing", [
    ({"usage": {"prompt_tokens": 3, "completion_tokens": 1}}, "ai.meta"),
    ({"meta": {"request_model": "gpt-4o", "provider_name": "openai"}}, "ai.usage"),
])
def test_abbreviated_ai_block_missing_half_is_dead_lettered_naming_it(payload, ai, missing):
    with pytest.raises(DialectError, match="abbreviated ai block.*no " + re.escape(missing)):
        kong.parse(payload("kong_openai") | {"ai": ai})


def test_abbreviated_ai_block_beside_plugin_blocks_is_ambiguous(payload):
    entry = payload("kong_openai")
    entry["ai"]["meta"] = dict(entry["ai"]["proxy"]["meta"])
    with pytest.raises(DialectError, match="ambiguous"):
        kong.parse(entry)
