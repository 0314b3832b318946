"""All-zero usage on a successful call that logged its text is a lost count, not a free call (left23).

LiteLLM writes prompt/completion/total 0 whenever the response object it logs carries no `usage`
(`StandardLoggingPayloadSetup.get_usage_from_response_obj` in BerriAI/litellm litellm/litellm_core_utils/
litellm_logging.py, commit 00145a6: `usage = response_obj.get("usage", None) or {}` ... `Usage(prompt_tokens=0,
completion_tokens=0, total_tokens=0)`), e.g. a pass-through or a stream whose usage was not assembled; such a payload
with its messages was priced $0 as provider-reported usage (walk22). Every dialect now counts the logged text
instead, marked; a call with no text keeps its zeros, marked as such (left24: it was an unmarked $0 line), a failed
call keeps them unmarked, a cache hit too, and a call billed per image or second is not counted from its prompt. Each case is read per record and in the batch form (the collectors'
entry points), which must agree."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from collectors import DialectError, parse_record
from collectors.dialects.common import ZERO_USAGE_COUNTED
from collectors.sink import encode_batches
from streams.enrich import price_event
from streams.metering.meter import meter
from streams.pricing.book import load_price_book

MESSAGES = [{"role": "user", "content": "Summarize the quarterly report in three sentences, please."}]
ANSWER = "Revenue grew 12 percent. Costs held flat. Margins widened to 31 percent."


def _both(record: Any, dialect: str) -> list[Any]:
    """The events of `record` per record, after checking the batch form writes the same bytes."""
    events = parse_record(copy.deepcopy(record), dialect)
    assert encode_batches(parse_record(copy.deepcopy(record), dialect, encoded=True)) == encode_batches(events)
    return events


def _counted(event) -> None:
    assert event.usage is None and event.content is not None
    assert event.usage_assumption == ZERO_USAGE_COUNTED
    usage, source = meter(event)
    assert source == "estimated" and usage.input_tokens > 0


def _litellm_zero(payload, **changes) -> dict[str, Any]:
    record = payload("litellm_success")
    record.update(prompt_tokens=0, completion_tokens=0, total_tokens=0, response_cost=0.0, messages=MESSAGES)
    record["response"]["usage"].update(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    record["response"]["choices"] = [{"index": 0, "message": {"role": "assistant", "content": ANSWER}}]
    record.update(changes)
    return record


def test_litellm_zero_usage_with_messages_is_counted_from_the_text(payload):
    [event] = _both(_litellm_zero(payload), "litellm")
    _counted(event)
    assert event.content.completion == ANSWER
    assert meter(event)[0].output_tokens > 0
    priced = price_event(event, load_price_book())  # the worker's step: no longer $0 as provider usage
    assert (priced.tokens_source, priced.pricing_status) == ("estimated", "priced") and priced.cost_usd > 0
    assert priced.usage_assumption == ZERO_USAGE_COUNTED


def test_litellm_zero_response_usage_defers_to_a_count_logged_elsewhere(payload):
    record = _litellm_zero(payload)
    record["hidden_params"]["usage_object"] = {"prompt_tokens": 21, "completion_tokens": 17, "total_tokens": 38}
    [event] = _both(record, "litellm")
    assert (event.usage.input_tokens, event.usage.output_tokens, event.usage_assumption) == (21, 17, None)


@pytest.mark.parametrize("case", ["failure", "cache hit", "image generation"])
def test_litellm_zero_usage_that_stays_zero(payload, case):
    """Zeros that are true: a failed call, a cache hit, a call billed per image. (No text to count: marked, below.)"""
    changes = {"failure": {"status": "failure"}, "cache hit": {"cache_hit": True},
               "image generation": {"call_type": "aimage_generation"}}[case]
    [event] = _both(_litellm_zero(payload, **changes), "litellm")
    assert event.usage is not None and event.usage.total_tokens == 0 and event.usage_assumption is None
    assert meter(event) == (event.usage, "provider")


def test_litellm_zero_usage_with_redacted_text_is_a_dead_letter_saying_so(payload):
    record = _litellm_zero(payload, messages=[{"role": "user", "content": "redacted-by-litellm"}])
    record["response"]["choices"][0]["message"]["content"] = "redacted-by-litellm"
    for encoded in (False, True):
        with pytest.raises(DialectError) as info:
            parse_record(copy.deepcopy(record), "litellm", encoded=encoded)
        assert "redacted" in info.value.reason and "turn_off_message_logging" in info.value.reason


def test_kong_oneshot_zero_usage_with_payloads_is_counted(payload):
    entry = payload("kong_openai")
    proxy = entry["ai"]["proxy"]
    proxy["usage"].update(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    proxy["payload"] = {"request": json.dumps({"model": "gpt-4o", "messages": MESSAGES}), "response": ANSWER}
    [event] = _both(entry, "kong")
    _counted(event)


def test_apisix_zero_usage_with_the_request_logged_is_counted(payload):
    entry = payload("apisix_entry")
    entry["llm_summary"].update(prompt_tokens=0, completion_tokens=0)
    entry["llm_request"] = {"model": "gpt-4", "messages": MESSAGES}
    [event] = _both(entry, "apisix")
    _counted(event)


def _otel_zero(payload) -> dict:
    """The OTLP traces payload with its span's input and output token counts 0 (and no cache-read count)."""
    record = payload("otlp_traces")
    attributes = record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    attributes[:] = [a for a in attributes if a["key"] != "gen_ai.usage.cache_read.input_tokens"]
    for attribute in attributes:
        if attribute["key"] in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens"):
            attribute["value"] = {"intValue": "0"}
    return record


def test_otel_zero_usage_with_messages_is_counted(payload):
    record = _otel_zero(payload)
    record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append({"key": "gen_ai.input.messages", "value": {"stringValue": json.dumps(MESSAGES)}})
    [event] = _both(record, "otel")
    _counted(event)


def test_canonical_zero_usage_with_content_is_counted():
    record = {"event_id": "evt-zero", "ts": "2026-11-02T10:20:30Z", "source": "sdk", "provider": "openai",
              "model": "gpt-4o", "usage": {"input_tokens": 0, "output_tokens": 0},
              "content": {"prompt": MESSAGES, "completion": ANSWER}}
    [event] = _both(record, "canonical")
    _counted(event)
    [failed] = _both(dict(record, status="error"), "canonical")
    assert failed.usage.total_tokens == 0
    [textless] = _both(dict(record, content={"prompt": None}), "canonical")  # nothing to count: zeros, marked
    assert textless.usage.total_tokens == 0 and textless.usage_assumption == "zero-usage-no-text-to-count"


# --- provider responses and CloudEvents (left24): the same rule where the shape carries text -----------------

ZERO_OPENAI = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


def _wrapped(response: Any) -> dict[str, Any]:
    """A captured call: the request body beside the response (the prompt to count)."""
    return {"tokenmeter": {"attribution": {"team": "search"}, "ts": "2026-11-02T10:20:30Z"},
            "request": {"model": "gpt-4o", "messages": MESSAGES}, "response": response}


def test_openai_response_with_zero_usage_beside_its_text_is_counted(payload):
    response = payload("openai_chat")
    response["usage"] = dict(ZERO_OPENAI)
    response["choices"][0]["message"]["content"] = ANSWER
    [event] = _both(_wrapped(response), "openai")
    _counted(event)
    assert event.content.completion == ANSWER and meter(event)[0].output_tokens > 0
    [bare] = _both(response, "openai")  # no request logged: the answer alone is counted (a lower bound on input)
    assert bare.usage is None and bare.usage_assumption == ZERO_USAGE_COUNTED and meter(bare)[0].output_tokens > 0


def test_openai_stream_with_zero_usage_chunk_is_counted(payload):
    from collectors.decode import parse_sse
    chunks = parse_sse(payload("openai_stream"))
    chunks[-1]["usage"] = dict(ZERO_OPENAI)
    [event] = _both(_wrapped(chunks), "openai")
    _counted(event)
    assert event.content.completion == "Hello there!"


def test_anthropic_message_with_zero_usage_beside_its_text_is_counted(payload):
    message = payload("anthropic_message")
    message["usage"] = {"input_tokens": 0, "output_tokens": 0}
    message["content"] = [{"type": "text", "text": ANSWER}]
    [event] = _both(_wrapped(message), "anthropic")
    _counted(event)
    assert event.content.completion == ANSWER


def test_gemini_response_with_zero_usage_beside_its_text_is_counted(payload):
    response = payload("gemini_response")
    response["usageMetadata"] = {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0}
    response["candidates"] = [{"content": {"role": "model", "parts": [{"text": ANSWER}]}, "finishReason": "STOP"}]
    [event] = _both(_wrapped(response), "gemini")
    _counted(event)
    assert event.content.completion == ANSWER


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_provider_zero_usage_that_stays_zero(payload, dialect):
    """A failed call keeps its zeros; a reported cost stays the cost of record beside the counted text."""
    if dialect == "openai":
        response = payload("openai_chat") | {"usage": dict(ZERO_OPENAI), "status": "failed", "object": "response",
                                             "output": [], "created_at": 1741570283}
    else:
        response = payload("anthropic_message") | {"usage": {"input_tokens": 0, "output_tokens": 0}}
        response = [{"type": "message_start", "message": response}, {"type": "error", "error": {"type": "x"}},
                    {"type": "message_delta", "usage": {"output_tokens": 0}}]
    [event] = _both(_wrapped(response), dialect)
    assert event.status == "error" and event.usage.total_tokens == 0 and event.usage_assumption is None


def test_openrouter_zero_usage_keeps_its_reported_cost_and_counts_the_text(payload):
    response = payload("openai_chat") | {"id": "gen-1", "provider": "OpenAI"}
    response["usage"] = dict(ZERO_OPENAI, cost=0.0021, is_byok=False)
    response["choices"][0]["message"]["content"] = ANSWER
    [event] = _both(_wrapped(response), "openai")
    _counted(event)
    assert event.provider == "openrouter" and event.reported_cost_usd == Decimal("0.0021")


def _cloudevent(data: dict[str, Any]) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "ce-1", "source": "my-app", "type": "llm.call",
            "time": "2026-11-02T10:20:30Z", "data": data}


def test_cloudevent_canonical_body_with_zero_usage_beside_content_is_counted():
    data = {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 0, "output_tokens": 0},
            "content": {"prompt": MESSAGES, "completion": ANSWER}}
    [event] = _both(_cloudevent(data), "cloudevents")
    _counted(event)
    [failed] = _both(_cloudevent(dict(data, status="error")), "cloudevents")
    assert failed.usage.total_tokens == 0 and failed.usage_assumption is None
    [textless] = _both(_cloudevent({k: v for k, v in data.items() if k != "content"}), "cloudevents")
    assert textless.usage.total_tokens == 0 and textless.usage_assumption == "zero-usage-no-text-to-count"


# --- all zeros and nothing to count (left24): metered as logged, but never silently ---------------------------

def _no_text_records(payload) -> dict[str, tuple[Any, str]]:
    litellm = _litellm_zero(payload, messages=None, response={"model": "gpt-4o", "usage": dict(ZERO_OPENAI)})
    kong = payload("kong_openai")
    kong["ai"]["proxy"]["usage"].update(prompt_tokens=0, completion_tokens=0, total_tokens=0)
    apisix = payload("apisix_entry")
    apisix["llm_summary"].update(prompt_tokens=0, completion_tokens=0)
    otel = _otel_zero(payload)
    canonical = {"event_id": "evt-zero", "ts": "2026-11-02T10:20:30Z", "source": "sdk", "provider": "openai",
                 "model": "gpt-4o", "usage": {"input_tokens": 0, "output_tokens": 0}}
    openai = payload("openai_chat") | {"usage": dict(ZERO_OPENAI)}
    openai["choices"][0]["message"]["content"] = None
    cloudevent = _cloudevent({"provider": "openai", "model": "gpt-4o",
                              "usage": {"input_tokens": 0, "output_tokens": 0}})
    return {"litellm": (litellm, "litellm"), "kong": (kong, "kong"), "apisix": (apisix, "apisix"),
            "otel": (otel, "otel"), "canonical": (canonical, "canonical"), "openai": (openai, "openai"),
            "cloudevents": (cloudevent, "cloudevents")}


@pytest.mark.parametrize("name", ["litellm", "kong", "apisix", "otel", "canonical", "openai", "cloudevents"])
def test_zero_usage_with_nothing_to_count_is_marked_not_silently_free(payload, name):
    """A successful token-billed call logged with every count 0 and no text: nothing to count, and dead-lettering it
    would drop a real call from request counts. It is metered as logged ($0, a lower bound) and marked, so `report
    --group-by usage_assumption` and the worker's usage_assumed count show it (it was an unmarked $0 line)."""
    record, dialect = _no_text_records(payload)[name]
    if name == "otel":
        assert not any(a["key"].startswith("gen_ai.input") for a in
                       record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"])
    [event] = _both(record, dialect)
    assert event.usage is not None and event.usage.total_tokens == 0
    assert event.usage_assumption == "zero-usage-no-text-to-count"
    priced = price_event(event, load_price_book())
    assert priced.cost_usd == 0 and priced.usage_assumption == "zero-usage-no-text-to-count"
