"""The two wire formats of `tokenmeter.priced`, and the ONE decode every in-house reader of the topic uses.

A priced message is either a JSON array of priced events (or one object: the format since v1, no header) or an
Arrow IPC stream of `tokenmeter.priced_arrow.SCHEMA` rows (issue 14, loader11), named per message by the Kafka
header `tokenmeter-format: arrow`, so one topic can hold both while writers switch
(`TOKENMETER_PRICED_FORMAT`). A message without the header is JSON, as every message written before was.

This module imports no heavy library: the anomaly detector reads the topic without pyarrow, which is imported only
when an Arrow message arrives.
"""

from __future__ import annotations

from typing import Any, Iterable

import orjson

FORMAT_HEADER = "tokenmeter-format"
JSON, ARROW = "json", "arrow"
FORMATS = (JSON, ARROW)
ARROW_HEADERS: list[tuple[str, bytes]] = [(FORMAT_HEADER, ARROW.encode())]


class PricedFormatError(ValueError):
    """A priced message that cannot be read in the format its header names; the text is the dead letter's reason."""


def format_of(headers: Iterable[tuple[Any, Any]] | None) -> str:
    """The format a message's Kafka headers name: `json` without the header; PricedFormatError for a format this
    version does not know (the message is then a dead letter, not guessed at)."""
    for key, value in headers or ():
        if (key.decode("utf-8", "replace") if isinstance(key, bytes) else key) != FORMAT_HEADER:
            continue
        name = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
        if name not in FORMATS:
            raise PricedFormatError(f"unknown priced format in header {FORMAT_HEADER}: {name[:100]!r}")
        return name
    return JSON


def headers_for(priced_format: str) -> list[tuple[str, bytes]] | None:
    """The headers a writer sends with a priced message of this format (none for JSON: byte-identical to before)."""
    return ARROW_HEADERS if priced_format == ARROW else None


def decode_value(value: bytes | None, headers: Iterable[tuple[Any, Any]] | None = None) -> Any:
    """One `tokenmeter.priced` message decoded, whatever its format: JSON as orjson reads it (an array, one object
    or any other JSON value, for the caller to judge), an Arrow message as the list of dicts the same events' JSON
    array decodes to (`priced_arrow.to_events`). Raises orjson.JSONDecodeError for bad JSON and PricedFormatError
    for a bad Arrow message or an unknown format; the caller words its dead letter."""
    if format_of(headers) == ARROW:
        from tokenmeter import priced_arrow  # pyarrow only for readers that meet an Arrow message

        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise PricedFormatError("invalid Arrow IPC: empty message")
        try:
            return priced_arrow.to_events(priced_arrow.read_table(bytes(value)))
        except priced_arrow.ArrowMessageError as exc:
            raise PricedFormatError(str(exc)) from None
    return orjson.loads(value if value is not None else b"null")


def decode_priced(value: bytes | None, headers: Iterable[tuple[Any, Any]] | None = None) -> list[Any]:
    """`decode_value` as a list of items: an array's items, or the single value."""
    decoded = decode_value(value, headers)
    return decoded if isinstance(decoded, list) else [decoded]


def count_priced(value: bytes | None, headers: Iterable[tuple[Any, Any]] | None = None) -> int:
    """How many events a well-formed priced message carries, without building them (the bench's reader)."""
    if format_of(headers) == ARROW:
        from tokenmeter import priced_arrow

        return priced_arrow.read_table(bytes(value or b"")).num_rows
    return len(decode_priced(value))


def record_headers(record: Any) -> Any:
    """A consumer record's headers (aiokafka's ConsumerRecord; test records may have none)."""
    return getattr(record, "headers", None)


__all__ = ["ARROW", "ARROW_HEADERS", "FORMAT_HEADER", "FORMATS", "JSON", "PricedFormatError", "count_priced",
           "decode_priced", "decode_value", "format_of", "headers_for", "record_headers"]
