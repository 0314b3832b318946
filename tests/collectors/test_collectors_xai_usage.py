"""xAI's Chat Completions usage counts reasoning OUTSIDE completion_tokens and sums both into total_tokens
(OpenAI's counts reasoning inside). xAI's API reference example: prompt 32, completion 9, reasoning 94, total 135.
LiteLLM folds it the same way (BerriAI/litellm, litellm/llms/xai/chat/transformation.py,
`fold_reasoning_tokens_into_completion`, 1.110.2: only when total == prompt + completion + reasoning). Read as
OpenAI's convention, the example was dead-lettered (reasoning 94 > output 9) and smaller reasoning was silently
left out of the bill (audit of issue 12, 2026-12)."""

from __future__ import annotations

from decimal import Decimal

from collectors import parse_record
from streams.enrich import price_event
from streams.pricing import load_price_book

XAI_REFERENCE_USAGE = {
    "prompt_tokens": 32, "completion_tokens": 9, "total_tokens": 135,
    "prompt_tokens_details": {"text_tokens": 32, "audio_tokens": 0, "image_tokens": 0, "cached_tokens": 6},
    "completion_tokens_details": {"reasoning_tokens": 94, "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                  "rejected_prediction_tokens": 0},
    "num_sources_used": 0,
}


def chat(usage: dict, model: str = "grok-4-0709") -> dict:
    return {"id": "chatcmpl-xai-1", "object": "chat.completion", "created": 1752192000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "303"}, "finish_reason": "stop"}],
            "usage": usage}


def parts(event):
    u = event.usage
    return u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens


def test_reference_example_reasoning_outside_completion_is_folded_in():
    [event] = parse_record({"tokenmeter": {"provider": "xai"}, "response": chat(XAI_REFERENCE_USAGE)})
    assert parts(event) == (32, 6, 103, 94)
    priced = price_event(event, load_price_book())
    # grok-4-0709: $3 input, $0.75 cached, $15 output (reasoning billed as output)
    assert priced.cost_usd == (26 * Decimal("3") + 6 * Decimal("0.75") + 103 * Decimal("15")) / 1_000_000


def test_smaller_reasoning_is_no_longer_left_out_of_the_bill():
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 170,
             "completion_tokens_details": {"reasoning_tokens": 20}}
    [event] = parse_record({"tokenmeter": {"provider": "xai"}, "response": chat(usage)})
    assert parts(event) == (100, 0, 70, 20)


def test_streamed_final_chunk_is_folded_the_same_way():
    chunk = {"id": "chatcmpl-xai-1", "object": "chat.completion.chunk", "created": 1752192000, "model": "grok-4-0709",
             "choices": [{"index": 0, "delta": {"content": "303"}, "finish_reason": "stop"}],
             "usage": XAI_REFERENCE_USAGE}
    stream = f"data: {__import__('json').dumps(chunk)}\n\ndata: [DONE]\n\n"
    [event] = parse_record(stream)
    assert parts(event)[2:] == (103, 94)


def test_openai_convention_and_inconsistent_totals_are_left_as_they_are():
    inside = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30,
              "completion_tokens_details": {"reasoning_tokens": 7}}
    [event] = parse_record(chat(inside, "o3-mini-2025-01-31"))
    assert parts(event) == (10, 0, 20, 7)
    neither = {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 45,
               "completion_tokens_details": {"reasoning_tokens": 7}}
    [event] = parse_record(chat(neither, "o3-mini-2025-01-31"))
    assert parts(event) == (10, 0, 20, 7)


# A Responses API answer of grok-4.3 with four X searches, its usage as xAI returns it (the numbers of a published
# answer of 2026-08-24): 8,063 input (3,072 cached), 2,658 output, cost_in_usd_ticks 334,981,500.
XAI_RESPONSES_USAGE = {
    "input_tokens": 8063, "input_tokens_details": {"cached_tokens": 3072},
    "output_tokens": 2658, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10721,
    "num_sources_used": 0, "num_server_side_tools_used": 4, "cost_in_usd_ticks": 334981500,
    "server_side_tool_usage_details": {"web_search_calls": 0, "x_search_calls": 4, "code_interpreter_calls": 0,
                                       "file_search_calls": 0, "mcp_calls": 0, "document_search_calls": 0,
                                       "image_generation_calls": 0},
    "context_details": {"input_tokens": 6473, "output_tokens": 2427},
}


def responses_answer(usage: dict) -> dict:
    return {"id": "530ac365-572e-99b7-bcb6-a2d8e6ce68e4", "object": "response", "created_at": 1787598675,
            "model": "grok-4.3", "status": "completed", "output": [], "usage": usage}


def test_xai_answer_is_provider_xai_and_its_billed_cost_is_the_cost_of_record():
    [event] = parse_record(responses_answer(XAI_RESPONSES_USAGE))
    assert event.provider == "xai"
    assert event.reported_cost_usd == Decimal("0.03349815")  # 334,981,500 ticks of 1e-10 USD
    assert event.usage.tool_requests == {"x_search": 4}
    priced = price_event(event, load_price_book())
    assert priced.cost_usd == Decimal("0.03349815")
    # The catalog prices the tokens (grok-4.3: 4,991 x $1.25 + 3,072 x $0.20 + 2,658 x $2.50 = $0.01349815) and the
    # four X searches ($5 per 1,000 calls): exactly what xAI billed.
    assert priced.cost_breakdown["x_search"] == Decimal("0.02")
    assert priced.cost_breakdown["reported_difference"] == 0


def test_xai_answer_without_billed_cost_is_priced_from_the_catalog_with_its_tool_calls():
    usage = {k: v for k, v in XAI_RESPONSES_USAGE.items() if k not in ("cost_in_usd_ticks",)}
    [event] = parse_record(responses_answer(usage))
    assert event.provider == "xai" and event.reported_cost_usd is None
    assert price_event(event, load_price_book()).cost_usd == Decimal("0.03349815")


def test_every_server_side_tool_kind_and_live_search_sources_are_counted():
    details = {"web_search_calls": 2, "x_search_calls": 3, "code_interpreter_calls": 1, "file_search_calls": 4,
               "mcp_calls": 5, "document_search_calls": 6, "image_generation_calls": 0}
    usage = {k: v for k, v in XAI_RESPONSES_USAGE.items() if k != "cost_in_usd_ticks"}
    [event] = parse_record(responses_answer(usage | {"server_side_tool_usage_details": details,
                                                     "num_sources_used": 7}))
    assert event.usage.tool_requests == {"web_search": 2, "x_search": 3, "code_interpreter": 1, "file_search": 4,
                                         "attachment_search": 6, "live_search_sources": 7}
    lines = price_event(event, load_price_book()).cost_breakdown
    # $5 / 1k web, X search and code execution; $2.50 collections; $10 attachments; $25 / 1k Live Search sources
    assert (lines["web_search"], lines["x_search"], lines["code_interpreter"], lines["file_search"],
            lines["attachment_search"], lines["live_search_sources"]) == (
        Decimal("0.01"), Decimal("0.015"), Decimal("0.005"), Decimal("0.01"), Decimal("0.06"), Decimal("0.175"))


def test_live_search_sources_of_a_chat_completion():
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150, "num_sources_used": 4}
    [event] = parse_record(chat(usage, "grok-3") | {"created": 1761955200})  # 2025-11-01
    assert event.provider == "xai" and event.usage.tool_requests == {"live_search_sources": 4}
    assert price_event(event, load_price_book()).cost_breakdown["live_search_sources"] == Decimal("0.1")


def test_tool_calls_before_the_first_dated_price_are_unpriced_with_the_reason():
    usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150, "num_sources_used": 4}
    [event] = parse_record(chat(usage, "grok-3") | {"created": 1748736000})  # 2025-06-01
    priced = price_event(event, load_price_book())
    assert priced.pricing_status == "unpriced" and "no live_search_sources fee" in priced.unpriced_reason


def test_billed_ticks_must_be_a_whole_number():
    import pytest

    from collectors import DialectError

    for bad in (-1, 1.5, "334981500", True):
        with pytest.raises(DialectError, match="cost_in_usd_ticks"):
            parse_record(responses_answer(XAI_RESPONSES_USAGE | {"cost_in_usd_ticks": bad}))



def test_a_billed_cost_past_the_contracts_bound_is_a_clear_error_not_a_huge_bill():
    import pytest

    from collectors import DialectError

    for huge in (10**30, 10**4000):  # $1e20, and a number of 4,000 digits: refused by the contract, not stored
        with pytest.raises(DialectError, match="reported_cost_usd.*below 1000000 USD"):
            parse_record(responses_answer(XAI_RESPONSES_USAGE | {"cost_in_usd_ticks": huge}))

def test_a_sender_named_provider_wins():
    [event] = parse_record({"tokenmeter": {"provider": "azure"}, "response": responses_answer(XAI_RESPONSES_USAGE)})
    assert event.provider == "azure"
