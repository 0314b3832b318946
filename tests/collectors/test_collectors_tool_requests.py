"""Server-side tool requests billed per request (issue 12 item 4): counted by the dialects that carry them and
priced as their own cost lines."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from collectors import DIALECTS, parse_record
from streams.enrich import price_event
from streams.pricing import load_price_book

D = Decimal


@pytest.fixture(scope="module")
def book():
    return load_price_book()


def test_anthropic_recorded_web_search_stream_bills_the_search(sourced, book):
    stream, _ = sourced("anthropic_web_search_stream")
    [event] = parse_record(stream)
    assert event.usage.tool_requests == {"web_search": 1}
    assert (event.usage.input_tokens, event.usage.output_tokens) == (10682, 510)
    priced = price_event(event, book)
    assert priced.cost_breakdown["web_search"] == D("0.010000000000")  # $10 per 1,000 searches
    tokens = (10682 * D("3") + 510 * D("15")) / 1_000_000
    assert priced.cost_usd == tokens + D("0.01")


def test_anthropic_message_web_fetch_is_counted_and_free(payload, book):
    message = payload("anthropic_message")
    message["usage"]["server_tool_use"] = {"web_search_requests": 2, "web_fetch_requests": 3}
    [event] = DIALECTS["anthropic"].parse(message)
    assert event.usage.tool_requests == {"web_search": 2, "web_fetch": 3}
    priced = price_event(event, book)
    assert priced.cost_breakdown["web_search"] == D("0.02") and "web_fetch" not in priced.cost_breakdown
    [plain] = DIALECTS["anthropic"].parse(payload("anthropic_message"))  # web_search_requests 0
    assert plain.usage.tool_requests is None


def test_openai_responses_tool_calls(sourced, book):
    response, _ = sourced("openai_responses_web_search")
    [event] = parse_record(response)
    assert event.usage.tool_requests == {"web_search": 1}
    assert price_event(event, book).cost_breakdown["web_search"] == D("0.01")  # gpt-5: $10 / 1k calls

    response["output"][:0] = [
        {"type": "file_search_call", "id": "fs_1", "status": "completed", "queries": ["q"]},
        {"type": "file_search_call", "id": "fs_2", "status": "completed", "queries": ["r"]},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "container_id": "cntr_a"},
        {"type": "code_interpreter_call", "id": "ci_2", "status": "completed", "container_id": "cntr_a"},
        {"type": "web_search_call", "id": "ws_2", "status": "failed"},
    ]
    response["model"] = "gpt-4o-2024-08-06"
    [event] = parse_record(response)
    assert event.usage.tool_requests == {"web_search": 2, "file_search": 2, "code_interpreter": 1}
    lines = price_event(event, book).cost_breakdown
    assert (lines["web_search"], lines["file_search"], lines["code_interpreter"]) == (D("0.05"), D("0.005"),
                                                                                     D("0.03"))


def test_gemini_grounding_per_prompt_on_2_5_and_per_query_on_3(sourced, book):
    response, _ = sourced("gemini_grounding")
    [event] = parse_record(response)
    assert event.usage.tool_requests == {"grounding_prompts": 1, "grounding_queries": 2}
    lines = price_event(event, book).cost_breakdown
    assert lines["grounding_prompts"] == D("0.035") and "grounding_queries" not in lines
    response["modelVersion"] = "gemini-3-pro-preview"
    [event] = parse_record(response)
    lines = price_event(event, book).cost_breakdown
    assert lines["grounding_queries"] == D("0.028") and "grounding_prompts" not in lines


def test_litellm_usage_with_server_tool_use(payload, book):
    record = payload("litellm_success")
    record["custom_llm_provider"] = "anthropic"
    record["startTime"] = record["endTime"] = "2025-06-12 14:03:11.512044"
    record["model"] = record["response"]["model"] = "claude-sonnet-4-20250514"
    record["response"]["usage"]["server_tool_use"] = {"web_search_requests": 3}
    [event] = DIALECTS["litellm"].parse(record)
    assert event.usage.tool_requests == {"web_search": 3}
    assert price_event(event, book).cost_breakdown["web_search"] == D("0.03")


def test_a_tool_fee_the_catalog_lacks_is_unpriced_not_zero(payload, book):
    message = payload("anthropic_message")
    message["usage"]["server_tool_use"] = {"web_search_requests": 1}
    [event] = DIALECTS["anthropic"].parse(message)
    event = event.model_copy(update={"ts": datetime(2025, 1, 1, tzinfo=timezone.utc), "model": "claude-3-5-haiku"})
    priced = price_event(event, book)  # web search launched 2025-05-07: no fee in force yet
    assert priced.pricing_status == "unpriced" and "no web_search fee" in priced.unpriced_reason


def test_hostile_tool_counts_are_refused_with_the_field_named(sourced, payload):
    from collectors import DialectError

    response, _ = sourced("openai_responses_web_search")
    response["output"] = [{"type": "web_search_call", "id": f"ws_{i}", "status": "completed"}
                          for i in range(100_001)]
    with pytest.raises(DialectError, match="tool_requests.web_search"):
        parse_record(response)
    message = payload("anthropic_message")
    message["usage"]["server_tool_use"] = {"web_search_requests": "many"}
    with pytest.raises(DialectError, match="server_tool_use.web_search_requests"):
        DIALECTS["anthropic"].parse(message)
    message["usage"]["server_tool_use"] = {"web_search_requests": 10**12}
    with pytest.raises(DialectError, match="less than or equal to 100000"):
        DIALECTS["anthropic"].parse(message)


@pytest.mark.parametrize("item_type", [[], ["web_search_call"], {}, {"a": 1}])
def test_a_responses_output_item_type_that_is_not_text_is_no_tool_call_not_a_crash(sourced, item_type):
    """An output item whose `type` is a list or object was looked up in a dict: TypeError 'unhashable type'
    escaped parse_record and stopped the Kafka bridge (found by tests/collectors/test_hostile_corpus.py). It is
    no billed tool call; the search item beside it still counts."""
    response, _ = sourced("openai_responses_web_search")
    response["output"].insert(0, {"type": item_type, "id": "x_1", "status": "completed"})
    [event] = parse_record(response)
    assert event.usage.tool_requests == {"web_search": 1}
