"""Decode a batch of Kafka records into one flat list of event items (orjson per message).

A record is one canonical event (a JSON object) or a micro-batch (a JSON array of them). Records that are not
JSON, or are tombstones, become dead letters at once, with exactly the reasons of `streams.batch`. Each dead
letter remembers how many items came before it, so the final result keeps today's order of dead letters. A
micro-batch of more than `MAX_EVENTS_PER_RECORD` events is one dead letter, as in `streams.batch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, Iterable

import orjson

from streams.batch import MAX_EVENTS_PER_RECORD, RawRecord, dead_letter


@dataclass
class Decoded:
    items: list[Any] = field(default_factory=list)  # every event item of the batch, in input order
    record_of: list[int] = field(default_factory=list)  # for each item: index into `records`
    records: list[RawRecord] = field(default_factory=list)
    # (number of items decoded before this letter, letter): record-level dead letters in input order
    letters: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    first_item: list[int] = field(default_factory=list)  # for each record: the index of its first item


def decode_records(records: Iterable[RawRecord], read: dict[int, int] | None = None) -> Decoded:
    """`read`: records already decoded into a frame (frames.scan), record index -> item count; their items are
    None here (placeholders) until the dict path needs one (`item_of`)."""
    decoded = Decoded()
    items = decoded.items
    record_of = decoded.record_of
    first_item = decoded.first_item
    read = read or {}
    for index, record in enumerate(records):
        decoded.records.append(record)
        first_item.append(len(items))
        count = read.get(index)
        if count is not None:
            items.extend(repeat(None, count))
            record_of.extend(repeat(index, count))
            continue
        if record.value is None:
            reason = "empty message (tombstone) on the usage topic"
            decoded.letters.append((len(items), dead_letter(reason, record.value, record)))
            continue
        try:
            data = orjson.loads(record.value)
        except orjson.JSONDecodeError as exc:
            decoded.letters.append((len(items), dead_letter(f"not JSON: {exc}", record.value, record)))
            continue
        if isinstance(data, list) and len(data) > MAX_EVENTS_PER_RECORD:
            reason = f"too many events in one message: {len(data)}, at most {MAX_EVENTS_PER_RECORD}"
            decoded.letters.append((len(items), dead_letter(reason, record.value, record)))
            continue
        if isinstance(data, list):
            items.extend(data)
            record_of.extend([index] * len(data))
        else:
            items.append(data)
            record_of.append(index)
    return decoded


def item_of(record: RawRecord, position: int, cache: dict[int, list]) -> Any:
    """The `position`-th item of a record read into a frame, as orjson decodes it (once per record)."""
    found = cache.get(id(record))
    if found is None:
        found = cache[id(record)] = orjson.loads(record.value)
    return found[position]


__all__ = ["Decoded", "decode_records", "item_of"]
