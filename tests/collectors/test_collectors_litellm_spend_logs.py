"""LiteLLM's SpendLogs rows (the proxy's LiteLLM_SpendLogs table, its /spend/logs API and the GCS Pub/Sub logger;
LiteLLM's fixture tests/logging_callback_tests/gcs_pub_sub_body/spend_logs_payload.json) carry the StandardLoggingPayload
fields with JSON columns serialized as strings (`metadata`, `request_tags`, `messages`, `response`), `request_id`
for the id and `cache_hit` as the strings "True" / "False" / "None". They are read like the payload, never refused
for the string columns."""

from __future__ import annotations

import json

import pytest

from collectors import DIALECTS, DialectError, parse_record

litellm = DIALECTS["litellm"]


def _row(**fields):
    row = {
        "request_id": "chatcmpl-2283081b-dc89-41f6-93e6-d4f914774027", "call_type": "acompletion", "api_key": "",
        "cache_hit": "None", "startTime": "2025-01-24 09:20:46.847371", "endTime": "2025-01-24 09:20:46.851954",
        "model": "gpt-4o", "user": "", "team_id": "",
        "metadata": json.dumps({"usage_object": {"completion_tokens": 20, "prompt_tokens": 10, "total_tokens": 30,
                                                 "prompt_tokens_details": {"cached_tokens": 4},
                                                 "completion_tokens_details": {"reasoning_tokens": 0}}}),
        "spend": 0.000215, "total_tokens": 30, "prompt_tokens": 10, "completion_tokens": 20, "request_tags": "[]",
        "end_user": "", "custom_llm_provider": "openai", "messages": "{}", "response": "{}", "status": "success",
    }
    row.update(fields)
    return row


def test_a_spend_logs_row_is_read_from_its_string_columns():
    [event] = parse_record(_row())
    assert event.source == "litellm" and event.event_id == "chatcmpl-2283081b-dc89-41f6-93e6-d4f914774027"
    assert (event.provider, event.model) == ("openai", "gpt-4o")
    assert (event.usage.input_tokens, event.usage.cached_input_tokens, event.usage.output_tokens) == (10, 4, 20)
    assert event.ts.isoformat() == "2025-01-24T09:20:46.847371+00:00"


def test_request_tags_encoded_as_a_json_string_become_tags():
    [event] = litellm.parse(_row(request_tags='["team:search", "beta"]'))
    assert event.attribution.tags["team"] == "search" and event.attribution.tags["beta"] == "true"


def test_a_cache_hit_written_as_a_string_has_no_provider_tokens():
    [event] = litellm.parse(_row(cache_hit="True"))
    assert event.usage.input_tokens == 0 and event.usage.output_tokens == 0
    assert event.attribution.tags["cache_hit"] == "true"


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]"])
def test_a_metadata_string_that_is_not_a_json_object_is_refused_naming_it(bad):
    with pytest.raises(DialectError) as refused:
        litellm.parse(_row(metadata=bad))
    assert "metadata" in str(refused.value)


def test_the_rows_spend_settles_the_anthropic_cache_write_convention():
    """A row names no LiteLLM version; like a payload's response_cost, its `spend` (checked against the prices LiteLLM
    logged in metadata.model_map_information) tells whether prompt_tokens held the cache writes (1.110.x) or not
    (1.72.x). Here 2000 prompt tokens and 1000 cache writes: only 'writes outside' gives the logged spend."""
    prices = {"input_cost_per_token": 3e-06, "cache_creation_input_token_cost": 3.75e-06,
              "cache_read_input_token_cost": 3e-07, "output_cost_per_token": 1.5e-05}
    metadata = {"usage_object": {"prompt_tokens": 2000, "completion_tokens": 10, "total_tokens": 2010,
                                 "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 0},
                "model_map_information": {"model_map_key": "claude-sonnet-4-20250514", "model_map_value": prices}}
    row = _row(model="claude-sonnet-4-20250514", custom_llm_provider="anthropic", metadata=json.dumps(metadata),
               prompt_tokens=2000, completion_tokens=10, total_tokens=2010, spend=0.0099)
    [event] = litellm.parse(row)
    assert (event.usage.input_tokens, event.usage.cache_write_tokens) == (3000, 1000)
    assert event.usage_assumption is None
