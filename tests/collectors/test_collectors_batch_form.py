"""The dialects' batch form (collectors/encoded.py): the common shape of Kong, APISIX and LiteLLM entries, OTel spans
and canonical events is written straight to the event's JSON, exactly as the per-entry parsers (pydantic models)
write it.

Each case below is an entry at or just past an edge of the common shape (a value type, a bound, a time form, a
float pydantic spells differently); both paths must give the same events, byte for byte, or the same error with
the same reason and path. The randomised corpus comparison is test_collectors_equivalence.py.
"""

from __future__ import annotations

import base64
import copy
import random
from typing import Any, Callable

import orjson
import pytest

from collectors import AttributionMapping, DialectError, bench, corpus, parse_record
from collectors.encoded import EncodedEvent
from collectors.equivalence import _CLOCK
from collectors.sink import encode_batches


def _outcome(record: Any, dialect: str, encoded: bool, mapping: AttributionMapping | None = None) -> Any:
    try:
        events, error = parse_record(copy.deepcopy(record), dialect, mapping, encoded=encoded), None
    except DialectError as exc:
        events, error = exc.partial, (_CLOCK.sub("<clock>", exc.reason), exc.path)
    return encode_batches(events), error


def _assert_same(record: Any, dialect: str, mapping: AttributionMapping | None = None) -> None:
    assert _outcome(record, dialect, True, mapping) == _outcome(record, dialect, False, mapping)


def _kong() -> dict[str, Any]:
    return bench._kong_entry(random.Random(1), 2)[1]  # an Anthropic entry (marked usage)


def _otel() -> dict[str, Any]:
    return corpus._otel_json(random.Random(2), 0, 1)


def _canonical() -> dict[str, Any]:
    return {"event_id": "evt-1", "ts": "2026-11-02T10:20:30.5Z", "source": "sdk", "provider": "openai",
            "model": "gpt-4o", "attribution": {"team": "t1", "user": "u1", "tags": {"env": "prod"}},
            "usage": {"input_tokens": 120, "output_tokens": 30}, "latency_ms": 812}


def test_common_shapes_take_the_batch_form_and_write_the_models_bytes():
    canonical = orjson.dumps([dict(_canonical(), event_id=f"evt-{i}") for i in range(20)])
    gateways = [(dialect, bench.gateway_records(dialect, 200)[0]) for dialect in ("kong", "otel", "apisix", "litellm")]
    for dialect, values in [*gateways, ("canonical", [canonical])]:
        for value in values:
            fast = parse_record(value, dialect, encoded=True)
            assert fast and all(type(event) is EncodedEvent for event in fast)
            assert encode_batches(fast) == encode_batches(parse_record(value, dialect))


def _span(record: dict[str, Any]) -> dict[str, Any]:
    return record["resourceSpans"][0]["scopeSpans"][0]["spans"][0]


def _set_attr(record: dict[str, Any], key: str, value: dict[str, Any] | None) -> None:
    attrs = [a for a in _span(record)["attributes"] if a["key"] != key]
    _span(record)["attributes"] = attrs + ([{"key": key, "value": value}] if value is not None else [])


def _meta(entry: dict[str, Any]) -> dict[str, Any]:
    return entry["ai"]["proxy"]["meta"]


def _usage(entry: dict[str, Any]) -> dict[str, Any]:
    return entry["ai"]["proxy"]["usage"]


KONG_EDGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "latency 1e16": lambda e: _meta(e).update(llm_latency=1e16),
    "latency tiny": lambda e: _meta(e).update(llm_latency=0.00001),
    "latency -0.0": lambda e: _meta(e).update(llm_latency=-0.0),
    "latency text": lambda e: _meta(e).update(llm_latency="880"),
    "latency negative": lambda e: _meta(e).update(llm_latency=-3),
    "latency absent": lambda e: _meta(e).pop("llm_latency"),
    "ttft zero": lambda e: _usage(e).update(time_to_first_token=0),
    "started_at seconds": lambda e: e.update(started_at=1_787_113_201),
    "started_at 1973": lambda e: e.update(started_at=10**11),
    "started_at far future": lambda e: e.update(started_at=9_999_999_999_999),
    "started_at float": lambda e: e.update(started_at=1_787_113_201_719.5),
    "started_at bool": lambda e: e.update(started_at=True),
    "request id padded": lambda e: e["request"].update(id="  abc  "),
    "request id blank": lambda e: e["request"].update(id="   "),
    "request id 513": lambda e: e["request"].update(id="x" * 513),
    "request id int": lambda e: e["request"].update(id=42),
    "status 404": lambda e: e.update(upstream_status=404),
    "status text": lambda e: e.update(upstream_status="502"),
    "status bool": lambda e: e.update(upstream_status=True),
    "tokens over the bound": lambda e: _usage(e).update(prompt_tokens=10**12 + 1),
    "tokens bool": lambda e: _usage(e).update(completion_tokens=True),
    "tokens text": lambda e: _usage(e).update(prompt_tokens="12"),
    "cache detail": lambda e: _usage(e).update(prompt_tokens_details={"cached_tokens": 3}),
    "stream with zero output": lambda e: (_meta(e).update(request_mode="stream"), _usage(e).update(completion_tokens=0)),
    "response model blank": lambda e: _meta(e).update(response_model="  "),
    "response model int": lambda e: _meta(e).update(response_model=42),
    "both models absent": lambda e: (_meta(e).pop("response_model"), _meta(e).pop("request_model")),
    "provider spelled": lambda e: _meta(e).update(provider_name="  Claude "),
    "provider blank": lambda e: _meta(e).update(provider_name=" "),
    "gemini thinking": lambda e: _meta(e).update(provider_name="vertex-ai", response_model="Gemini-2.5-Pro"),
    "operation padded": lambda e: _meta(e).update(operation_name=" Embeddings "),
    "operation blank": lambda e: _meta(e).update(operation_name="  "),
    "operation int": lambda e: _meta(e).update(operation_name=5),
    "header team": lambda e: e["request"]["headers"].update({"X-Tokenmeter-Team": " core "}),
    "header list": lambda e: e["request"]["headers"].update({"x-team": ["a", "b"]}),
    "consumer username int": lambda e: e["consumer"].update(username=7),
    "second plugin block": lambda e: e["ai"].update({"ai-prompt-guard": {"meta": {}, "usage": {}}}),
    "semantic cache": lambda e: e["ai"]["proxy"].update(cache={"cache_status": "Hit"}),
    # the RAG injector's query embedding is a second billed call (its own event): found when the two branches met
    "rag-inject embedding": lambda e: e["ai"]["proxy"].update({"rag-inject": {
        "embeddings_tokens": 62, "embeddings_provider": "openai", "embeddings_model": "text-embedding-3-small",
        "embeddings_latency": 37}}),
    "headers not an object": lambda e: e["request"].update(headers=[1]),
}


@pytest.mark.parametrize("case", KONG_EDGES)
def test_kong_edges_write_what_the_per_entry_parser_writes(case):
    entry = _kong()
    KONG_EDGES[case](entry)
    _assert_same([entry, _kong()], "kong")
    _assert_same(entry, "kong", AttributionMapping.from_dict(corpus.MAPPINGS["kong"]))


OTEL_EDGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "times as ints": lambda r: _span(r).update(startTimeUnixNano=1_730_419_200_000_000_000,
                                               endTimeUnixNano=1_730_419_201_000_000_000),
    "end before start": lambda r: _span(r).update(endTimeUnixNano="1"),
    "end absent": lambda r: _span(r).pop("endTimeUnixNano"),
    "end null": lambda r: _span(r).update(endTimeUnixNano=None),
    "start 1 ns": lambda r: _span(r).update(startTimeUnixNano="1"),
    "start far future": lambda r: _span(r).update(startTimeUnixNano=str(2**63 - 1)),
    "latency 1 ns": lambda r: _span(r).update(endTimeUnixNano=str(int(_span(r)["startTimeUnixNano"]) + 1)),
    "status error": lambda r: _span(r).update(status={"code": "STATUS_CODE_ERROR"}),
    "status null": lambda r: _span(r).update(status=None),
    "error type": lambda r: _set_attr(r, "error.type", {"stringValue": "timeout"}),
    "no provider": lambda r: (_set_attr(r, "gen_ai.provider.name", None)),
    "openrouter": lambda r: _set_attr(r, "gen_ai.provider.name", {"stringValue": "openrouter"}),
    "provider int": lambda r: _set_attr(r, "gen_ai.provider.name", {"intValue": "3"}),
    "ids upper case": lambda r: _span(r).update(traceId=_span(r)["traceId"].upper()),
    "ids base64": lambda r: _span(r).update(spanId="AAECAwQFBgc="),
    "span id absent": lambda r: _span(r).pop("spanId"),
    "service tier": lambda r: _set_attr(r, "gen_ai.openai.response.service_tier", {"stringValue": "flex"}),
    "response id": lambda r: _set_attr(r, "gen_ai.response.id", {"stringValue": " chatcmpl-1 "}),
    "tokens over the bound": lambda r: _set_attr(r, "gen_ai.usage.input_tokens", {"intValue": str(10**12 + 1)}),
    "tokens double": lambda r: _set_attr(r, "gen_ai.usage.output_tokens", {"doubleValue": 3.0}),
    "cache part": lambda r: _set_attr(r, "gen_ai.usage.cache_read.input_tokens", {"intValue": "2"}),
    "wrapper span": lambda r: _set_attr(r, "gen_ai.operation.name", {"stringValue": "invoke_agent"}),
    "response model blank": lambda r: _set_attr(r, "gen_ai.response.model", {"stringValue": " "}),
    "models absent": lambda r: (_set_attr(r, "gen_ai.response.model", None),
                                _set_attr(r, "gen_ai.request.model", None)),
    "team from resource": lambda r: (_set_attr(r, "tokenmeter.team", None),
                                     r["resourceSpans"][0]["resource"]["attributes"].append(
                                         {"key": "team", "value": {"intValue": "12"}})),
    "flat attributes": lambda r: _span(r).update(attributes={"gen_ai.request.model": "gpt-4o", "gen_ai.system": "openai",
                                                             "gen_ai.usage.input_tokens": 3,
                                                             "gen_ai.usage.output_tokens": 4}),
}


OTEL_EDGES.update({  # values only protobuf can carry as such, or that it writes in its own way
    "status ok": lambda r: _span(r).update(status={"code": 1}),
    "status code 7": lambda r: _span(r).update(status={"code": 7}),
    "status message only": lambda r: _span(r).update(status={"message": "boom"}),
    "negative int": lambda r: _set_attr(r, "tokenmeter.team", {"intValue": "-4"}),
    "bool attribute": lambda r: _set_attr(r, "user.id", {"boolValue": True}),
    "double attribute": lambda r: _set_attr(r, "tokenmeter.project", {"doubleValue": 2.5}),
    "NaN attribute": lambda r: _set_attr(r, "tokenmeter.project", {"doubleValue": "NaN"}),
    "array attribute": lambda r: _set_attr(r, "tags", {"arrayValue": {"values": [{"stringValue": "a"}]}}),
    "bytes attribute": lambda r: _set_attr(r, "blob", {"bytesValue": "AAE="}),
    "empty value": lambda r: _set_attr(r, "empty", {}),
    "empty key": lambda r: _span(r)["attributes"].append({"key": "", "value": {"stringValue": "x"}}),
    "resource array": lambda r: r["resourceSpans"][0]["resource"]["attributes"].append(
        {"key": "hosts", "value": {"arrayValue": {"values": [{"stringValue": "a"}]}}}),
    "resource absent": lambda r: r["resourceSpans"][0].pop("resource"),
    "no spans": lambda r: r["resourceSpans"][0].pop("scopeSpans"),
    "start 0": lambda r: _span(r).update(startTimeUnixNano="0"),
    "end 0": lambda r: _span(r).update(endTimeUnixNano="0"),
    "not a GenAI span": lambda r: _span(r).update(attributes=[{"key": "http.method", "value": {"stringValue": "GET"}}]),
})


def _protobuf(record: dict[str, Any]) -> bytes | None:
    """The record as the OTel Collector's kafka exporter writes it (ids base64 for ParseDict), if expressible."""
    from google.protobuf.json_format import ParseDict
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    record = copy.deepcopy(record)
    for rs in record["resourceSpans"]:
        for ss in rs.get("scopeSpans", []):
            for span in ss["spans"]:
                for key in ("traceId", "spanId"):
                    if key in span:
                        try:
                            span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                        except ValueError:
                            return None
    try:
        return ParseDict(record, TracesData()).SerializeToString()
    except Exception:  # noqa: BLE001 - not expressible in protobuf: the JSON case covers it
        return None


@pytest.mark.parametrize("case", OTEL_EDGES)
def test_otel_edges_write_what_the_per_span_parser_writes(case):
    record = _otel()
    _span(record)["status"] = {}
    OTEL_EDGES[case](record)
    second = _otel()
    record["resourceSpans"][0]["scopeSpans"] = record["resourceSpans"][0].get("scopeSpans", []) + \
        second["resourceSpans"][0]["scopeSpans"]  # a common span beside it
    custom = AttributionMapping.from_dict(corpus.MAPPINGS["otel"])
    no_fields = AttributionMapping.from_dict({"team": ["span:tokenmeter.team", "resource:service.name"],
                                              "tags": {"m": "attr:gen_ai.request.model"}})
    for value in (record, _protobuf(record)):
        if value is None:
            continue
        for mapping in (None, custom, no_fields):
            _assert_same(value, "otel", mapping)


def test_common_protobuf_records_are_read_from_the_message():
    from collectors.dialects.otel import common_event, decode_encoded

    record = decode_encoded(bench.gateway_records("otel", 20)[0][0])
    assert type(record).__name__ == "ProtoTraces"  # not turned into OTLP/JSON first
    events = record.common_events(common_event, AttributionMapping(), False)
    assert len(events) == 20 and all(type(event) is EncodedEvent for event in events)


CANONICAL_EDGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "ts whole second": lambda e: e.update(ts="2026-11-02T10:20:30Z"),
    "ts zero fraction": lambda e: e.update(ts="2026-11-02T10:20:30.000000Z"),
    "ts +00:00": lambda e: e.update(ts="2026-11-02T10:20:30.123+00:00"),
    "ts -00:00": lambda e: e.update(ts="2026-11-02T10:20:30-00:00"),
    "ts +02:00": lambda e: e.update(ts="2026-11-02T10:20:30+02:00"),
    "ts seven digits": lambda e: e.update(ts="2026-11-02T10:20:30.1234567Z"),
    "ts space": lambda e: e.update(ts="2026-11-02 10:20:30Z"),
    "ts no zone": lambda e: e.update(ts="2026-11-02T10:20:30"),
    "ts 30 February": lambda e: e.update(ts="2026-02-30T10:20:30Z"),
    "ts 2019": lambda e: e.update(ts="2019-12-31T23:59:59Z"),
    "ts far future": lambda e: e.update(ts="2999-01-01T00:00:00Z"),
    "ts epoch number": lambda e: e.update(ts=1_790_000_000),
    "event id 512": lambda e: e.update(event_id="e" * 512),
    "event id 513": lambda e: e.update(event_id="e" * 513),
    "event id empty": lambda e: e.update(event_id=""),
    "model blank": lambda e: e.update(model=" "),
    "provider empty": lambda e: e.update(provider=""),
    "status bad": lambda e: e.update(status="failed"),
    "operation int": lambda e: e.update(operation=3),
    "unknown key": lambda e: e.update(input_token=3),
    "content": lambda e: e.update(content={"prompt": "hi"}),
    "reported cost": lambda e: e.update(reported_cost_usd="0.0012"),
    "team int": lambda e: e["attribution"].update(team=5),
    "team empty": lambda e: e["attribution"].update(team="", org="acme"),
    "tags int value": lambda e: e["attribution"].update(tags={"n": 1}),
    "tags null": lambda e: e["attribution"].update(tags=None),
    "attribution null": lambda e: e.update(attribution=None),
    "attribution unknown key": lambda e: e["attribution"].update(teams="x"),
    "usage null": lambda e: e.update(usage=None),
    "usage parts exceed": lambda e: e["usage"].update(cached_input_tokens=500),
    "usage 1h exceeds": lambda e: e["usage"].update(cache_write_tokens=5, cache_write_1h_tokens=6),
    "usage reasoning": lambda e: e["usage"].update(reasoning_tokens=30),
    "usage bool": lambda e: e["usage"].update(output_tokens=False),
    "usage float": lambda e: e["usage"].update(output_tokens=3.0),
    "usage tool requests": lambda e: e["usage"].update(tool_requests={"web_search": 2}),
    "latency 1e16": lambda e: e.update(latency_ms=1e16),
    "latency 1e-7": lambda e: e.update(ttft_ms=1e-7),
    "latency negative": lambda e: e.update(latency_ms=-1),
    "batch text": lambda e: e.update(batch="true"),
    "batch true": lambda e: e.update(batch=True, service_tier="flex"),
    "assumption long": lambda e: e.update(usage_assumption="a" * 201),
    "assumption empty": lambda e: e.update(usage_assumption=""),
    "correlation": lambda e: e.update(correlation={"trace_id": "a" * 32, "request_id": "r"}),
    "correlation empty": lambda e: e.update(correlation={}),
    "correlation too long": lambda e: e.update(correlation={"span_id": "s" * 33}),
    "correlation unknown": lambda e: e.update(correlation={"parent": "x"}),
}


@pytest.mark.parametrize("case", CANONICAL_EDGES)
def test_canonical_edges_write_what_pydantic_writes(case):
    event = _canonical()
    CANONICAL_EDGES[case](event)
    _assert_same([event, _canonical()], "canonical")
    _assert_same(event, "canonical", AttributionMapping.from_dict(corpus.MAPPINGS["canonical"]))


def _apisix() -> dict[str, Any]:
    return bench._apisix_entry(random.Random(3), 1)[1]


APISIX_EDGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "cache parts": lambda e: e["llm_summary"].update(cache_read_input_tokens=5),
    "cache parts null": lambda e: e["llm_summary"].update(cache_read_input_tokens=None, reasoning_tokens=None),
    "lost stream count": lambda e: (e["llm_summary"].update(completion_tokens=0),
                                    e.update(llm_response_text={"content": "Hi"})),
    "zero output, no text": lambda e: e["llm_summary"].update(completion_tokens=0),
    "logged request": lambda e: e.update(llm_request={"messages": [{"role": "user", "content": "Hi"}]}),
    "logged request null": lambda e: e.update(llm_request=None),
    "request id header": lambda e: e["request"].update(headers={"X-Request-Id": " req-7 "}),
    "request id header list": lambda e: e["request"].update(headers={"x-request-id": ["a", "b"]}),
    "request id header blank": lambda e: e["request"].update(headers={"x-request-id": " "}),
    "request id int": lambda e: e.update(request_id=5),
    "request id absent": lambda e: e.pop("request_id"),
    "status 500": lambda e: e["response"].update(status=500),
    "status text": lambda e: e["response"].update(status="502"),
    "response absent": lambda e: e.pop("response"),
    "provider given": lambda e: e["llm_summary"].update(provider=" Azure "),
    "provider blank": lambda e: e["llm_summary"].update(provider=" "),
    "unknown model": lambda e: e["llm_summary"].update(model="my-model", request_model="my-model"),
    "model blank": lambda e: e["llm_summary"].update(model=" "),
    "start seconds": lambda e: e.update(start_time=1_742_531_280),
    "latency negative": lambda e: e.update(latency=-1),
    "latency 1e16": lambda e: e.update(latency=1e16),
    "duration zero": lambda e: e["llm_summary"].update(duration=0),
    "duration text": lambda e: e["llm_summary"].update(duration="30"),
    "headers list": lambda e: e["request"].update(headers=["x"]),
    "uri int": lambda e: e["request"].update(uri=5),
    "no summary": lambda e: e.pop("llm_summary"),
}


@pytest.mark.parametrize("case", APISIX_EDGES)
def test_apisix_edges_write_what_the_per_entry_parser_writes(case):
    entry = _apisix()
    APISIX_EDGES[case](entry)
    for mapping in (None, AttributionMapping.from_dict(corpus.MAPPINGS["apisix"])):
        _assert_same([entry, _apisix()], "apisix", mapping)


def _litellm() -> dict[str, Any]:
    return bench._litellm_entry(random.Random(4), 2)[1]  # an Anthropic payload


LITELLM_EDGES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "stream": lambda p: p.update(stream=True),
    "stream, first token before start": lambda p: p.update(stream=True, completionStartTime="2025-01-24 09:19:00.000000"),
    "end before start": lambda p: p.update(endTime="2025-01-24 09:19:00.000000"),
    "end absent": lambda p: p.pop("endTime"),
    "end bad": lambda p: p.update(endTime="soon"),
    "start epoch": lambda p: p.update(startTime=1_737_710_446.847371),
    "start ISO": lambda p: p.update(startTime="2025-01-24T09:20:46.847371"),
    "start padded": lambda p: p.update(startTime=" 2025-01-24 09:20:46.847371"),
    "start 2019": lambda p: p.update(startTime="2019-01-24 09:20:46.847371"),
    "start day 32": lambda p: p.update(startTime="2025-01-32 09:20:46.847371"),
    "cache hit": lambda p: p.update(cache_hit=True),
    "failure": lambda p: p.update(status="failure"),
    "status unknown": lambda p: p.update(status="error"),
    "tags": lambda p: p.update(request_tags=["feature:search", "beta", " env=prod "], end_user=" bob "),
    "tags not a list": lambda p: p.update(request_tags="beta"),
    "custom headers": lambda p: p["metadata"].update(requester_custom_headers={"X-Tokenmeter-Feature": "chat"}),
    "metadata list": lambda p: p.update(metadata=[1]),
    "hidden params list": lambda p: p.update(hidden_params=[1]),
    "id padded": lambda p: p.update(id=" chatcmpl-1 "),
    "id int": lambda p: p.update(id=7),
    "id absent": lambda p: p.pop("id"),
    "id 513": lambda p: p.update(id="c" * 513),
    "id 257": lambda p: p.update(id="c" * 257),
    "response model blank": lambda p: p["response"].update(model=" "),
    "response model int": lambda p: p["response"].update(model=4),
    "provider padded": lambda p: p.update(custom_llm_provider=" Vertex_AI "),
    "provider absent": lambda p: p.pop("custom_llm_provider"),
    "openrouter": lambda p: (p.update(custom_llm_provider="openrouter"),
                             p["response"]["usage"].update(cost=0.5, is_byok=False)),
    "bare cost": lambda p: p["response"]["usage"].update(cost=0.5),
    "cache writes": lambda p: p["response"]["usage"].update(prompt_tokens=5000, cache_creation_input_tokens=400),
    "usage only at the top": lambda p: p["response"].pop("usage"),
    "tokens text": lambda p: p["response"]["usage"].update(prompt_tokens="12"),
    "call type embeddings": lambda p: p.update(call_type="aembedding"),
}


@pytest.mark.parametrize("case", LITELLM_EDGES)
def test_litellm_edges_write_what_the_per_payload_parser_writes(case):
    payload = _litellm()
    LITELLM_EDGES[case](payload)
    for mapping in (None, AttributionMapping.from_dict(corpus.MAPPINGS["litellm"])):
        _assert_same(payload, "litellm", mapping)


def test_compiled_resolver_agrees_with_each_selectors_lookup():
    """The resolver written per mapping (attribution._compile_resolver) gives what trying each selector with
    `RecordView.lookup`, first value found, gives: for every selector kind, nested and indexed fields, values of
    every type, absent and null keys."""
    from collectors.attribution import RecordView

    mapping = AttributionMapping.from_dict({
        "team": ["header:X-Team", "field:a.0.b", "field:a.-1", "attr:team"], "org": "const: acme ",
        "project": ["span:p", "resource:p", "field:deep.er.est"], "user": ["field:u", "field:n.0"],
        "route": ["field:m.k", "field:m.j"], "feature": ["field:m.j", "field:0.k"],
        "tags": {"t": ["field:a.5", "header:x-t"], "r": "resource:r", "x": "x.0.y", "m": "m.k"},
        "inherit_defaults": False})
    values: list[Any] = [None, "", "  ", " v ", 0, 7, 1.5, True, [], ["h1", "h2"], {}, {"k": "v"}]
    rng = random.Random(5)
    for _ in range(3000):
        def pick() -> Any:
            return copy.deepcopy(rng.choice(values))
        record = {"a": rng.choice([[{"b": pick()}], [pick(), pick()], {"0": {"b": pick()}}, pick()]),
                  "deep": {"er": {"est": pick()}} if rng.random() < 0.5 else pick(), "u": pick(),
                  "n": rng.choice([[pick()], {"0": pick()}, pick()]), "x": [{"y": pick()}],
                  "m": rng.choice([{"k": pick(), "j": pick()}, {"j": pick()}, [pick()], pick()]),
                  "0": rng.choice([{"k": pick()}, pick()])}
        record = {key: value for key, value in record.items() if rng.random() < 0.8}
        headers = {name: pick() for name in ("x-team", "X-T", "other") if rng.random() < 0.5}
        span = {key: pick() for key in ("team", "p") if rng.random() < 0.5}
        resource = {key: pick() for key in ("team", "p", "r") if rng.random() < 0.5}
        view = RecordView(rng.choice([record, record, None, [record]]), headers=headers, span_attrs=span,
                          resource_attrs=resource)
        expected: dict[str, Any] = {}
        for dim, selectors in mapping.selectors("x").items():
            found = next((v for v in map(view.lookup, selectors) if v is not None), None)
            if found is not None:
                expected[dim] = found
        tags = {}
        for name, selectors in mapping.tags.items():
            found = next((v for v in map(view.lookup, selectors) if v is not None), None)
            if found is not None:
                tags[name] = found
        assert mapping.resolve_values("x", view) == {**expected, "tags": tags}, (record, headers, span, resource)
