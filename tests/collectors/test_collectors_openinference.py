"""OpenInference spans (Envoy AI Gateway, Phoenix instrumentations) through the `otel` dialect: LLM and EMBEDDING
spans are metered from their llm.token_count.* attributes; other kinds are skipped; base64 ids become hex."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collectors import DialectError, detect_dialect, parse_record

ENVOY = Path(__file__).parents[1] / "conformance" / "payloads" / "envoy"
KIND = {int: "intValue", str: "stringValue"}


def traces(*spans: dict) -> dict:
    return {"resourceSpans": [{"scopeSpans": [{"spans": list(spans)}]}]}


def span(span_id: str = "b7ad6b7169203331", **attrs) -> dict:
    return {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": span_id, "name": "x",
            "startTimeUnixNano": "1753566765941124317", "endTimeUnixNano": "1753566766941124317",
            "attributes": [{"key": k.replace("__", "."), "value": {KIND[type(v)]: v}} for k, v in attrs.items()]}


def test_envoy_span_is_metered_and_its_base64_ids_read_as_hex():
    record = json.loads((ENVOY / "chat_detailed_usage.json").read_text())
    assert detect_dialect(record) == "otel"
    [event] = parse_record(record)
    # traceId ZLmpTALnkGClHrPqEqjxsg== and spanId 404dbM+ABJE= as recorded (Go protojson writes bytes base64)
    assert event.event_id == "64b9a94c02e79060a51eb3ea12a8f1b2:e34e1d6ccf800491"
    assert (event.provider, event.model, event.operation) == ("openai", "gpt-4.1-nano-2025-04-14", "chat")
    assert (event.usage.input_tokens, event.usage.output_tokens) == (33, 17)


def test_cache_and_reasoning_details_are_parts_of_their_totals():
    [event] = parse_record(traces(span(**{
        "openinference.span.kind": "LLM", "llm.provider": "anthropic", "llm.model_name": "claude-sonnet-4-5",
        "llm.token_count.prompt": 1532, "llm.token_count.prompt_details.cache_read": 1111,
        "llm.token_count.prompt_details.cache_write": 418, "llm.token_count.completion": 300,
        "llm.token_count.completion_details.reasoning": 200})))
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens) == (
        1532, 1111, 418, 300, 200)
    assert event.provider == "anthropic"


def test_embedding_span_and_aws_provider():
    [event] = parse_record(traces(span(**{
        "openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
        "llm.system": "openai", "llm.token_count.prompt": 7, "llm.token_count.total": 7})))
    assert (event.operation, event.model, event.usage.input_tokens) == ("embeddings", "text-embedding-3-small", 7)
    [bedrock] = parse_record(traces(span(**{
        "openinference.span.kind": "LLM", "llm.provider": "aws", "llm.model_name": "amazon.nova-lite-v1:0",
        "llm.token_count.prompt": 5, "llm.token_count.completion": 1})))
    assert bedrock.provider == "bedrock"


def test_chain_and_tool_spans_are_not_metered():
    chain = span("1111111111111111", **{"openinference.span.kind": "CHAIN", "llm.token_count.prompt": 99})
    llm = span(**{"openinference.span.kind": "LLM", "llm.system": "openai", "llm.model_name": "gpt-4o",
                  "llm.token_count.prompt": 10, "llm.token_count.completion": 2})
    events = parse_record(traces(chain, llm))
    assert [e.usage.input_tokens for e in events] == [10]


def test_gen_ai_attributes_win_over_openinference_ones():
    [event] = parse_record(traces(span(**{
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", "llm.token_count.prompt": 999,
        "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 2})))
    assert event.usage.input_tokens == 10


def test_llm_span_without_a_model_is_refused_naming_it():
    with pytest.raises(DialectError, match="missing model"):
        parse_record(traces(span(**{"openinference.span.kind": "LLM", "llm.token_count.prompt": 3})))


def test_failed_span_without_a_model_is_refused_saying_the_call_failed():
    """Envoy AI Gateway records a request OpenAI refused (400) as an LLM span with status ERROR and no model
    (conformance envoy/chat_bad_request): the reason says the call failed, never echoing the provider's message."""
    failed = span(**{"openinference.span.kind": "LLM", "llm.system": "openai"})
    failed["status"] = {"message": "BadRequestError: Error code: 400 - {'error': {'message': 'key sk-live-123'}}",
                        "code": "STATUS_CODE_ERROR"}
    with pytest.raises(DialectError, match=r"missing model on a failed call \(span status ERROR\)") as refused:
        parse_record(traces(failed))
    assert "sk-live" not in str(refused.value) and "BadRequestError" not in str(refused.value)


@pytest.mark.parametrize("kind", [[], ["LLM"], {}, {"a": 1}])
def test_a_span_kind_that_is_not_text_is_no_metered_span_not_a_crash(kind):
    """`openinference.span.kind` as a list or object (an AnyValue `{"stringValue": []}`, or a flattened
    attribute map) was looked up in a dict: TypeError 'unhashable type' escaped parse_record and stopped the
    Kafka bridge (found by tests/collectors/test_hostile_corpus.py on envoy/chat_tools). Such a span is no
    OpenInference LLM or EMBEDDING span: skipped, as any other kind."""
    record = traces(span(llm__model_name="gpt-4o", llm__token_count__prompt=5))
    record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"].append(
        {"key": "openinference.span.kind", "value": {"stringValue": kind}})
    assert parse_record(record, "otel") == []
