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
        if head[:1] in SCALAR_HEADS:
            refuse_json_scalar(data)
        from collectors.dialects.otel_proto import traces_data_to_json  # protobuf is only needed here

        return traces_data_to_json(data)
    if isinstance(record, str):
        text = record.strip()
        if text[:1] in ("{", "["):
            return _loads(text)
        if text.startswith(_SSE_HEADS):
            return parse_sse(text)
        if not text:
            raise DialectError("empty record")
        if text[:1] in SCALAR_HEADS_TEXT:
            refuse_json_scalar(text)
        raise DialectError(f"text record is neither JSON nor server-sent events: {text[:40]!r}")
    return record


def refuse_json_scalar(data: str | bytes) -> None:
    """A DialectError saying what the record is when it is a whole JSON number, string, boolean or null (else
    nothing: the caller reads it on as SSE, protobuf or text). Not "neither JSON nor ...": it is JSON, of a kind
    no dialect reads. Callers call it only for a record whose first non-blank character is in SCALAR_HEADS (the
    test inline: ~0.25 us a call, on every protobuf record otherwise); protobuf whose length byte looks like one
    fails orjson at once (a MB of it: ~75 us, orjson's UTF-8 check)."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return
    refuse_top_level_scalar(value)


def refuse_top_level_scalar(record: Any) -> None:
    """The same DialectError for a record already read as JSON (a value passed in). A str is text to read (a
    file's line): see `refuse_json_value` for a value that came as JSON."""
    if record is None:
        raise DialectError("record is JSON null, not an object or array")
    if isinstance(record, (bool, int, float, str)):
        kind = "boolean" if isinstance(record, bool) else "string" if isinstance(record, str) else "number"
        raise DialectError(f"record is a JSON {kind}, not an object or array")


def refuse_json_value(value: Any) -> None:
    """`refuse_top_level_scalar` for a value read from JSON (an HTTP body's): a JSON string is refused as one
    unless `decode` reads its text (a record sent JSON-encoded twice, or SSE, is read as before)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("{", "[") or text.startswith(_SSE_HEADS):
            return
        raise DialectError("record is a JSON string, not an object or array")
    refuse_top_level_scalar(value)


_SSE_HEADS = ("data:", "event:", "id:", ":")
SCALAR_HEADS = frozenset(bytes([byte]) for byte in b'"-0123456789tfn')  # how a JSON scalar can start
SCALAR_HEADS_TEXT = frozenset('"-0123456789tfn')


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
