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
