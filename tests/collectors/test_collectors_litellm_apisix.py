from __future__ import annotations

from datetime import datetime, timezone

import pytest

from collectors import DIALECTS, AttributionMapping, DialectError, parse_record

litellm = DIALECTS["litellm"]
apisix = DIALECTS["apisix"]


def test_litellm_reference_payload(payload):
    [event] = litellm.parse(payload("litellm_success"))
    assert event.event_id == "chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f"
    assert event.ts == datetime(2025, 1, 24, 9, 20, 46, 847371, tzinfo=timezone.utc)
    assert (event.provider, event.model, event.operation, event.status) == ("openai", "gpt-4o", "chat", "ok")
    assert event.usage.input_tokens == 10 and event.usage.output_tokens == 20
    assert event.latency_ms == pytest.approx(4.583)
    assert event.ttft_ms == pytest.approx(4.583)  # stream: completionStartTime - startTime
    assert event.attribution.team is None and event.attribution.tags == {}


def test_litellm_epoch_timestamps_and_key_metadata(payload):
    record = payload("litellm_success")
    record.update(startTime=1737710446.847371, endTime=1737710447.347371, stream=False,
                  request_tags=["env:prod", "beta"], end_user="cust-9")
    record["metadata"].update(user_api_key_team_id="team-1", user_api_key_org_id="org-1",
                              user_api_key_user_id="u-1", user_api_key_hash="88dc28d0",
                              requester_custom_headers={"x-tokenmeter-feature": "summarize"})
    [event] = litellm.parse(record)
    assert event.ts == datetime(2025, 1, 24, 9, 20, 46, 847371, tzinfo=timezone.utc)
    assert event.latency_ms == pytest.approx(500.0)
    assert event.ttft_ms is None
    a = event.attribution
    assert (a.team, a.org, a.user, a.api_key, a.feature) == ("team-1", "org-1", "u-1", "88dc28d0", "summarize")
    assert a.tags == {"env": "prod", "beta": "true", "end_user": "cust-9"}


def test_litellm_cached_tokens_from_prompt_details_and_usage_object(payload):
    record = payload("litellm_success")
    record["response"]["usage"].update(prompt_tokens=2000, total_tokens=2020,
                                       prompt_tokens_details={"cached_tokens": 1500})
    [event] = litellm.parse(record)
    assert (event.usage.input_tokens, event.usage.cached_input_tokens) == (2000, 1500)

    # Anthropic through LiteLLM: prompt_tokens already includes cache reads and writes; both spellings present.
    del record["response"]
    record["metadata"]["usage_object"] = {
        "prompt_tokens": 4197, "completion_tokens": 503, "total_tokens": 4700,
        "prompt_tokens_details": {"cached_tokens": 2051, "cache_creation_tokens": 51},
        "cache_read_input_tokens": 2051, "cache_creation_input_tokens": 51,
        "cache_creation_token_details": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 51}}
    [event] = litellm.parse(record)
    u = event.usage
    parts = (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.cache_write_1h_tokens)
    assert parts == (4197, 2051, 51, 51)


def test_litellm_failure_is_an_error_event(payload):
    record = payload("litellm_success")
    record.update(status="failure", error_str="RateLimitError", response=None, prompt_tokens=0,
                  completion_tokens=0, total_tokens=0)
    [event] = litellm.parse(record)
    assert event.status == "error"
    assert event.usage.total_tokens == 0


def test_litellm_cache_hit_costs_nothing(payload):
    record = payload("litellm_success") | {"cache_hit": True}
    [event] = litellm.parse(record)
    assert event.usage.total_tokens == 0 and event.attribution.tags["cache_hit"] == "true"


def test_litellm_without_usage_keeps_the_text(payload):
    record = payload("litellm_success")
    del record["response"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        del record[key]
    [event] = litellm.parse(record)
    assert event.usage is None
    assert event.content.prompt == [{"role": "user", "content": "Hello, world!"}]


@pytest.mark.parametrize("change, message", [
    ({"startTime": "yesterday"}, "startTime: expected an epoch number or ISO-8601"),
    ({"model": None, "response": None}, "missing model"),
    ({"status": "ok"}, "status: expected 'success' or 'failure'"),
    ({"startTime": None}, "missing startTime"),
])
def test_litellm_malformed(payload, change, message):
    with pytest.raises(DialectError, match=message):
        litellm.parse(payload("litellm_success") | change)


def test_apisix_reference_entry(payload):
    [event] = apisix.parse(payload("apisix_entry"))
    assert (event.provider, event.model, event.source) == ("openai", "gpt-4", "apisix")  # provider from model
    assert event.usage.input_tokens == 23 and event.usage.output_tokens == 8
    assert event.ts == datetime.fromtimestamp(1742531280.142, tz=timezone.utc)
    assert event.latency_ms == 2858.0 and event.ttft_ms == 2858
    assert event.attribution.user == "team_a" and event.attribution.route == "ai-proxy-route"
    assert event.event_id.startswith("apisix:") and event.event_id == apisix.parse(payload("apisix_entry"))[0].event_id


def test_apisix_string_numbers_payloads_and_errors(payload):
    entry = payload("apisix_entry")
    entry["llm_summary"].update(prompt_tokens="23", completion_tokens="0", model="my-llama")
    entry["llm_request"] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    entry["llm_response_text"] = {"content": "hello there"}
    entry["response"]["status"] = "500"
    entry["request"]["headers"] = {"X-Request-Id": "rid-1"}
    [event] = apisix.parse(entry, AttributionMapping.from_dict({"provider": "ollama"}))
    assert event.provider == "ollama" and event.event_id == "rid-1" and event.status == "error"
    assert event.usage is None  # streamed answer with 0 completion tokens: count the text
    assert event.content.completion == "hello there"


def test_apisix_unknown_model_needs_a_provider(payload):
    entry = payload("apisix_entry")
    entry["llm_summary"]["model"] = "my-llama"
    with pytest.raises(DialectError, match=r"llm_summary: no provider for model 'my-llama'"):
        parse_record(entry)


def test_apisix_bad_tokens_and_non_ai_entries(payload):
    entry = payload("apisix_entry")
    entry["llm_summary"]["prompt_tokens"] = "n/a"
    with pytest.raises(DialectError, match=r"llm_summary\.prompt_tokens: expected an integer"):
        apisix.parse(entry)
    entry.pop("llm_summary")
    assert apisix.parse(entry) == []
