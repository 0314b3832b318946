"""Kong's streamed `completion_tokens` is not a provider's count unless the provider's frames carried one (left24).

Provenance: Kong/kong kong/llm/plugin/shared-filters/normalize-sse-chunk.lua. At 007d34e every frame's delta text
adds ceil(#text / 4) to `llm_completion_tokens_count` ("incredibly loose estimate ... every 4 characters is a
token"), and a frame whose driver returns metadata then ADDS the provider's count (Anthropic's message_delta
`output_tokens`, kong/llm/drivers/anthropic.lua) or, for `gemini` only, SETS it (kong/llm/drivers/gemini.lua:
candidatesTokenCount). At fb2c78f the estimate is made once, ceil(#answer / 4), when no frame carried a count. The
OpenAI driver returns no metadata for stream frames (kong/llm/drivers/openai.lua, `handle_stream_event` returns
event_t.data only), so an OpenAI(-compatible) stream's completion_tokens is Kong's chars/4 estimate in every version,
and an Anthropic one is that estimate plus Anthropic's count in the older one; a log does not say which version wrote
it. So a streamed count from any provider but Gemini is marked `kong-stream-output-estimated`, or recounted from the
logged text when the request and the answer are both logged; Gemini's stays trusted (the provider's count)."""

from __future__ import annotations

import copy
import json

import pytest

from collectors import parse_record

from collectors.sink import encode_batches
from streams.metering.meter import meter

KONG_STREAM_OUTPUT_ESTIMATED = "kong-stream-output-estimated"
ANSWER = "The answer to 1 + 1 is 2."


def _stream(payload, provider="openai", model="gpt-4o", completion_tokens=7):
    entry = payload("kong_openai")
    proxy = entry["ai"]["proxy"]
    proxy["meta"].update(request_mode="stream", provider_name=provider, request_model=model, response_model=model)
    proxy["usage"].update(prompt_tokens=13, completion_tokens=completion_tokens, total_tokens=13 + completion_tokens)
    return entry


def _both(entry):
    events = parse_record(copy.deepcopy(entry), "kong")
    assert encode_batches(parse_record(copy.deepcopy(entry), "kong", encoded=True)) == encode_batches(events)
    return events


def test_openai_stream_completion_count_is_marked_kongs_estimate(payload):
    # ceil(len(ANSWER) / 4) = 7: what normalize-sse-chunk.lua logs for this answer, whatever OpenAI counted
    assert -(-len(ANSWER) // 4) == 7
    [event] = _both(_stream(payload))
    assert (event.usage.input_tokens, event.usage.output_tokens) == (13, 7)
    assert event.usage_assumption == KONG_STREAM_OUTPUT_ESTIMATED


def test_stream_with_request_and_answer_logged_is_recounted_from_the_text(payload):
    entry = _stream(payload)
    entry["ai"]["proxy"]["payload"] = {
        "request": json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "1+1?"}]}),
        "response": ANSWER}
    [event] = _both(entry)
    assert event.usage is None and event.content.completion == ANSWER
    usage, source = meter(event)  # the worker's tokenizer count, not Kong's chars/4
    assert source == "estimated" and usage.output_tokens > 0 and usage.input_tokens > 0


def test_anthropic_stream_is_marked_for_both_gaps(payload):
    [event] = _both(_stream(payload, "anthropic", "claude-sonnet-4-20250514", 85))
    assert event.usage.output_tokens == 85
    assert event.usage_assumption == f"kong-anthropic-input-excludes-cache-tokens+{KONG_STREAM_OUTPUT_ESTIMATED}"


@pytest.mark.parametrize("provider, model", [("gemini", "gemini-2.0-flash"), ("openai", "gpt-4o")])
def test_provider_counts_stay_trusted(payload, provider, model):
    """Gemini's streamed count is Gemini's own (Kong sets it); a oneshot call's usage is the provider's."""
    entry = _stream(payload, provider, model)
    if provider == "openai":
        entry["ai"]["proxy"]["meta"]["request_mode"] = "oneshot"
    [event] = _both(entry)
    assert event.usage.output_tokens == 7 and event.usage_assumption is None
