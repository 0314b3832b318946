"""The dead-letter record: one shape and one builder for every stage (collectors, worker, loader, alerts,
anomalies).

A dead letter must always be deliverable, whatever it carries: the payload that could not be handled may be
5 MB of garbage, a 300-deep nested array orjson refuses to encode, or bytes that are not UTF-8. So the builder
keeps the payload only up to `MAX_PAYLOAD_CHARS` characters of its text, and always records the original
size in bytes and its SHA-256, so an operator can match the letter to the record in the source topic or
log. An encoded letter is at most a few tens of KB, far under Kafka's 1 MB default message limit.

Credentials are redacted from what is kept (tokenmeter.redaction): gateways log the request's headers, so a
record we cannot read may carry an end user's `Authorization` / `apikey` / `cookie`. `payload_bytes` and
`payload_sha256` stay those of the original (to find it in the source; a hash reveals nothing) and
`payload_redacted` says how many values were replaced. The reason is scrubbed too (exception texts quote input).

Shape (JSON): {reason, stage, payload, payload_bytes, payload_sha256, payload_truncated, payload_redacted, at,
...context} where context is where the input came from (topic/partition/offset for a Kafka record; file/line, peer ...).
"""

from __future__ import annotations

import hashlib
import reprlib
from datetime import datetime, timezone
from typing import Any

import orjson

from tokenmeter import topics
from tokenmeter.redaction import redact_text, redact_value

MAX_PAYLOAD_CHARS = 16_384  # enough to read a bad event; small enough that any letter fits a Kafka message
MAX_REASON_CHARS = 2_000  # exception texts can quote the whole input
MAX_CONTEXT_CHARS = 1_000  # per context value
# The Kafka header `tokenmeter deadletters replay` puts on a record it re-sends ("tokenmeter.deadletter:P:O", the
# letter's own place); a stage that letters such a record again copies it into the letter as `replayed_from`.
REPLAYED_FROM_HEADER = "tokenmeter-replayed-from"
REPLAYED_FROM_CHARS = 200
HEX_PREFIX = "hex:"  # a binary record's payload (`binary_dead_letter`): "hex:" + the hex of its bytes

_deep_repr = reprlib.Repr()
_deep_repr.maxlevel = 20
_deep_repr.maxstring = _deep_repr.maxother = 200
_deep_repr.maxlist = _deep_repr.maxdict = _deep_repr.maxtuple = 50


def payload_bytes(payload: Any) -> bytes:
    """The payload as bytes: raw bytes as they came, text as UTF-8, anything else as its JSON (or, when it
    cannot be encoded as JSON at all, e.g. nested deeper than orjson allows, a bounded repr)."""
    if payload is None:
        return b""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(payload, default=str)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return _deep_repr.repr(payload).encode()


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def dead_letter(reason: str, payload: Any, stage: str, **context: Any) -> dict[str, Any]:
    """A dead-letter record that always encodes (see `encode`) and always fits a Kafka message."""
    raw = payload_bytes(payload)
    text = raw.decode("utf-8", "replace")
    truncated = len(text) > MAX_PAYLOAD_CHARS
    # A small JSON value is kept as structure (easier to read and to replay); anything else as its text, cut.
    kept: Any = payload if (isinstance(payload, (dict, list)) and not truncated and _encodes(payload)) \
        else text[:MAX_PAYLOAD_CHARS]
    kept, redacted = _redacted(kept)
    return _letter(reason, stage, kept, raw, truncated, redacted, context)


def binary_dead_letter(reason: str, raw: bytes, stage: str, json_form: Any = None, **context: Any) -> dict[str, Any]:
    """`dead_letter` for a record of bytes that are not text (OTLP protobuf): a letter is JSON, so they are kept as
    HEX_PREFIX + their hex (cut like any payload), while `payload_bytes` and `payload_sha256` are those of the bytes
    themselves, as for every letter (to find the record in its source; `deadletters replay` decodes the hex and
    checks the hash against them). Never a secret in hex: protobuf keeps a string field's bytes as they are, so
    when the record shows a credential, its redacted readable form is kept instead (and, redacted, not replayed):
    `json_form`, the record read as JSON where it could be (OTLP/JSON: a header attribute is named there, which
    the bytes cannot show), else the bytes read as text."""
    if json_form is not None:
        form, redacted = redact_value(json_form)
        if redacted:
            text = payload_bytes(form).decode("utf-8", "replace")
            truncated = len(text) > MAX_PAYLOAD_CHARS
            kept = form if not truncated and isinstance(form, (dict, list)) else text[:MAX_PAYLOAD_CHARS]
            return _letter(reason, stage, kept, raw, truncated, redacted, context)
    text, redacted = redact_text(raw.decode("utf-8", "replace"))
    if not redacted:
        text = HEX_PREFIX + raw.hex()
    truncated = len(text) > MAX_PAYLOAD_CHARS
    return _letter(reason, stage, text[:MAX_PAYLOAD_CHARS], raw, truncated, redacted, context)


def _letter(reason: str, stage: str, kept: Any, raw: bytes, truncated: bool, redacted: int,
            context: dict[str, Any]) -> dict[str, Any]:
    letter: dict[str, Any] = {
        "reason": redact_text(_clip(str(reason), MAX_REASON_CHARS))[0],
        "stage": stage,
        "payload": kept,
        "payload_bytes": len(raw),
        "payload_sha256": hashlib.sha256(raw).hexdigest(),
        "payload_truncated": truncated,
        "payload_redacted": redacted,
    }
    for key, value in context.items():
        letter[key] = _clip(value, MAX_CONTEXT_CHARS) if isinstance(value, str) else value
    letter["at"] = datetime.now(timezone.utc).isoformat()
    return letter


def _redacted(kept: Any) -> tuple[Any, int]:
    """The kept payload without credential values. JSON text that parses is redacted as structure (names
    decide), then re-encoded as text: the letter keeps the form the payload came in."""
    if isinstance(kept, str):
        try:
            parsed = orjson.loads(kept)
        except orjson.JSONDecodeError:
            return redact_text(kept)
        if not isinstance(parsed, (dict, list)):
            return redact_text(kept)
        value, count = redact_value(parsed)
        return (orjson.dumps(value).decode(), count) if count else (kept, 0)
    return redact_value(kept)


def _encodes(payload: Any) -> bool:
    try:
        orjson.dumps(payload, default=str)
        return True
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        return False


SOURCE_CHARS = 200  # a source as stored (warehouse `dead_letters.source`) and shown
EVENT_TOPICS = (topics.USAGE, topics.PRICED)  # their records are usage events, each with its `source`


def letter_source(letter: dict[str, Any] | None) -> str:
    """Who sent what a letter rejected: the collector's dialect, else the letter's own `source`, else the `source`
    of the usage event it carries (a letter of the worker or the loader about one event of a Kafka topic of
    events), else the stage that rejected it (nothing says more: a record that is not JSON). Until walk36 a letter
    of the worker said `worker` here for kong's events: the stage is its own column (`stage`)."""
    letter = letter or {}
    for name in ("dialect", "source"):
        value = letter.get(name)
        if isinstance(value, str) and value.strip():
            return value[:SOURCE_CHARS]
    if letter.get("topic") in EVENT_TOPICS:
        payload = letter.get("payload")
        if isinstance(payload, str) and payload.startswith("{"):  # kept as text: parse it (a cut one will not)
            try:
                payload = orjson.loads(payload)
            except orjson.JSONDecodeError:
                payload = None
        value = payload.get("source") if isinstance(payload, dict) else None
        if isinstance(value, str) and value.strip():
            return value[:SOURCE_CHARS]
    stage = letter.get("stage")
    return stage[:SOURCE_CHARS] if isinstance(stage, str) and stage else "unknown"


def encode(letter: dict[str, Any]) -> bytes:
    """JSON bytes of a letter built by `dead_letter`; never raises (values orjson cannot encode become text)."""
    try:
        return orjson.dumps(letter, default=str)
    except (TypeError, orjson.JSONEncodeError, RecursionError):
        safe = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else _deep_repr.repr(v))
                for k, v in letter.items()}
        return orjson.dumps(safe)
