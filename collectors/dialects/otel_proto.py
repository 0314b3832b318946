"""OTLP/protobuf `TracesData` (what the OpenTelemetry Collector's kafka exporter writes with its default
`otlp_proto` encoding) read into the OTLP/JSON shape, so one code path handles both encodings.

Spans and attributes are read field by field rather than with `json_format.MessageToDict`, which was about
half of the parse time; the output is the same dict MessageToDict gives (camelCase keys, default values
omitted, 64-bit ints as strings, enum names) except that ids are lower-case hex as in OTLP/JSON. The rare
parts (span events, links, resource, scope) still go through MessageToDict.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any, Callable

from collectors.errors import DialectError

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def traces_data_to_json(data: bytes) -> dict[str, Any]:
    return _message_to_json(_parse(data))


def _parse(data: bytes) -> Any:
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
    except ImportError:  # pragma: no cover - the dependency is declared in pyproject
        raise DialectError("binary record needs the opentelemetry-proto package to read OTLP protobuf") from None
    message = TracesData()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise DialectError(f"binary record is neither JSON nor OTLP protobuf TracesData ({exc})") from None
    if not message.resource_spans:
        # Arbitrary bytes can parse as a message made only of unknown fields: that is not a trace.
        raise DialectError("binary record is neither JSON nor OTLP protobuf TracesData (no resourceSpans)")
    return message


def _message_to_json(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    resource_spans_list = []
    for resource_spans in message.resource_spans:
        rs: dict[str, Any] = {}
        if resource_spans.HasField("resource"):
            rs["resource"] = MessageToDict(resource_spans.resource)
        scope_spans_list = []
        for scope_spans in resource_spans.scope_spans:
            ss: dict[str, Any] = {}
            if scope_spans.HasField("scope"):
                ss["scope"] = MessageToDict(scope_spans.scope)
            if scope_spans.spans:
                ss["spans"] = [_span(span, MessageToDict) for span in scope_spans.spans]
            if scope_spans.schema_url:
                ss["schemaUrl"] = scope_spans.schema_url
            scope_spans_list.append(ss)
        if scope_spans_list:
            rs["scopeSpans"] = scope_spans_list
        if resource_spans.schema_url:
            rs["schemaUrl"] = resource_spans.schema_url
        resource_spans_list.append(rs)
    return {"resourceSpans": resource_spans_list}


class ProtoTraces:
    """A protobuf TracesData record, parsed (the same errors as `traces_data_to_json`), for the OTel dialect's
    batch form: its common spans are read from the message; `as_json()` is what `decode` gives for it.

    The record is parsed with `_raw_traces_data()`: the OTLP schema with span and resource attributes read as
    their KeyValues' encodings, so that a common span's attributes come from a list of bytes (`_raw_attributes`)
    instead of a upb wrapper object per KeyValue and per AnyValue (~4.4 us of a 8-attribute span's ~12 us). The
    OTLP message itself is parsed only when needed (`message`): for `as_json()`, and so for every record the
    common reading does not take."""

    def __init__(self, data: bytes):
        from google.protobuf.message import DecodeError

        self.data = data
        self._message: Any = None
        try:
            self.raw = _raw_traces_data().FromString(data)
        except DecodeError:  # the OTLP schema's parse gives the error, in its own words
            self.raw = None
        if self.raw is None or not self.raw.resource_spans:
            self._message = _parse(data)  # raises DialectError: the raw reading accepts what OTLP accepts, and more
            self.raw = None

    @property
    def message(self) -> Any:
        if self._message is None:
            self._message = _parse(self.data)
        return self._message

    def as_json(self) -> dict[str, Any]:
        return _message_to_json(self.message)

    def common_events(self, common_event: Callable[..., Any], mapping: Any, reads_fields: bool) -> list[Any] | None:
        """The events of every GenAI span, each built by `common_event` (`otel.common_event`) from the span's
        parts as its OTLP/JSON form gives them; None when a span or a resource is not of the common shape or a
        selector reads span fields (then the caller reads the OTLP/JSON form, failures and all)."""
        if reads_fields or self.raw is None:
            return None
        events = []
        for resource_spans in self.raw.resource_spans:
            resource = _raw_attributes(resource_spans.resource.attributes) if resource_spans.HasField("resource") \
                else {}
            if resource is None:
                return None
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attrs = _raw_attributes(span.attributes)
                    if attrs is None:
                        return None
                    if _INPUT_TOKENS not in attrs and not any(
                            key.startswith("gen_ai.") or key == OPENINFERENCE_KIND for key in attrs):
                        continue  # not a GenAI span: skipped, as parse_traces does (a usage key is GenAI's)
                    failed = span.HasField("status") and span.status.code == _STATUS_CODE_ERROR
                    event = common_event(attrs, resource, mapping, None, span.trace_id.hex(), span.span_id.hex(),
                                         span.start_time_unix_nano or None, span.end_time_unix_nano or None, failed,
                                         True)
                    if event is None:
                        return None
                    events.append(event)
        return events


_INPUT_TOKENS = "gen_ai.usage.input_tokens"  # what the common shape reads first: a key of the "gen_ai." kind
_STATUS_CODE_ERROR = 2  # Status.STATUS_CODE_ERROR; its JSON name is one of otel._ERROR_CODES
OPENINFERENCE_KIND = "openinference.span.kind"  # collectors.dialects.openinference.SPAN_KIND


_RAW_TRACES_DATA: list[Any] = []


def _raw_traces_data() -> Any:
    """TracesData of the OTLP schema with one change: `Span.attributes` and `Resource.attributes` are `repeated
    bytes`, each element the encoding of one KeyValue (the same wire type, so the same records parse; what the
    KeyValues hold is read by `_read_pair`). Every other field (span events' and links' attributes too) is OTLP's.
    Built once, in a descriptor pool of its own."""
    if not _RAW_TRACES_DATA:
        from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        pool = descriptor_pool.DescriptorPool()
        for module, message_name in ((common_pb2, None), (resource_pb2, "Resource"), (trace_pb2, "Span")):
            file_proto = descriptor_pb2.FileDescriptorProto()
            module.DESCRIPTOR.CopyToProto(file_proto)
            for message in file_proto.message_type:
                if message.name == message_name:
                    [field] = [field for field in message.field if field.name == "attributes"]
                    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                    field.ClearField("type_name")
            pool.Add(file_proto)
        _RAW_TRACES_DATA.append(message_factory.GetMessageClass(
            pool.FindMessageTypeByName("opentelemetry.proto.trace.v1.TracesData")))
    return _RAW_TRACES_DATA[0]


def _raw_attributes(items: Any) -> dict[str, Any] | None:
    """`_plain_attributes` of the KeyValues' encodings (a list of bytes). Their pairs are kept by encoding
    (`_PAIRS`): a span's model, provider, operation, team and user attributes repeat from span to span."""
    attributes: dict[str, Any] = {}
    for data in items:
        pair = _PAIRS.get(data)
        if pair is None:
            pair = _read_pair(data)
            if pair is None:
                return None
            if len(data) <= _PAIR_BYTES_LIMIT:
                if len(_PAIRS) >= _PAIRS_LIMIT:
                    _PAIRS.clear()
                _PAIRS[data] = pair
        attributes[pair[0]] = pair[1]
    return attributes


# A KeyValue's encoding -> its (key, value), for encodings of at most _PAIR_BYTES_LIMIT bytes (a logged prompt is not
# kept); at most _PAIRS_LIMIT of them (~270 bytes each for the bench's: ~4.5 MB), all dropped when full.
_PAIRS: dict[bytes, tuple[str, Any]] = {}
_PAIRS_LIMIT = 16_384
_PAIR_BYTES_LIMIT = 256


def _read_pair(data: bytes) -> tuple[str, Any] | None:
    """(key, value) of one KeyValue's encoding, as `_plain_attributes` reads the parsed KeyValue; None when it
    reads None. Read here: the layout OTLP exporters write for a short key and a string, int, bool or double (the
    key field, then the value field holding one field, one-byte lengths). Any other encoding (long strings,
    negative ints, fields repeated, in another order or unknown, invalid UTF-8) is parsed as a KeyValue."""
    size = len(data)
    if size > 4 and data[0] == 0x0A and data[1] < 0x80:  # field 1 (key), length-delimited, a one-byte length
        key_end = data[1] + 2
        value_size = size - key_end - 2
        if 2 <= value_size < 0x80 and data[key_end] == 0x12 and data[key_end + 1] == value_size:
            tag, start = data[key_end + 2], key_end + 3  # field 2 (value) up to the end: its first field's tag
            value: Any = _OTHER
            try:
                if tag == 0x0A and data[start] == size - start - 1:  # string_value up to the end (< 0x80 long)
                    value = data[start + 1:].decode()
                elif tag == 0x18 and size - start <= 9 and data[-1] < 0x80:  # int_value: one varint below 2**63
                    value = data[-1]
                    for index in range(size - 2, start - 1, -1):  # the varint's earlier bytes, down to its first
                        byte = data[index]
                        if byte < 0x80:
                            value = _OTHER  # not one varint up to the end
                            break
                        value = value << 7 | byte & 0x7F
                elif tag == 0x10 and size - start == 1 and data[start] < 0x80:  # bool_value: a one-byte varint
                    value = data[start] != 0
                elif tag == 0x21 and size - start == 8:  # double_value (fixed64)
                    value = _DOUBLE.unpack_from(data, start)[0]
                    if not math.isfinite(value):
                        value = _OTHER
                if value is not _OTHER:
                    key = data[2:key_end].decode()
                    if key:
                        return key, value
            except UnicodeDecodeError:
                pass  # not UTF-8: upb refuses it too (below; the OTLP parse of the record then gives the error)
    return _pair_of_message(data)


_OTHER = object()
_DOUBLE = struct.Struct("<d")


def _pair_of_message(data: bytes) -> tuple[str, Any] | None:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    try:
        item = KeyValue.FromString(data)
    except DecodeError:
        return None  # the OTLP parse of the record fails too: `as_json()` raises its error
    attributes = _plain_attributes((item,))
    return next(iter(attributes.items())) if attributes else None


def _plain_attributes(items: Any) -> dict[str, Any] | None:
    """The attributes as `otel.attributes_of` reads their OTLP/JSON form, when every value is a string, an int,
    a bool, a finite double or an array of those under a non-empty key; None otherwise. `items`: parsed KeyValues.
    Arrays: `gen_ai.response.finish_reasons` is on every chat span of the GenAI instrumentations."""
    attributes: dict[str, Any] = {}
    for item in items:
        key, value = item.key, item.value
        kind = value.WhichOneof("value")
        if kind in _SCALAR_KINDS:  # one lookup instead of a chain of string comparisons (~20% of this loop)
            attributes[key] = getattr(value, kind)
        elif kind == "double_value" and math.isfinite(value.double_value):
            attributes[key] = value.double_value
        elif kind == "array_value" and (values := _plain_array(value.array_value.values)) is not None:
            attributes[key] = values  # shared by the spans that carry this encoding (`_PAIRS`): read, never changed
        else:
            return None
        if not key:
            return None
    return attributes


def _plain_array(items: Any) -> list[Any] | None:
    """An ArrayValue's values as `otel.any_value` reads their OTLP/JSON form (a list), when each is a string, an
    int, a bool or a finite double; None otherwise."""
    values = []
    for value in items:
        kind = value.WhichOneof("value")
        if kind in _SCALAR_KINDS:
            values.append(getattr(value, kind))
        elif kind == "double_value" and math.isfinite(value.double_value):
            values.append(value.double_value)
        else:
            return None
    return values


_SCALAR_KINDS = frozenset(("string_value", "int_value", "bool_value"))


def _span(span: Any, message_to_dict: Any) -> dict[str, Any]:
    """One Span as MessageToDict writes it (key order kept: field number order), ids as hex."""
    out: dict[str, Any] = {}
    if span.trace_id:
        out["traceId"] = span.trace_id.hex()
    if span.span_id:
        out["spanId"] = span.span_id.hex()
    if span.trace_state:
        out["traceState"] = span.trace_state
    if span.parent_span_id:
        out["parentSpanId"] = span.parent_span_id.hex()
    if span.name:
        out["name"] = span.name
    if span.kind:
        out["kind"] = span.DESCRIPTOR.fields_by_name["kind"].enum_type.values_by_number[span.kind].name
    if span.start_time_unix_nano:
        out["startTimeUnixNano"] = str(span.start_time_unix_nano)
    if span.end_time_unix_nano:
        out["endTimeUnixNano"] = str(span.end_time_unix_nano)
    if span.attributes:
        out["attributes"] = _key_values(span.attributes)
    if span.dropped_attributes_count:
        out["droppedAttributesCount"] = span.dropped_attributes_count
    if span.events:
        out["events"] = [message_to_dict(event) for event in span.events]
    if span.dropped_events_count:
        out["droppedEventsCount"] = span.dropped_events_count
    if span.links:
        links = [message_to_dict(link) for link in span.links]
        for link in links:
            _hex_ids(link)
        out["links"] = links
    if span.dropped_links_count:
        out["droppedLinksCount"] = span.dropped_links_count
    if span.HasField("status"):
        out["status"] = message_to_dict(span.status)
    if span.flags:
        out["flags"] = span.flags
    return out


def _key_values(items: Any) -> list[dict[str, Any]]:
    result = []
    append = result.append
    for item in items:
        kv: dict[str, Any] = {}
        if item.key:
            kv["key"] = item.key
        if item.HasField("value"):
            value = item.value
            kind = value.WhichOneof("value")
            if kind == "string_value":  # most attributes: read here rather than in _any_value
                kv["value"] = {"stringValue": value.string_value}
            elif kind == "int_value":
                kv["value"] = {"intValue": str(value.int_value)}
            else:
                kv["value"] = _any_value(value)
        append(kv)
    return result


def _any_value(value: Any) -> dict[str, Any]:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return {"stringValue": value.string_value}
    if kind == "int_value":
        return {"intValue": str(value.int_value)}
    if kind == "bool_value":
        return {"boolValue": value.bool_value}
    if kind == "double_value":
        number = value.double_value
        if number != number or number in (float("inf"), float("-inf")):
            from google.protobuf.json_format import MessageToDict  # NaN/Infinity spelled as MessageToDict does
            return MessageToDict(value)
        return {"doubleValue": number}
    if kind == "array_value":
        values = value.array_value.values
        return {"arrayValue": {"values": [_any_value(v) for v in values]} if values else {}}
    if kind == "kvlist_value":
        values = value.kvlist_value.values
        return {"kvlistValue": {"values": _key_values(values)} if values else {}}
    if kind == "bytes_value":
        return {"bytesValue": base64.b64encode(value.bytes_value).decode("ascii")}
    return {}


def _hex_ids(obj: dict[str, Any]) -> None:
    # MessageToDict writes bytes as base64; OTLP/JSON (and our event ids) use lower-case hex.
    for key in _ID_KEYS:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()
