"""Micro-batch framing on the wire: one Kafka message value holds a JSON array of events (or one object).

Collectors frame canonical events into `tokenmeter.usage`, the worker frames priced events into
`tokenmeter.priced`; both cut at `MAX_EVENTS_PER_MESSAGE` events or about `MAX_MESSAGE_BYTES`, so a message stays
under Kafka's default 1 MB limit whatever the events carry, and the reader's cost is per message, not per event.
A reader refuses a message of more than `MAX_EVENTS_PER_RECORD` events as a whole (its dead letters alone could
flood the topic).
"""

from __future__ import annotations

from typing import Iterable, Iterator

MAX_EVENTS_PER_MESSAGE = 500
MAX_MESSAGE_BYTES = 900_000  # under Kafka's default 1 MB message.max.bytes, leaving room for framing
MAX_EVENTS_PER_RECORD = 10_000

# Patterns over a micro-batch's bytes as orjson writes them, for the readers that certify a message read by polars
# against its bytes (the worker's streams/columnar/frames.py, the loader's warehouse/loader_frames.py). Byte classes,
# not \s or \d: the message is matched as text, where those are Unicode classes. Each is its own pass: one
# alternation of them scanned 5x slower.
WHITESPACE_BEFORE_COLON = r"[ \t\n\r]:"
FRACTIONAL_TOKENS = r'_tokens":-?[0-9]+[.eE]'  # a token count written with a fraction or an exponent
# A tags object as orjson writes a map of strings to strings. In a message without a backslash `"` always delimits a
# string (a brace or colon inside one is text), so a match is a whole object, never part of a larger one; a tags
# object of any other shape (nested, a number, whitespace) is not matched.
_TAG_PAIR = '"[^"]*":"[^"]*"'
TAGS_OBJECT = rf'"tags":\{{(?:{_TAG_PAIR}(?:,{_TAG_PAIR})*)?\}}'
TAGS_PREFIX = len('"tags":')
TAG_KEY = '"[^"]*":"'  # a key in a matched tags object (a value is always followed by `,` or `}`)


def frame(encoded_events: Iterable[bytes], max_events: int = MAX_EVENTS_PER_MESSAGE,
          max_bytes: int = MAX_MESSAGE_BYTES) -> Iterator[bytes]:
    """JSON arrays of the already-encoded events, in order, each of at most `max_events` events and at most
    `max_bytes` bytes (an event larger than that on its own is a message of its own)."""
    chunk: list[bytes] = []
    size = 2
    for encoded in encoded_events:
        if chunk and (len(chunk) >= max_events or size + len(encoded) + 1 > max_bytes):
            yield b"[" + b",".join(chunk) + b"]"
            chunk, size = [], 2
        chunk.append(encoded)
        size += len(encoded) + 1
    if chunk:
        yield b"[" + b",".join(chunk) + b"]"


def unframe(decoded: object) -> list:
    """The events of a decoded message value: an array's items, or the single object; ValueError past the cap."""
    if isinstance(decoded, list):
        if len(decoded) > MAX_EVENTS_PER_RECORD:
            raise ValueError(f"too many events in one message: {len(decoded)}, at most {MAX_EVENTS_PER_RECORD}")
        return decoded
    return [decoded]
