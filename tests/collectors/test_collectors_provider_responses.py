from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from collectors import DIALECTS, DialectError, detect_dialect, parse_record
from collectors.decode import parse_sse


def test_openai_chat_completion_details(payload):
    [event] = parse_record(payload("openai_chat"))
    assert (event.event_id, event.provider, event.model) == ("chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "openai",
                                                             "o3-mini-2025-01-31")
    assert event.ts == datetime.fromtimestamp(1741570283, tz=timezone.utc)
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens) == (1117, 1024, 300, 256)
    assert event.service_tier == "default" and event.attribution.team is None and event.content is None


def test_openai_responses_api_and_its_stream():
    response = {"id": "resp_67cc", "object": "response", "created_at": 1741476542, "status": "completed",
                "model": "gpt-4.1-2025-04-14", "output": [], "error": None,
                "usage": {"input_tokens": 328, "input_tokens_details": {"cached_tokens": 128}, "output_tokens": 52,
                          "output_tokens_details": {"reasoning_tokens": 20}, "total_tokens": 380}}
    [event] = parse_record(response)
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens) == (328, 128, 52, 20)
    created = {"type": "response.created", "sequence_number": 0,
               "response": response | {"status": "in_progress", "usage": None}}
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hi", "item_id": "msg_1"}
    completed = {"type": "response.completed", "sequence_number": 2, "response": response}
    stream = [created, delta, completed]
    assert detect_dialect(stream) == "openai"
    [streamed] = parse_record(stream)
    assert streamed.usage == event.usage and streamed.event_id == "resp_67cc"
    [cut] = parse_record([created, delta])
    assert cut.usage is None and cut.content.completion == "Hi"


def test_openai_stream_with_final_usage_chunk(payload):
    sse = payload("openai_stream")
    assert detect_dialect(sse) == "openai"
    [event] = parse_record(sse)
    assert (event.event_id, event.model) == ("chatcmpl-123", "gpt-4o-mini-2024-07-18")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (9, 3)
    assert event.content is None


def test_openai_stream_without_usage_chunk_counts_text(payload):
    chunks = parse_sse(payload("openai_stream"))[:-1]  # include_usage off, or the stream was cut
    wrapped = {"tokenmeter": {"attribution": {"team": "search"}},
               "request": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}]},
               "response": chunks}
    [event] = parse_record(wrapped)
    assert event.usage is None
    assert event.content.completion == "Hello there!"
    assert event.content.prompt == [{"role": "user", "content": "Say hello"}]
    assert event.attribution.team == "search"


def test_anthropic_message_cache_conversion(payload):
    [event] = parse_record(payload("anthropic_message"))
    u = event.usage
    # input_tokens (2095) excludes cache reads (2051) and writes (2051): canonical input is their sum.
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (6197, 2051,
                                                                                                      2051, 0)
    assert u.output_tokens == 503
    assert (event.provider, event.model, event.service_tier, event.batch) == ("anthropic",
                                                                              "claude-sonnet-4-5-20250929",
                                                                              "standard", False)
    assert event.event_id == "msg_013Zva2CMHLNnXjNJJKqJ2EF"


def test_anthropic_ttl_split_and_batch_tier(payload):
    message = payload("anthropic_message")
    message["usage"].update(cache_creation={"ephemeral_5m_input_tokens": 51, "ephemeral_1h_input_tokens": 2000},
                            service_tier="batch")
    [event] = parse_record(message)
    assert (event.usage.cache_write_tokens, event.usage.cache_write_1h_tokens) == (2051, 2000)
    assert event.batch is True
    del message["usage"]["cache_creation_input_tokens"]  # only the split given: the total is its sum
    assert parse_record(message)[0].usage.cache_write_tokens == 2051


def test_anthropic_stream_takes_the_last_cumulative_delta(payload):
    sse = payload("anthropic_stream")
    assert detect_dialect(sse) == "anthropic"
    [event] = parse_record(sse)
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens) == (325, 200, 100, 60)
    assert u.output_tokens == 15  # last message_delta, not 1 + 10 + 15
    assert event.model == "claude-sonnet-4-5-20250929"


def test_anthropic_cut_stream_counts_text(payload):
    events = [e for e in parse_sse(payload("anthropic_stream")) if e["type"] not in ("message_delta", "message_stop")]
    [event] = DIALECTS["anthropic"].parse(events)
    assert event.usage is None and event.content.completion == "Hello!"


def test_gemini_thoughts_are_output(payload):
    [event] = parse_record(payload("gemini_response"))
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens) == (326, 173)  # prompt already includes cached
    assert (u.output_tokens, u.reasoning_tokens) == (63 + 154, 154)
    assert u.total_tokens == 543
    assert (event.provider, event.model) == ("gemini", "gemini-2.5-flash")
    assert event.event_id.startswith("gemini:")
    assert parse_record(payload("gemini_response"))[0].event_id == event.event_id


def test_gemini_stream_and_wrapper_overrides():
    def chunk(text, candidates, finish=None):
        cand = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish:
            cand["finishReason"] = finish
        return {"candidates": [cand], "modelVersion": "gemini-2.5-pro", "responseId": "r-1",
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": candidates,
                                  "totalTokenCount": 10 + candidates}}

    stream = [chunk("Hel", 1), chunk("lo", 2, "STOP")]
    [event] = parse_record(stream)
    assert (event.usage.output_tokens, event.event_id) == (2, "r-1")
    [cut] = parse_record(stream[:1])
    assert cut.usage is None and cut.content.completion == "Hel"
    wrapped = {"tokenmeter": {"provider": "vertex_ai", "event_id": "mine", "ts": "2025-05-01T00:00:00Z"},
               "response": stream}
    [event] = parse_record(wrapped)
    assert (event.provider, event.event_id, event.ts.year) == ("vertex_ai", "mine", 2025)


def test_provider_response_errors(payload):
    with pytest.raises(DialectError, match="API error"):
        DIALECTS["anthropic"].parse({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with pytest.raises(DialectError, match="tokenmeter: unknown field"):
        parse_record({"tokenmeter": {"team": "x"}, "response": payload("openai_chat")})
    no_model = payload("gemini_response")
    del no_model["modelVersion"]
    with pytest.raises(DialectError, match="add tokenmeter.model"):
        DIALECTS["gemini"].parse(no_model)
    assert parse_record({"tokenmeter": {"model": "gemini-2.0-flash"}, **no_model})[0].model == "gemini-2.0-flash"
    broken = payload("openai_chat")
    broken["usage"]["prompt_tokens_details"]["cached_tokens"] = 5000
    with pytest.raises(DialectError, match=r"^usage: .*exceed input_tokens"):
        parse_record(broken)


def test_array_of_full_responses_is_a_batch(payload):
    second = payload("openai_chat") | {"id": "chatcmpl-2"}
    events = parse_record(json.dumps([payload("openai_chat"), second]))
    assert [e.event_id for e in events] == ["chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG", "chatcmpl-2"]


def test_openai_embeddings_response():
    response = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                "model": "text-embedding-3-small", "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    [event] = parse_record(response)
    assert (event.operation, event.usage.input_tokens, event.usage.output_tokens) == ("embeddings", 8, 0)


def test_responses_api_cache_writes_are_read_from_input_tokens_details():
    """The Responses API reports prompt-cache writes in `input_tokens_details.cache_write_tokens` (as Chat
    Completions does in `prompt_tokens_details`); models that bill writes above input must see them."""
    response = {"id": "resp_026af6d2", "object": "response", "created_at": 1784092257, "status": "completed",
                "model": "gpt-5.6-sol", "output": [],
                "usage": {"input_tokens": 4020, "input_tokens_details": {"cache_write_tokens": 4012, "cached_tokens": 0},
                          "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 4025}}
    [event] = parse_record(response)
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens) == (4020, 0, 4012, 5)
