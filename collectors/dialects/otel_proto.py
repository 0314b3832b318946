"""OTLP/protobuf `TracesData` (what the OpenTelemetry Collector's kafka exporter writes with its default
`otlp_proto` encoding) read into the OTLP/JSON shape, so one code path handles both encodings."""

from __future__ import annotations

import base64
from typing import Any

from collectors.errors import DialectError

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def traces_data_to_json(data: bytes) -> dict[str, Any]:
    try:
        from google.protobuf.json_format import MessageToDict
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
    as_json = MessageToDict(message)
    for resource_spans in as_json.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                _hex_ids(span)
                for link in span.get("links", []):
                    _hex_ids(link)
    return as_json


def _hex_ids(obj: dict[str, Any]) -> None:
    # MessageToDict writes bytes as base64; OTLP/JSON (and our event ids) use lower-case hex.
    for key in _ID_KEYS:
        if key in obj:
            obj[key] = base64.b64decode(obj[key]).hex()
