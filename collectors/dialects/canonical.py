"""Our own event JSON (contract v1), validated with `UsageEvent`; an array is a batch.

Attribution in the event wins; a source's mapping only fills dimensions the event leaves empty (e.g. a
`const:` org for everything an internal SDK sends).
Versions covered: contract v1, including `reported_cost_usd` (a cost the provider billed, taken as the cost of
record). Carries everything the contract has; nothing is inferred, except that all-zero usage on a successful
token-billed call beside its `content` is read as no usage (the text is counted, marked `zero-usage-counted-from-text`);
without content the zeros stay, marked `zero-usage-no-text-to-count` (left24).
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from collectors.attribution import AttributionMapping, RecordView
from collectors.dialects.base import Dialect, require_object
from collectors.dialects.common import TOKEN_BILLED_OPERATIONS, count_lost_zero_usage
from collectors.encoded import EncodedEvent, encoded_event, plain_float, token_count, utc_text
from collectors.errors import DialectError
from tokenmeter.events import ATTRIBUTION_DIMENSIONS, Correlation, UsageEvent, describe_validation_error

NAME = "canonical"


def parse_event(record: Any, mapping: AttributionMapping, path: str) -> list[UsageEvent]:
    record = require_object(record, path, "canonical event")
    try:
        event = UsageEvent.model_validate(record)
    except ValidationError as exc:
        raise DialectError(f"invalid event: {describe_validation_error(exc)}", path or None) from None
    if mapping.dimensions or mapping.tags:
        event.attribution = mapping.resolve(NAME, RecordView(record), native=event.attribution)
    return [count_lost_zero_usage(event)]


# --- the batch form ----------------------------------------------------------------------------------------

_TOP_KEYS = frozenset({"event_id", "ts", "source", "provider", "model", "operation", "status", "attribution", "usage",
                       "latency_ms", "ttft_ms", "batch", "service_tier", "usage_assumption", "correlation"})
_ATTRIBUTION_KEYS = frozenset((*ATTRIBUTION_DIMENSIONS, "tags"))
_USAGE_PARTS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "cache_write_1h_tokens", "output_tokens",
                "reasoning_tokens")
# Correlation's ids (all optional strings of at least one character) and their longest length, from the model.
_CORRELATION_BOUNDS = {name: min(m.max_length for m in info.metadata if hasattr(m, "max_length"))
                       for name, info in Correlation.model_fields.items()}
# UTC times whose value pydantic reads as written (1-6 fraction digits); other offsets and forms: per event.
_UTC_TS = re.compile(r"([1-9]\d{3})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(?:Z|[+-]00:00)")


def _common_event(record: Any) -> EncodedEvent | None:
    """A canonical event of the common shape (the fields an SDK or proxy sends, UTC time, plain usage), written
    as `UsageEvent.model_validate(record).model_dump_json(exclude_none=True)` writes it; None for any other
    record, which `parse_event` then validates (and refuses, with pydantic's reason, when it must)."""
    if type(record) is not dict or not _TOP_KEYS.issuperset(record):
        return None
    event_id, ts, source = record.get("event_id"), record.get("ts"), record.get("source")
    provider, model = record.get("provider"), record.get("model")
    operation, status = record.get("operation", "chat"), record.get("status", "ok")
    if type(event_id) is not str or not 0 < len(event_id) <= 512 or type(ts) is not str \
            or type(source) is not str or not source or type(provider) is not str or not provider \
            or type(model) is not str or not model or type(operation) is not str or status not in ("ok", "error"):
        return None
    matched = _UTC_TS.fullmatch(ts)
    if matched is None:
        return None
    year, month, day, hour, minute, second, fraction = matched.groups()
    try:
        when = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                        int(fraction.ljust(6, "0")) if fraction else 0, tzinfo=timezone.utc)
    except ValueError:
        return None
    ts_text = utc_text(when)
    attribution = _attribution(record.get("attribution", _NO_ATTRIBUTION))
    if ts_text is None or attribution is None:
        return None
    fields: dict[str, Any] = {"event_id": event_id, "ts": ts_text, "source": source, "provider": provider,
                              "model": model, "operation": operation, "status": status, "attribution": attribution}
    usage = record.get("usage")
    if usage is not None:
        usage = _usage(usage)
        if usage is None or (status == "ok" and operation in TOKEN_BILLED_OPERATIONS
                             and usage["input_tokens"] == usage["output_tokens"] == 0):
            return None  # all zeros on a billed call: parse_event marks them (count_lost_zero_usage)
        fields["usage"] = usage
    for name in ("latency_ms", "ttft_ms"):
        value = record.get(name)
        if value is not None:
            value = plain_float(value)
            if value is None:
                return None
            fields[name] = value
    batch, tier, assumption = record.get("batch", False), record.get("service_tier"), record.get("usage_assumption")
    if type(batch) is not bool or (tier is not None and type(tier) is not str):
        return None
    fields["batch"] = batch
    if tier is not None:
        fields["service_tier"] = tier
    if assumption is not None:
        if type(assumption) is not str or not 0 < len(assumption) <= 200:
            return None
        fields["usage_assumption"] = assumption
    correlation = record.get("correlation")
    if correlation is not None:
        correlation = _correlation(correlation)
        if correlation is None:
            return None
        fields["correlation"] = correlation
    return encoded_event(fields)


_NO_ATTRIBUTION: dict[str, Any] = {}


def _attribution(value: Any) -> dict[str, Any] | None:
    if type(value) is not dict or not _ATTRIBUTION_KEYS.issuperset(value):
        return None
    out: dict[str, Any] = {}
    for dim in ATTRIBUTION_DIMENSIONS:
        text = value.get(dim)
        if text is not None:
            if type(text) is not str:
                return None
            out[dim] = text
    tags = value.get("tags", _NO_ATTRIBUTION)
    if type(tags) is not dict or not all(type(v) is str for v in tags.values()):
        return None
    out["tags"] = tags
    return out


def _usage(value: Any) -> dict[str, int] | None:
    if type(value) is not dict or not _USAGE_KEYS.issuperset(value):
        return None
    counts = {part: value.get(part, 0) for part in _USAGE_PARTS}
    if not all(token_count(n) for n in counts.values()) \
            or counts["cached_input_tokens"] + counts["cache_write_tokens"] > counts["input_tokens"] \
            or counts["cache_write_1h_tokens"] > counts["cache_write_tokens"] \
            or counts["reasoning_tokens"] > counts["output_tokens"]:
        return None
    return counts


_USAGE_KEYS = frozenset(_USAGE_PARTS)


def _correlation(value: Any) -> dict[str, str] | None:
    if type(value) is not dict or not _CORRELATION_BOUNDS.keys() >= value.keys():
        return None
    out = {}
    for name, longest in _CORRELATION_BOUNDS.items():
        text = value.get(name)
        if text is not None:
            if type(text) is not str or not 0 < len(text) <= longest:
                return None
            out[name] = text
    return out


def _read_common(record: Any, mapping: AttributionMapping) -> EncodedEvent | None:
    """`_common_event`, for the default mapping only (a source mapping that adds attribution: per event)."""
    return None if mapping.dimensions or mapping.tags else _common_event(record)


DIALECT = Dialect(NAME, "tokenmeter canonical UsageEvent JSON", parse_event, read_common=_read_common)
