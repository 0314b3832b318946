"""Collectors: read what gateways and providers emit, turn it into canonical `UsageEvent`s.

Public API (shared by every collector mode and by `tokenmeter price`):
    DIALECTS[name].parse(record, mapping=None, encoded=False) -> list[UsageEvent]  (encoded: batch form)
    detect_dialect(record) -> str
    parse_record(record, dialect=None, mapping=None) -> list[UsageEvent]
    AttributionMapping.from_dict(yaml_dict)
    DialectError(reason, path, partial)  # `partial`: the good events of a partly broken batch
A record is a JSON value (dict/array), JSON or SSE text, or bytes (JSON, SSE, or OTLP protobuf TracesData).
An empty result means the record holds no LLM call (a non-AI route, a trace without GenAI spans): skipped.
"""

from __future__ import annotations

from typing import Any

from collectors.attribution import DEFAULT_SELECTORS, AttributionMapping
from collectors.decode import decode, refuse_top_level_scalar
from collectors.detect import detect_dialect
from collectors.encoded import sendable
from collectors.dialects import DIALECTS, Dialect
from collectors.errors import DialectError
from collectors.providers import guess_provider, normalize_provider
from collectors.usage import anthropic_usage, gemini_usage, openai_usage, otel_usage
from tokenmeter.events import UsageEvent


def parse_record(record: Any, dialect: str | None = None, mapping: AttributionMapping | None = None,
                 encoded: bool = False) -> list[UsageEvent]:
    """Events of one record in `dialect` (auto-detected when None). `encoded`: the dialect's batch form, every
    event an `EncodedEvent` (already written; for the collectors, which only publish them), one too large for a
    Kafka message a record error like any other (the others kept in `partial`)."""
    if not encoded:
        return _parse(record, dialect, mapping, encoded)
    try:
        found = _parse(record, dialect, mapping, encoded)
    except DialectError as exc:
        kept, refused = sendable(exc.partial)
        if refused:
            raise DialectError("; ".join([exc.reason, *refused]), exc.path, kept, exc.failed + len(refused)) from None
        exc.partial = kept
        raise
    kept, refused = sendable(found)
    if refused:
        raise DialectError("; ".join(refused), None, kept, len(refused))
    return kept


def _parse(record: Any, dialect: str | None, mapping: AttributionMapping | None, encoded: bool) -> list[UsageEvent]:
    if encoded and dialect in DIALECTS:  # the dialect decodes (its batch form may read protobuf as it is)
        return DIALECTS[dialect].parse(record, mapping, encoded)
    record = decode(record)
    refuse_top_level_scalar(record)  # before detection, which would call it an unknown shape
    if isinstance(record, list) and not record:
        return []
    name = dialect or detect_dialect(record)
    try:
        parser = DIALECTS[name]
    except KeyError:
        raise DialectError(f"unknown dialect {name!r} (known: {', '.join(DIALECTS)})") from None
    return parser.parse(record, mapping, encoded)


__all__ = [
    "DEFAULT_SELECTORS",
    "DIALECTS",
    "AttributionMapping",
    "Dialect",
    "DialectError",
    "anthropic_usage",
    "detect_dialect",
    "gemini_usage",
    "guess_provider",
    "normalize_provider",
    "openai_usage",
    "otel_usage",
    "parse_record",
]
