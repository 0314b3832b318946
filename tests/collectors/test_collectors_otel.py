from __future__ import annotations

from datetime import datetime, timezone

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status, TracesData

from collectors import DIALECTS, AttributionMapping, DialectError, detect_dialect, parse_record

otel = DIALECTS["otel"]


def attr(key, value):
    if isinstance(value, str):
        return {"key": key, "value": {"stringValue": value}}
    return {"key": key, "value": {"intValue": value}}


def test_reference_otlp_json(payload):
    [event] = otel.parse(payload("otlp_traces"))
    assert event.event_id == "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"
    assert event.ts == datetime(2024, 11, 1, tzinfo=timezone.utc)
    assert (event.provider, event.model, event.operation) == ("openai", "gpt-4o-2024-08-06", "chat")
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.output_tokens) == (1117, 1024, 46)  # input includes cached
    assert event.latency_ms == pytest.approx(1200.0)
    assert event.attribution.project == "chat-api"  # resource service.name


def test_older_system_attribute_numbers_and_other_cache_spelling(payload):
    record = payload("otlp_traces")
    span = record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["attributes"] = [attr("gen_ai.system", "aws.bedrock"), attr("gen_ai.request.model", "anthropic.claude-3"),
                          attr("gen_ai.usage.input_tokens", 500), attr("gen_ai.usage.output_tokens", 20),
                          attr("gen_ai.usage.cache_read_input_tokens", 100),
                          attr("gen_ai.usage.cache_creation.input_tokens", 50),
                          attr("tokenmeter.team", "search"), attr("user.id", "u-7")]
    span["startTimeUnixNano"] = 1730419200000000000  # a number, not a string
    span["status"] = {"code": 2}
    [event] = otel.parse(record)
    assert (event.provider, event.model, event.status) == ("bedrock", "anthropic.claude-3", "error")
    u = event.usage
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (500, 100, 50)
    assert (event.attribution.team, event.attribution.user) == ("search", "u-7")


def test_exclusive_cache_convention_is_added_back(payload):
    record = payload("otlp_traces")
    attrs = record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
    attrs[4] = attr("gen_ai.usage.input_tokens", "25")  # Anthropic-style: cache reads (1024) not included
    [event] = otel.parse(record)
    assert (event.usage.input_tokens, event.usage.cached_input_tokens) == (1049, 1024)


def test_non_genai_and_agent_spans_are_skipped(payload):
    record = payload("otlp_traces")
    spans = record["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({"traceId": "aa", "spanId": "bb", "name": "GET /", "startTimeUnixNano": "1",
                  "attributes": [attr("http.route", "/")]})
    spans.append({"traceId": "aa", "spanId": "cc", "name": "invoke_agent", "startTimeUnixNano": "1730419200000000000",
                  "attributes": [attr("gen_ai.operation.name", "invoke_agent"), attr("gen_ai.usage.input_tokens", 9)]})
    assert len(otel.parse(record)) == 1
    del spans[0]
    assert otel.parse(record) == []  # no model-call span: nothing to count, caller counts it skipped


def test_ai_sdk_step_span_is_skipped_not_refused(payload):
    # AI SDK 7 (@ai-sdk/otel) groups each step's chat and tool spans under a span that carries only
    # gen_ai.operation.name=agent_step: no model, no usage. It used to fail the whole trace (missing model).
    record = payload("otlp_traces")
    spans = record["resourceSpans"][0]["scopeSpans"][0]["spans"]
    spans.append({"traceId": "aa", "spanId": "dd", "name": "step 1", "startTimeUnixNano": "1730419200000000000",
                  "attributes": [attr("gen_ai.operation.name", "agent_step")]})
    assert len(otel.parse(record)) == 1


def test_bad_span_is_reported_and_good_spans_kept(payload):
    record = payload("otlp_traces")
    spans = record["resourceSpans"][0]["scopeSpans"][0]["spans"]
    bad = {"traceId": "aa", "spanId": "cc", "startTimeUnixNano": "1730419200000000000",
           "attributes": [attr("gen_ai.provider.name", "openai"), attr("gen_ai.usage.input_tokens", "-4")]}
    spans.append(bad)
    with pytest.raises(DialectError) as info:
        otel.parse(record)
    assert "spans[1].attributes: missing model" in str(info.value)
    assert len(info.value.partial) == 1
    bad["attributes"].append(attr("gen_ai.request.model", "gpt-4o"))
    negative = r"spans\[1\]\.attributes\[gen_ai\.usage\.input_tokens\]: must not be negative"
    with pytest.raises(DialectError, match=negative):
        otel.parse(record)


def _proto_traces() -> bytes:
    def kv(key, **value):
        return KeyValue(key=key, value=AnyValue(**value))

    span = Span(trace_id=bytes.fromhex("5b8efff798038103d269b633813fc60c"), span_id=bytes.fromhex("eee19b7ec3c1b174"),
                name="chat claude", start_time_unix_nano=1730419200000000000, end_time_unix_nano=1730419200500000000,
                status=Status(code=Status.STATUS_CODE_OK),
                attributes=[kv("gen_ai.provider.name", string_value="anthropic"),
                            kv("gen_ai.request.model", string_value="claude-sonnet-4-5"),
                            kv("gen_ai.usage.input_tokens", int_value=300),
                            kv("gen_ai.usage.cache_read.input_tokens", int_value=200),
                            kv("gen_ai.usage.output_tokens", int_value=40)])
    plain = Span(trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name="db", start_time_unix_nano=1)
    data = TracesData(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[kv("service.name", string_value="agent"), kv("team", string_value="ml")]),
        scope_spans=[ScopeSpans(spans=[span, plain])])])
    return data.SerializeToString()


def test_otlp_protobuf_bytes():
    blob = _proto_traces()
    assert detect_dialect(blob) == "otel"
    [event] = parse_record(blob)
    assert event.event_id == "5b8efff798038103d269b633813fc60c:eee19b7ec3c1b174"
    assert (event.provider, event.model, event.status) == ("anthropic", "claude-sonnet-4-5", "ok")
    assert (event.usage.input_tokens, event.usage.cached_input_tokens, event.usage.output_tokens) == (300, 200, 40)
    assert (event.attribution.team, event.attribution.project) == ("ml", "agent")
    assert event.latency_ms == pytest.approx(500.0)
    assert parse_record(blob)[0].event_id == event.event_id
    failed = TracesData.FromString(blob)
    failed.resource_spans[0].scope_spans[0].spans[0].status.code = Status.STATUS_CODE_ERROR
    assert parse_record(failed.SerializeToString())[0].status == "error"  # enum name "STATUS_CODE_ERROR"


def test_mapping_for_otel(payload):
    mapping = AttributionMapping.from_dict({"project": "span:gen_ai.request.model", "team": "const:core"})
    [event] = otel.parse(payload("otlp_traces"), mapping)
    assert (event.attribution.project, event.attribution.team) == ("gpt-4o", "core")


def test_garbage_bytes_are_rejected():
    with pytest.raises(DialectError, match="neither JSON nor OTLP protobuf"):
        parse_record(b"\xff\xfe\x00garbage")


def test_span_times_are_always_read_as_unix_nanoseconds():
    """OTLP times are nanoseconds whatever their size: a test clock's 1_000_000_000 ns is 1 s after the epoch,
    not 1e9 seconds (2001-09-09) as a unit-guessing epoch reader would take it. That moment is outside the
    contract's accepted event times, so the span is refused naming it; a real clock's span is read to the ns."""
    traces = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "00000000000000000000000000000001", "spanId": "0000000000000001", "name": "chat gpt-4o",
        "startTimeUnixNano": "1000000000", "endTimeUnixNano": "2000000000",
        "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o"}},
                       {"key": "gen_ai.provider.name", "value": {"stringValue": "openai"}},
                       {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "3"}},
                       {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "1"}}]}]}]}]}
    with pytest.raises(DialectError, match=r"event time 1970-01-01T00:00:01\+00:00 is before"):
        parse_record(traces)
    span = traces["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["startTimeUnixNano"], span["endTimeUnixNano"] = "1764583200000000001", "1764583201000000001"
    [event] = parse_record(traces)
    assert event.ts == datetime(2025, 12, 1, 10, 0, 0, tzinfo=timezone.utc)
    assert event.latency_ms == 1000.0
