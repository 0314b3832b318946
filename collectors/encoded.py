"""The batch form's output: a canonical event already written as its JSON, with its id and partition key.

The batch form of a dialect (`Dialect.parse(..., encoded=True)`, what the Kafka bridge, the file tail and HTTP
ingest call) reads the common shape of an entry straight into the event's JSON, without building the pydantic
`UsageEvent`, and leaves every other entry to the dialect's per-entry parser (which builds and validates the
model, so its dead letters and reasons are today's). A common-shape reader only takes an entry when it can prove
the model would accept it unchanged, and writes the bytes `UsageEvent.model_dump_json(exclude_none=True)` writes:
`collectors/equivalence.py` holds the two together, byte for byte.

What the readers must reproduce, collected here once:
- the field order of the model (a dict built in that order; orjson keeps it);
- the timestamp as pydantic writes an aware UTC datetime (`...:01.719000Z`, no fraction when zero);
- floats: only values pydantic and orjson write alike (0, or 1e-4 <= x < 1e15; else the per-entry path);
- the contract's bounds (token counts, parts within totals, event time range, string lengths, attribution sizes,
  the names' lengths: TEXT_BOUNDS).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from time import monotonic
from typing import Any

import orjson

from tokenmeter.events import (EARLIEST_EVENT_TS, MAX_EVENT_FUTURE, MAX_TOKENS, PARTITION_DIMENSIONS, UsageEvent,
                               attribution_fits, partition_key, texts_fit)
from tokenmeter.microbatch import MAX_MESSAGE_BYTES

# An event is sent as a message of its own at worst: with its partition key (an attribution value, so a 700 KB team
# is in the message twice) it must fit the sink's 1 MiB producer request and Kafka's default message.max.bytes.
# Past it the producer refused the message and the sink took that for an unavailable broker (hostile32).
MAX_SENDABLE_EVENT_BYTES = MAX_MESSAGE_BYTES


class EncodedEvent:
    """One canonical event as the sink writes it: `json` is what `model_dump_json(exclude_none=True)` gives."""

    __slots__ = ("event_id", "key", "json")

    def __init__(self, event_id: str, key: bytes, json: bytes):
        self.event_id = event_id
        self.key = key
        self.json = json

    def __repr__(self) -> str:
        return f"EncodedEvent({self.json[:120]!r}...)"


def encoded_event(fields: dict[str, Any]) -> EncodedEvent | None:
    """`fields`: the event's JSON form in model order, None fields left out, attribution a plain dict. None when the
    attribution is past the contract's bounds (tokenmeter.events.attribution_fits): the entry then takes its dialect's
    per-entry parser, whose model refuses it naming the field, its size and the limit (cap33). So for a source,
    provider, model, operation or service tier past its bound (trust34)."""
    if not (attribution_fits(fields["attribution"]) and texts_fit(fields)):
        return None
    return EncodedEvent(fields["event_id"], attribution_key(fields["attribution"]), kept_copy(orjson.dumps(fields)))


def sendable(events: list[Any]) -> tuple[list[Any], list[str]]:
    """(the events that fit one Kafka message, written as EncodedEvents; why each other one does not). A model is
    written here instead of in the sink, so this costs no second encoding."""
    kept: list[Any] = []
    refused: list[str] = []
    for event in events:
        if isinstance(event, UsageEvent):
            event = EncodedEvent(event.event_id, partition_key(event), event.model_dump_json(exclude_none=True).encode())
        size = len(event.key) + len(event.json) + 2  # the message's key and its one-event array
        if size <= MAX_SENDABLE_EVENT_BYTES:
            kept.append(event)
        else:
            refused.append(f"event too large to send: {size} bytes (its JSON and partition key), at most "
                           f"{MAX_SENDABLE_EVENT_BYTES} (event_id {event.event_id[:100]!r}; a long source, model "
                           "or content)")
    return kept, refused


def kept_copy(written: bytes) -> bytes:
    """`written` (fresh from `orjson.dumps`) copied into an object of its own size, for output a batch keeps alive.
    orjson writes into a buffer of a few KB and shrinks it in place; when the result stays alive (a batch's events
    until the broker's acknowledgement), each call's buffer is new memory for the allocator, ~0.5 page faults a
    call: 1.24 us per 540-byte event kept, against 0.46 us copied (the buffer is then freed and reused at once)."""
    return memoryview(written).tobytes()


def attribution_key(attribution: dict[str, Any]) -> bytes:
    """`tokenmeter.events.partition_key` of an event with this (JSON-form) attribution."""
    for dim in PARTITION_DIMENSIONS:
        value = attribution.get(dim)
        if value:
            return f"{dim}:{value}".encode()
    return b"unattributed"


def utc_text(ts: datetime) -> str | None:
    """The JSON text pydantic writes for an aware UTC datetime; None when the event time is outside the accepted
    range (then the per-entry path gives the contract's reason). The validator reads its clock later than this
    one, so a time accepted here is accepted there too."""
    if ts < EARLIEST_EVENT_TS or ts > _latest_accepted():
        return None
    text = ts.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else None


def naive_utc_text(ts: datetime, spelled: str | None = None) -> str | None:
    """`utc_text` of a naive datetime read as UTC (LiteLLM's times), without making it aware first. `spelled`:
    the text `ts` was read from by `datetime.fromisoformat`, when it is `YYYY-MM-DD HH:MM:SS.ffffff` (ASCII digits,
    as fromisoformat requires): the result is then that text re-spelled, not written again by `isoformat`."""
    if monotonic() - _LATEST[2] >= 1.0:
        _latest_accepted()
    if ts < _EARLIEST_NAIVE or ts > _LATEST[1]:
        return None
    if spelled is not None:
        # its one space is the date-time separator: replacing it was ~0.14 us cheaper than slicing around it
        return spelled.replace(" ", "T") + "Z" if ts.microsecond else spelled[:19].replace(" ", "T") + "Z"
    return ts.isoformat() + "Z"


_EARLIEST_NAIVE = EARLIEST_EVENT_TS.astimezone(timezone.utc).replace(tzinfo=None)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_EARLIEST_MICROS = (EARLIEST_EVENT_TS - _EPOCH) // _MICROSECOND
# [now + MAX_EVENT_FUTURE, the same naive, the monotonic clock when read, the same in microseconds since the epoch]
_LATEST: list[Any] = [datetime.min.replace(tzinfo=timezone.utc), datetime.min, -1.0, -2**63]


def _latest_accepted() -> datetime:
    """now + MAX_EVENT_FUTURE, read from the clock at most once a second: an earlier reading is a lower bound of
    the validator's (so nothing it refuses is taken), and one `datetime.now` per event was ~5% of a span's time."""
    tick = monotonic()
    if tick - _LATEST[2] >= 1.0:
        latest = datetime.now(timezone.utc) + MAX_EVENT_FUTURE
        _LATEST[:] = [latest, latest.replace(tzinfo=None), tick, (latest - _EPOCH) // _MICROSECOND]
    return _LATEST[0]


def epoch_micros_text(micros: int) -> str | None:
    """`utc_text` of the UTC time `micros` microseconds after the epoch (an int), without making the datetime:
    the range test on the integer, the text from the second's text (made once per second, kept in a small
    cache) and the fraction, as pydantic writes it (`.719000`, none when zero). Making the datetime from an
    epoch and writing it (`fromtimestamp`, the aware comparisons, `isoformat`) was ~15% of a Kong entry's time."""
    if _out_of_range(micros):
        return None
    seconds, fraction = divmod(micros, 1_000_000)
    text = _SECOND_TEXT.get(seconds) or _new_second_text(seconds)
    return f"{text}.{fraction:06d}Z" if fraction else text + "Z"


def epoch_millis_text(millis: int) -> str | None:
    """`epoch_micros_text(millis * 1000)` (Kong's `started_at`), its fraction from a table of the 1,000 millisecond
    suffixes instead of formatting six digits per event (~0.2 us of a Kong entry's ~7 us of Python)."""
    if _out_of_range(millis * 1000):
        return None
    seconds, fraction = divmod(millis, 1000)
    return (_SECOND_TEXT.get(seconds) or _new_second_text(seconds)) + _MILLI_SUFFIX[fraction]


def _out_of_range(micros: int) -> bool:
    """Before 2020 or past the accepted future (refreshed once a second). One call per event: ~30 ns of a Kong
    entry's ~16 us, measured against it written into both writers (the duplicate it was)."""
    if micros < _EARLIEST_MICROS:
        return True
    if monotonic() - _LATEST[2] >= 1.0:
        _latest_accepted()
    return micros > _LATEST[3]


def _new_second_text(seconds: int) -> str:
    """A whole second's text, kept (the cache's miss path: the hits above make no call)."""
    if len(_SECOND_TEXT) >= 4096:  # times far apart (a backfill): a bounded cache
        _SECOND_TEXT.clear()
    text = _SECOND_TEXT[seconds] = (_EPOCH + timedelta(seconds=seconds)).isoformat()[:-6]
    return text


_SECOND_TEXT: dict[int, str] = {}  # whole seconds since the epoch -> "2026-12-05T11:05:48"
# a whole second's millisecond as pydantic writes it after the second: "Z" for none, else ".719000Z"
_MILLI_SUFFIX = ("Z", *(f".{ms * 1000:06d}Z" for ms in range(1, 1000)))
# Epoch milliseconds up to 2**33 s (year 2242) as a float of seconds (what `coerce.epoch_to_datetime` divides them
# into) round to the exact millisecond; above that the float's spacing passes a microsecond.
EXACT_EPOCH_MS_LIMIT = 2**33 * 1000


def plain_float(value: Any) -> float | None:
    """A non-negative JSON number as the float pydantic keeps and writes the same way orjson does; None otherwise
    (bool, negative, non-finite, exponent forms: the per-entry path reads those)."""
    kind = type(value)
    if kind is int:
        if 0 <= value < 10**15:
            return float(value)
        return None
    if kind is float and (value == 0 or 1e-4 <= value < 1e15):
        return value
    return None


def token_count(value: Any) -> bool:
    """A count the contract takes as it is: an int (not bool), 0..MAX_TOKENS."""
    return type(value) is int and 0 <= value <= MAX_TOKENS


def plain_usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    """The usage of a call with no cache or reasoning parts, in model order."""
    return {"input_tokens": input_tokens, "cached_input_tokens": 0, "cache_write_tokens": 0,
            "cache_write_1h_tokens": 0, "output_tokens": output_tokens, "reasoning_tokens": 0}
