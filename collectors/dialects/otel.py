"""OpenTelemetry GenAI spans: OTLP/JSON (`{"resourceSpans": ...}`) or OTLP/protobuf TracesData bytes.

One record (e.g. one message of the Collector's kafka exporter) holds many spans; each model-call span
(one with `gen_ai.*` attributes) becomes an event. Spans without `gen_ai.*` attributes are skipped silently,
so a record with no GenAI span yields [] (the caller counts it as skipped). `invoke_agent`, `create_agent`
and `execute_tool` spans are skipped too: they wrap model calls that have spans of their own, and counting
their (aggregated) usage as well would double count. So is the AI SDK 7 (`@ai-sdk/otel`) `agent_step` span,
which groups one step's chat and tool spans and carries no model of its own.
- OpenInference `LLM`/`EMBEDDING` spans (Envoy AI Gateway, Phoenix instrumentations) are read too, their
  `llm.*` attributes translated to the GenAI names (`openinference`); other OpenInference kinds are skipped.
- event_id: `<traceId>:<spanId>` (hex; base64 ids, as Go's protojson writes them, are turned into hex).
  ts: startTimeUnixNano; latency_ms: end - start.
- model: gen_ai.response.model, else gen_ai.request.model. provider: gen_ai.provider.name, else the older
  gen_ai.system, normalized (gcp.gemini -> gemini, aws.bedrock -> bedrock, ...).
- usage: gen_ai.usage.* (both cache attribute spellings; ints as numbers or strings) via `otel_usage`.
- reported cost: for provider `openrouter` only, `gen_ai.usage.cost` (or `gen_ai.usage.total_cost`) is OpenRouter's
  charge and becomes reported_cost_usd (see `openrouter`); other emitters' cost attributes are their own estimates
  and are not read.
- status: error when span status code is ERROR (2) or `error.type` is set.
- attribution: span attributes over resource attributes (defaults: tokenmeter.team/team, tokenmeter.project/
  project then resource service.name, tokenmeter.user/user.id/enduser.id, ...).
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from collectors.attribution import NO_ATTRIBUTES, AttributionMapping, RecordView
from collectors.coerce import as_dict, as_list, dict_field, int_field, str_field, to_float, to_int, to_str
from collectors.decode import SCALAR_HEADS, decode, refuse_json_scalar
from collectors.dialects.base import Dialect, correlation_of, derived_event_id, make_event, require_object
from collectors.dialects.common import ZERO_USAGE_COUNTED, ZERO_USAGE_UNCOUNTED, content_or_none, normalize_operation, text_of, \
    zero_usage_is_not_a_count
from collectors.dialects.openinference import SPAN_KIND as OPENINFERENCE_KIND, as_genai, is_metered_span
from collectors.dialects.openrouter import PROVIDER as OPENROUTER, reported_cost_attribute
from collectors.encoded import EncodedEvent, encoded_event, epoch_micros_text, plain_float, plain_usage, token_count
from collectors.errors import DialectError, join_path
from collectors.providers import guess_provider, normalize_provider
from collectors.usage import OTEL_USAGE_KEYS, OTEL_USAGE_PART_KEYS, otel_usage
from tokenmeter.events import UsageEvent

NAME = "otel"
WRAPPER_OPERATIONS = frozenset({"invoke_agent", "create_agent", "execute_tool", "agent_step"})
_ERROR_CODES = {2, "2", "STATUS_CODE_ERROR", "ERROR"}


def any_value(value: Any, path: str) -> Any:
    """Plain Python value of an OTLP AnyValue (`{"intValue": "12"}` -> 12)."""
    value = as_dict(value, path)
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return to_int(value["intValue"], path, allow_negative=True)
    if "doubleValue" in value:
        return to_float(value["doubleValue"], path, allow_negative=True)
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        items = as_list(as_dict(value["arrayValue"], path).get("values"), path)
        return [any_value(item, f"{path}[{i}]") for i, item in enumerate(items)]
    if "kvlistValue" in value:
        return attributes_of(as_dict(value["kvlistValue"], path).get("values"), path)
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def attributes_of(raw: Any, path: str) -> dict[str, Any]:
    if isinstance(raw, dict):  # already plain key/value (some exporters flatten)
        return raw
    attributes: dict[str, Any] = {}
    for index, item in enumerate(as_list(raw, path)):
        if type(item) is not dict:
            item = as_dict(item, f"{path}[{index}]", optional=False)
        key = item.get("key")
        if not isinstance(key, str):
            raise DialectError("attribute without a string key", f"{path}[{index}]")
        value = item.get("value")
        if type(value) is dict and "stringValue" in value:  # the common cases, as any_value reads them
            attributes[key] = value["stringValue"]
        elif type(value) is dict and type(number := value.get("intValue")) is str and number.isdecimal() \
                and number.isascii():  # OTLP's int64 text (to_int's first case)
            attributes[key] = int(number)
        else:  # the error path is only built here: a span has many attributes
            attributes[key] = any_value(value, f"{path}[{key}]")
    return attributes


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _from_unix_nanos(nanos: int, path: str) -> datetime:
    """OTLP times are always nanoseconds; a generic epoch reader guesses the unit from the size and takes a
    test clock's small values (1_000_000_000 ns) for seconds. `path`: the span's."""
    try:
        return _EPOCH + timedelta(microseconds=nanos // 1000)
    except OverflowError:
        raise DialectError(f"timestamp out of range: {nanos} ns", join_path(path, "startTimeUnixNano")) from None


def _is_genai(raw_attributes: Any, span_path: str) -> bool:
    """A GenAI span, or an OpenInference span (its kind decides later whether it is metered)."""
    if isinstance(raw_attributes, dict):
        return any(str(k).startswith("gen_ai.") or k == OPENINFERENCE_KIND for k in raw_attributes)
    items = raw_attributes if type(raw_attributes) is list \
        else as_list(raw_attributes, join_path(span_path, "attributes"))
    keys = (a.get("key") for a in items if isinstance(a, dict))
    return any(str(k).startswith("gen_ai.") or k == OPENINFERENCE_KIND for k in keys)


_HEX = re.compile(r"[0-9a-f]*")


def _hex_id(value: str) -> str:
    """OTLP/JSON ids are hex; Go's protojson (Envoy AI Gateway's recorded spans) writes them base64."""
    lowered = value.lower()
    if _HEX.fullmatch(lowered):
        return lowered
    try:
        return base64.b64decode(value, validate=True).hex()
    except (binascii.Error, ValueError):
        return value  # neither: kept as sent (case preserved), still unique per span


def _messages(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value or None
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return value or None
    return None


def _content(attrs: dict[str, Any]) -> Any:
    prompt = _messages(attrs.get("gen_ai.input.messages")) or _messages(attrs.get("gen_ai.prompt"))
    output = attrs.get("gen_ai.output.messages", attrs.get("gen_ai.completion"))
    output = _messages(output) if isinstance(output, (str, list)) else None
    completion = text_of(output) if isinstance(output, list) else output
    return content_or_none(prompt, completion)


def _failed(span: dict[str, Any], attrs: dict[str, Any], path: str) -> bool:
    code = dict_field(span, "status", path).get("code")
    return (isinstance(code, (int, str)) and code in _ERROR_CODES) or attrs.get("error.type") is not None


def _span_event(span: dict[str, Any], resource: dict[str, Any], mapping: AttributionMapping,
                path: str) -> UsageEvent | None:
    attr_path = join_path(path, "attributes")
    attrs = attributes_of(span.get("attributes"), attr_path)
    if OPENINFERENCE_KIND in attrs and not any(key.startswith("gen_ai.") for key in attrs):
        if not is_metered_span(attrs):
            return None  # a chain/tool/agent span: the LLM spans under it carry the usage
        attrs = as_genai(attrs)
    operation = attrs.get("gen_ai.operation.name")
    if isinstance(operation, str) and operation in WRAPPER_OPERATIONS:
        return None
    model = str_field(attrs, "gen_ai.response.model", attr_path, "[gen_ai.response.model]") or str_field(
        attrs, "gen_ai.request.model", attr_path, "[gen_ai.request.model]")
    if not model:
        if _failed(span, attrs, path):
            # A request the provider refused (e.g. Envoy AI Gateway's span of an OpenAI 400) names no model; say the
            # call failed, without echoing the provider's message (it may quote the request or a key).
            marked_by = "error.type" if attrs.get("error.type") is not None else "span status ERROR"
            raise DialectError(f"missing model on a failed call ({marked_by}): nothing to price", attr_path)
        raise DialectError("missing model (gen_ai.response.model and gen_ai.request.model are both absent)",
                           attr_path)
    provider_name = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or mapping.provider
    provider_text = (provider_name.strip() or None) if type(provider_name) is str \
        else to_str(provider_name, f"{attr_path}[gen_ai.provider.name]")
    provider = normalize_provider(provider_text) or guess_provider(model)
    if not provider:
        raise DialectError("missing provider (gen_ai.provider.name and gen_ai.system are both absent)", attr_path)

    start_ns = int_field(span, "startTimeUnixNano", path)
    end_ns = int_field(span, "endTimeUnixNano", path)
    if not start_ns:
        raise DialectError("missing startTimeUnixNano", path)
    usage = otel_usage(attrs, attr_path)
    trace_id, span_id = span.get("traceId"), span.get("spanId")
    if isinstance(trace_id, str) and isinstance(span_id, str) and trace_id and span_id:
        event_id = f"{_hex_id(trace_id)}:{_hex_id(span_id)}"
    else:
        event_id = derived_event_id(NAME, span, path)
    failed = _failed(span, attrs, path)
    operation = normalize_operation(operation)
    content, assumption = (_content(attrs), None) if usage is None else (None, None)
    if zero_usage_is_not_a_count(usage, "error" if failed else "ok", operation):
        content = _content(attrs)
        if content is not None:  # all zeros beside the logged messages: the count was lost, count the text
            usage, assumption = None, ZERO_USAGE_COUNTED
        else:
            assumption = ZERO_USAGE_UNCOUNTED  # nothing to count: the zeros as logged, marked
    tier = attrs.get("gen_ai.openai.response.service_tier") or attrs.get("gen_ai.openai.request.service_tier")
    view = RecordView(span, span_attrs=attrs, resource_attrs=resource)
    return make_event(
        path,
        event_id=event_id,
        ts=_from_unix_nanos(start_ns, path),
        source=NAME,
        provider=provider,
        model=model,
        operation=operation,
        status="error" if failed else "ok",
        attribution=mapping.resolve(NAME, view),
        usage=usage,
        content=content if usage is None else None,
        usage_assumption=assumption,
        latency_ms=(end_ns - start_ns) / 1e6 if end_ns and end_ns >= start_ns else None,
        service_tier=tier if isinstance(tier, str) and tier else None,
        reported_cost_usd=reported_cost_attribute(attrs, attr_path) if provider == OPENROUTER else None,
        correlation=correlation_of(response_id=attrs.get("gen_ai.response.id"), trace_id=trace_id,
                                   span_id=span_id),  # the same call in a gateway log or an SDK event
    )


def _common_span(span: dict[str, Any], resource: dict[str, Any], mapping: AttributionMapping,
                 path: str) -> EncodedEvent | None:
    """The event of a GenAI span of the common shape (string model and provider, int usage without cache or
    reasoning parts, hex ids, nanosecond times, not OpenRouter), written as `_span_event` would have it written;
    None for any other span, which `_span_event` then reads (and refuses, when it must)."""
    try:
        attrs = attributes_of(span.get("attributes"), path)
    except DialectError:
        return None
    start, end = span.get("startTimeUnixNano"), span.get("endTimeUnixNano")
    start_ns, end_ns = _nanos(start), _nanos(end)
    trace_id, span_id, status = span.get("traceId"), span.get("spanId"), span.get("status", {})
    if (end_ns is None and end is not None) or type(trace_id) is not str or type(span_id) is not str \
            or type(status) is not dict:
        return None
    code = status.get("code")
    failed = isinstance(code, (int, str)) and code in _ERROR_CODES
    return common_event(attrs, resource, mapping, span, trace_id, span_id, start_ns, end_ns, failed)


def common_event(attrs: dict[str, Any], resource: dict[str, Any], mapping: AttributionMapping, span: Any,
                 trace_id: str, span_id: str, start_ns: int | None, end_ns: int | None,
                 failed: bool, ids_are_hex: bool = False) -> EncodedEvent | None:
    """`_common_span` of a span's parts, read from OTLP/JSON or protobuf (`otel_proto.common_events`): its
    attributes as `attributes_of` gives them, hex ids, times in ns (None when absent), whether its status code
    is an error. `span`: the span as field selectors see it. `ids_are_hex`: the ids are `bytes.hex()` text."""
    operation = attrs.get("gen_ai.operation.name")
    if OPENINFERENCE_KIND in attrs or (isinstance(operation, str) and operation in WRAPPER_OPERATIONS):
        return None
    input_tokens, output_tokens = attrs.get(OTEL_USAGE_KEYS[0]), attrs.get(OTEL_USAGE_KEYS[1])
    if not (token_count(input_tokens) and token_count(output_tokens)) \
            or not attrs.keys().isdisjoint(OTEL_USAGE_PART_KEYS) or input_tokens == output_tokens == 0:
        return None  # all zeros: _span_event counts logged messages instead
    model = attrs.get("gen_ai.response.model")
    if model is None or (type(model) is str and not model.strip()):
        model = attrs.get("gen_ai.request.model")
    if type(model) is not str or not model.strip():
        return None
    model = model.strip()
    provider_name = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system") or mapping.provider
    if provider_name is not None and type(provider_name) is not str:
        return None
    provider = normalize_provider(provider_name) or guess_provider(model)
    if not provider or provider == OPENROUTER or not start_ns or not trace_id or not span_id:
        return None
    # protobuf ids come as bytes.hex(): lower-case hex already, what _hex_id returns them as
    event_id = f"{trace_id}:{span_id}" if ids_are_hex else f"{_hex_id(trace_id)}:{_hex_id(span_id)}"
    latency = None
    if end_ns and end_ns >= start_ns:
        latency = plain_float((end_ns - start_ns) / 1e6)
        if latency is None:
            return None
    ts = epoch_micros_text(start_ns // 1000) if start_ns < 2**62 else None
    if ts is None or len(event_id) > 512:
        return None
    failed = failed or attrs.get("error.type") is not None
    fields: dict[str, Any] = {
        "event_id": event_id, "ts": ts, "source": NAME, "provider": provider, "model": model,
        "operation": normalize_operation(operation), "status": "error" if failed else "ok",
        "attribution": mapping.resolve_parts(NAME)(span, NO_ATTRIBUTES, attrs or NO_ATTRIBUTES,
                                                   resource or NO_ATTRIBUTES, None),
        "usage": plain_usage(input_tokens, output_tokens),
    }
    if latency is not None:
        fields["latency_ms"] = latency
    fields["batch"] = False
    tier = attrs.get("gen_ai.openai.response.service_tier") or attrs.get("gen_ai.openai.request.service_tier")
    if isinstance(tier, str) and tier:
        fields["service_tier"] = tier
    response_id = attrs.get("gen_ai.response.id")
    if response_id is None and ids_are_hex and len(trace_id) <= 64 and len(span_id) <= 32:
        fields["correlation"] = {"trace_id": trace_id, "span_id": span_id}  # correlation_of's reading of them
    else:
        correlation = correlation_of(response_id=response_id, trace_id=trace_id, span_id=span_id)
        if correlation is not None:
            fields["correlation"] = correlation
    return encoded_event(fields)


def _nanos(value: Any) -> int | None:
    """`int_field` of a span time in its common forms (OTLP/JSON's decimal text, or an int); None otherwise."""
    if type(value) is str and value.isdecimal() and value.isascii():
        return int(value)
    if type(value) is int and value >= 0:
        return value
    return None


def decode_encoded(record: Any) -> Any:
    """`decode` for the batch form: OTLP protobuf stays a parsed message (`otel_proto.ProtoTraces`), whose common
    spans are read without their OTLP/JSON form; everything else (and every error) is `decode`'s."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        data = bytes(record)
        head = data.lstrip()[:6]
        if head and head[:1] not in (b"{", b"[") and not head.startswith((b"data:", b"event:", b"id:", b":")):
            if head[:1] in SCALAR_HEADS:
                refuse_json_scalar(data)  # `decode`'s reason for JSON of the wrong kind, not protobuf's
            from collectors.dialects.otel_proto import ProtoTraces  # protobuf is only needed here

            return ProtoTraces(data)
    return decode(record)


def parse_traces_encoded(record: Any, mapping: AttributionMapping, path: str) -> list[Any]:
    """`parse_traces`, in the batch form (collectors/encoded.py). A protobuf record whose GenAI spans are all of
    the common shape is read from the message; any other is read as OTLP/JSON, as `decode` gives it."""
    if type(record).__name__ == "ProtoTraces":
        events = record.common_events(common_event, mapping, mapping.reads_fields(NAME))
        if events is not None:
            return events
        record = record.as_json()
    return parse_traces(record, mapping, path, encoded=True)


def parse_traces(record: Any, mapping: AttributionMapping, path: str, encoded: bool = False) -> list[Any]:
    record = require_object(record, path, "OTLP TracesData")
    events: list[UsageEvent] = []
    failures: list[DialectError] = []
    spans_seen = 0
    for i, resource_spans in enumerate(as_list(record.get("resourceSpans"), join_path(path, "resourceSpans"))):
        rs_path = join_path(path, f"resourceSpans[{i}]")
        resource_spans = as_dict(resource_spans, rs_path, optional=False)
        resource = as_dict(resource_spans.get("resource"), join_path(rs_path, "resource"))
        resource_attrs = attributes_of(resource.get("attributes"), join_path(rs_path, "resource.attributes"))
        scope_key = "scopeSpans" if "scopeSpans" in resource_spans else "instrumentationLibrarySpans"
        for j, scope_spans in enumerate(as_list(resource_spans.get(scope_key), join_path(rs_path, scope_key))):
            ss_path = join_path(rs_path, f"{scope_key}[{j}]")
            for k, span in enumerate(as_list(as_dict(scope_spans, ss_path).get("spans"), join_path(ss_path, "spans"))):
                span_path = join_path(ss_path, f"spans[{k}]")
                spans_seen += 1
                try:
                    span = as_dict(span, span_path, optional=False)
                    if not _is_genai(span.get("attributes"), span_path):
                        continue
                    event = _common_span(span, resource_attrs, mapping, span_path) if encoded else None
                    if event is None:
                        event = _span_event(span, resource_attrs, mapping, span_path)
                except DialectError as exc:
                    failures.append(exc)
                    continue
                if event is not None:
                    events.append(event)
    if failures:
        detail = "; ".join(str(f) for f in failures[:5]) + ("; ..." if len(failures) > 5 else "")
        raise DialectError(f"{len(failures)} of {spans_seen} spans failed: {detail}", path or None, events,
                           failed=len(failures))
    return events


DIALECT = Dialect(NAME, "OpenTelemetry GenAI spans, OTLP/JSON or OTLP/protobuf TracesData", parse_traces,
                  parse_one_encoded=parse_traces_encoded, decode_encoded=decode_encoded)
