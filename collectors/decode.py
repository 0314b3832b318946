"""Turn what arrives on the wire (dict, JSON text/bytes, SSE text, OTLP protobuf bytes) into JSON values."""

from __future__ import annotations

from typing import Any

import orjson

from collectors.errors import DialectError


def decode(record: Any) -> Any:
    """JSON values pass through; text and bytes are read as JSON, SSE, or (bytes only) OTLP protobuf."""
    if isinstance(record, (bytes, bytearray, memoryview)):
        data = bytes(record)
        head = data.lstrip()[:6]
        if head[:1] in (b"{", b"["):
            return _loads(data)
        if head.startswith((b"data:", b"event:", b"id:", b":")):
            return parse_sse(_utf8(data))
        if not head:
            raise DialectError("empty record")
        from collectors.dialects.otel_proto import traces_data_to_json  # protobuf is only needed here

        return traces_data_to_json(data)
    if isinstance(record, str):
        text = record.strip()
        if text[:1] in ("{", "["):
            return _loads(text)
        if text.startswith(("data:", "event:", "id:", ":")):
            return parse_sse(text)
        if not text:
            raise DialectError("empty record")
        raise DialectError(f"text record is neither JSON nor server-sent events: {text[:40]!r}")
    return record


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DialectError(f"record is not UTF-8 text: {exc}") from None


def _loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DialectError(f"invalid JSON: {exc}") from None


def parse_sse(text: str) -> list[Any]:
    """A saved server-sent-events stream as the list of its JSON `data:` payloads (`[DONE]` dropped)."""
    events: list[Any] = []
    data_lines: list[str] = []

    def flush() -> None:
        if data_lines:
            payload = "\n".join(data_lines).strip()
            data_lines.clear()
            if payload and payload != "[DONE]":
                try:
                    events.append(orjson.loads(payload))
                except orjson.JSONDecodeError as exc:
                    raise DialectError(f"SSE event {len(events)}: invalid JSON data: {exc}") from None

    for line in text.splitlines():
        if not line.strip():
            flush()
        elif line.startswith("data:"):
            data_lines.append(line[5:].removeprefix(" "))
        # `event:`, `id:`, `retry:` and `:` comments carry nothing the JSON payloads lack.
    flush()
    return events
