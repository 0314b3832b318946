"""OpenRouter pass-through: its responses, streams, LiteLLM payloads and OTel spans carry the cost OpenRouter
charged; the collectors read it into `reported_cost_usd` (provider `openrouter`), so the worker can take it as the
cost of record. Payloads: tests/conformance/payloads/openrouter (recorded by pydantic-ai against the live API)."""

from __future__ import annotations

import copy
import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from collectors import DialectError, parse_record

CORPUS = Path(__file__).parents[1] / "conformance" / "payloads"


def load(name: str):
    return json.loads((CORPUS / name).read_text())


def test_chat_completion_is_an_openrouter_event_with_its_cost():
    [event] = parse_record(load("openrouter/chat_gpt41_mini.json"))
    assert (event.provider, event.model, event.source) == ("openrouter", "openai/gpt-4.1-mini", "openai")
    assert event.reported_cost_usd == D("0.000086")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (23, 48)


def test_bring_your_own_key_adds_what_the_upstream_billed():
    response = load("openrouter/chat_gemini25_flash_byok.json")
    [event] = parse_record(response)
    assert event.reported_cost_usd == D("0.0003253")  # cost 0 (OpenRouter's fee) + upstream_inference_cost
    response["usage"]["is_byok"] = False  # then upstream_inference_cost is the same money as cost: never added
    assert parse_record(response)[0].reported_cost_usd == D(0)


def test_stream_reads_the_cost_of_its_usage_chunk():
    [event] = parse_record(load("openrouter/stream_gpt41_mini_web_search.json"))
    assert event.provider == "openrouter" and event.reported_cost_usd == D("0.0133176")
    assert event.usage.input_tokens == 8174


def test_a_gen_id_with_an_upstream_provider_is_openrouter_even_without_cost():
    response = load("openrouter/chat_gpt41_mini.json")
    del response["usage"]["cost"], response["usage"]["cost_details"], response["usage"]["is_byok"]
    [event] = parse_record(response)
    assert event.provider == "openrouter" and event.reported_cost_usd is None


def test_a_plain_openai_response_reports_no_cost():
    response = load("openrouter/chat_gpt41_mini.json")
    response.update(id="chatcmpl-1", model="gpt-4.1-mini")
    del response["provider"], response["usage"]["cost_details"], response["usage"]["is_byok"]
    [event] = parse_record(response)  # a bare `cost` is some proxy's estimate, not OpenRouter's bill
    assert event.provider == "openai" and event.reported_cost_usd is None


@pytest.mark.parametrize("cost, why", [(-0.01, "cost >= 0"), ("lots", "a number"), (True, "a number"),
                                       ({"usd": 1}, "a number"), ("NaN", "cost >= 0")])
def test_a_cost_that_is_not_money_is_refused_naming_the_field(cost, why):
    response = load("openrouter/chat_gpt41_mini.json")
    response["usage"]["cost"] = cost
    with pytest.raises(DialectError, match=why) as refused:
        parse_record(response)
    assert refused.value.path == "usage.cost"


def test_byok_upstream_cost_of_the_wrong_type_is_refused():
    response = load("openrouter/chat_gemini25_flash_byok.json")
    response["usage"]["cost_details"]["upstream_inference_cost"] = "n/a"
    with pytest.raises(DialectError) as refused:
        parse_record(response)
    assert refused.value.path == "usage.cost_details.upstream_inference_cost"


def test_litellm_payload_takes_openrouters_cost_not_litellms_response_cost():
    for name in ("litellm/v1_110_2_openrouter_byok.json", "litellm/v1_72_3_openrouter_byok.json"):
        payload = load(name)
        assert payload["response_cost"] == 0.0  # LiteLLM's own figure misses the upstream's bill
        [event] = parse_record(payload)
        assert (event.provider, event.reported_cost_usd) == ("openrouter", D("0.0003253"))


def test_litellm_own_usage_cost_of_other_providers_is_not_a_reported_cost():
    [event] = parse_record(load("litellm/v1_110_2_openai_stream.json"))  # LiteLLM writes usage.cost itself
    assert event.provider == "openai" and event.reported_cost_usd is None


def _span(provider: str, **extra) -> dict:
    attrs = {"gen_ai.provider.name": provider, "gen_ai.request.model": "openai/gpt-4.1-mini",
             "gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 23, "gen_ai.usage.output_tokens": 48,
             **extra}
    kind = {int: "intValue", float: "doubleValue", str: "stringValue"}
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "chat",
        "startTimeUnixNano": "1768331348000000000", "endTimeUnixNano": "1768331349000000000",
        "attributes": [{"key": k, "value": {kind[type(v)]: v}} for k, v in attrs.items()]}]}]}]}


def test_otel_span_of_openrouter_reports_its_cost_other_emitters_do_not():
    [event] = parse_record(_span("openrouter", **{"gen_ai.usage.cost": 8.6e-05}))
    assert (event.provider, event.reported_cost_usd) == ("openrouter", D("0.000086"))
    [estimate] = parse_record(_span("openai", **{"gen_ai.usage.cost": 8.6e-05}))
    assert estimate.reported_cost_usd is None
    with pytest.raises(DialectError, match="cost >= 0"):
        parse_record(_span("openrouter", **{"gen_ai.usage.cost": -1.0}))


def test_canonical_event_carries_a_reported_cost():
    event = {"event_id": "x1", "ts": "2026-01-13T19:09:08Z", "source": "sdk", "provider": "openrouter",
             "model": "openai/gpt-4.1-mini", "usage": {"input_tokens": 23, "output_tokens": 48},
             "reported_cost_usd": "0.000086"}
    [parsed] = parse_record(copy.deepcopy(event))
    assert parsed.reported_cost_usd == D("0.000086")
    with pytest.raises(DialectError, match="reported_cost_usd"):
        parse_record(event | {"reported_cost_usd": "-1"})
