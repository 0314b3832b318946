"""What every dialect shares: the Dialect shape, event construction, batch handling."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
from pydantic import ValidationError

from collectors.attribution import DEFAULT_MAPPING, AttributionMapping
from collectors.decode import _loads as loads_json, decode, refuse_top_level_scalar
from collectors.encoded import EncodedEvent
from collectors.errors import DialectError, join_path
from tokenmeter.events import UsageEvent, derive_event_id, describe_validation_error

_JSON_OPENERS = (b"{", b"[")

# parse_one(record, mapping, path) -> events of ONE log entry / response / envelope.
ParseOne = Callable[[Any, AttributionMapping, str], list[UsageEvent]]
# The same, in the batch form: the common shape comes back already written (EncodedEvent), anything else is
# parse_one's (see collectors/encoded.py).
ParseOneEncoded = Callable[[Any, AttributionMapping, str], list[UsageEvent | EncodedEvent]]
ReadCommon = Callable[[Any, AttributionMapping], EncodedEvent | None]


@dataclass(frozen=True)
class Dialect:
    """One input format. `parse` accepts a JSON value, JSON/SSE text or bytes; one record may hold many events."""

    name: str
    description: str
    parse_one: ParseOne
    arrays_are_batches: bool = True  # False for provider responses, where an array is one streamed response
    # The batch form (collectors/encoded.py), where the dialect has one: `read_common(entry, mapping)` writes an
    # entry of the common shape (None: any other entry, for parse_one), or `parse_one_encoded` a whole record.
    read_common: ReadCommon | None = None
    parse_one_encoded: ParseOneEncoded | None = None
    decode_encoded: Callable[[Any], Any] | None = None  # the batch form's `decode`, where it differs

    def parse(self, record: Any, mapping: AttributionMapping | None = None,
              encoded: bool = False) -> list[Any]:
        """Events of one record. `encoded`: the batch form, for callers that only write the events (collector
        entry points): the common shape's events come back as `EncodedEvent`s, the same bytes, same errors."""
        if type(record) is bytes and record[:1] in _JSON_OPENERS:  # what `decode` does with it, fewer steps
            record = loads_json(record)
        else:
            record = (self.decode_encoded if encoded and self.decode_encoded is not None else decode)(record)
            refuse_top_level_scalar(record)  # a value read before (an HTTP body's): what decode says of its text
        mapping = mapping or DEFAULT_MAPPING
        parse_one = self.parse_one_encoded if encoded and self.parse_one_encoded is not None else self.parse_one
        read_common = self.read_common if encoded else None
        if isinstance(record, list) and self.arrays_are_batches:
            done: list[Any] = []
            if read_common is not None:  # the common entries in a plain loop, up to the first other one
                for item in record:
                    event = read_common(item, mapping)
                    if event is None:
                        break
                    done.append(event)
                else:
                    return done
            common = (lambda item: read_common(item, mapping)) if read_common is not None else None
            return parse_batch(record, lambda item, path: parse_one(item, mapping, path), read_common=common,
                               done=done)
        event = read_common(record, mapping) if read_common is not None else None
        return [event] if event is not None else parse_one(record, mapping, "")


def parse_batch(items: list[Any], parse_item: Callable[[Any, str], list[UsageEvent]], prefix: str = "",
                read_common: Callable[[Any], EncodedEvent | None] | None = None,
                done: list[Any] | None = None) -> list[Any]:
    """Parse every entry; if some fail, raise one error listing them, carrying the good events in `partial`.
    `read_common`: the batch form's reader, tried first (an entry it takes needs no path). `done`: the events
    `read_common` already gave for the first len(done) entries, one each (they are not read again)."""
    events: list[Any] = list(done) if done else []
    failures: list[DialectError] = []
    for index, item in enumerate(items[len(events):] if events else items, len(events)):
        if read_common is not None:
            event = read_common(item)
            if event is not None:
                events.append(event)
                continue
        path = join_path(prefix, f"[{index}]")
        try:
            events.extend(parse_item(item, path))
        except DialectError as exc:
            failures.append(exc if exc.path and exc.path.startswith(path) else exc.under(path))
            events.extend(exc.partial)
    if failures:
        if len(failures) == 1 and len(items) == 1:
            raise DialectError(failures[0].reason, failures[0].path, events)
        detail = "; ".join(str(f) for f in failures[:5]) + ("; ..." if len(failures) > 5 else "")
        raise DialectError(f"{len(failures)} of {len(items)} entries failed: {detail}", prefix or None, events)
    return events


def require_object(record: Any, path: str, what: str) -> dict[str, Any]:
    if not isinstance(record, dict):
        got = "null" if record is None else type(record).__name__
        raise DialectError(f"expected a {what} object, got {got}", path or None)
    return record


def make_event(path: str, **fields: Any) -> UsageEvent:
    """Validate with the shared contract; a violation names the canonical field."""
    try:
        return UsageEvent(**fields)
    except ValidationError as exc:
        raise DialectError(f"invalid event: {describe_validation_error(exc)}", path or None) from None


def correlation_of(**ids: Any) -> dict[str, str] | None:
    """The event's `correlation` (cross-source dedup, tokenmeter.events.Correlation) from the ids a source has:
    non-empty strings only, too long ones left out (an id is a key, never worth refusing the event over)."""
    kept = None
    for name, value in ids.items():
        if isinstance(value, str):
            value = value.strip()
            if value and len(value) <= _ID_LIMITS[name]:
                if kept is None:
                    kept = {}
                kept[name] = value
    return kept


_ID_LIMITS = {"response_id": 256, "request_id": 256, "trace_id": 64, "span_id": 32}


def derived_event_id(source: str, record: Any, path: str) -> str:
    """`derive_event_id(source, record)` for a record that names no id; a DialectError (a dead letter) when the
    record cannot be written to be hashed: orjson reads JSON nested up to 1024 levels but writes only 254."""
    try:
        return derive_event_id(source, record)
    except orjson.JSONEncodeError:
        raise DialectError("no event id, and the record nests too deeply to derive one (over 254 levels)",
                           path or None) from None


def now_utc() -> datetime:
    """Fallback timestamp for records that carry none (raw Anthropic responses): the time we read them."""
    return datetime.now(timezone.utc)


def http_status_is_error(value: Any) -> bool | None:
    """True for HTTP status >= 400 (int or numeric string), None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(str(value).strip()) >= 400
    except ValueError:
        return None
