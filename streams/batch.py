"""Turn a batch of raw Kafka records from `tokenmeter.usage` into priced events and dead letters.

Pure (no Kafka, no Faust) so the worker, `tokenmeter bench` and the tests share it. A record's value is one
canonical event as a JSON object, or a JSON array of them (a micro-batch: collectors send many events per
Kafka message because the per-message path, not the CPU, limits a Faust worker).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

import orjson
from pydantic import ValidationError

from streams.enrich import price_event
from streams.metering import MeteringError
from streams.pricing import PriceBook
from tokenmeter import deadletters, microbatch
from tokenmeter.priced_wire import ARROW
from tokenmeter.microbatch import MAX_EVENTS_PER_MESSAGE, MAX_EVENTS_PER_RECORD, MAX_MESSAGE_BYTES  # noqa: F401
from tokenmeter.events import UsageEvent, describe_validation_error, partition_key
from tokenmeter.stored_money import too_much_money_reason, unstorable_money

# Priced messages are framed like the usage topic's (tokenmeter.microbatch); a larger incoming micro-batch is one
# dead letter.
MAX_PRICED_EVENT_BYTES = 256 * 1024  # one priced event larger than this becomes a dead letter (it could not be sent)
# Priced messages are grouped by key within segments of this many events of the batch, in input order, not across
# the whole batch: a backfill's batch spans days, and one key's whole span written before another key's same span
# made the anomaly detector's history late (issue #17). A segment keeps the messages full.
PRICED_SEGMENT_EVENTS = 5000


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    replayed_from: str = ""  # the letter a `deadletters replay` re-sent it from (`replayed_from(headers)`), or ""


def replayed_from(headers: Any) -> str:
    """The replay mark of a Kafka record's headers (aiokafka's (key, bytes) pairs, or a mapping), as text of at
    most REPLAYED_FROM_CHARS characters; "" when it has none."""
    if not headers:
        return ""
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for key, value in pairs:
        if key == deadletters.REPLAYED_FROM_HEADER and isinstance(value, (bytes, str)):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
            return text[:deadletters.REPLAYED_FROM_CHARS]
    return ""


@dataclass
class BatchResult:
    # partition key -> priced events, each already encoded as JSON (its size decides the message it goes into)
    priced: dict[bytes, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    # (usage partition, usage offset, priced event JSON) in input order: budgets route amounts by origin.
    origins: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    events_in: int = 0
    priced_count: int = 0
    unpriced_count: int = 0
    assumed_count: int = 0  # events whose usage a collector read under an assumption (usage_assumption)
    keys_in_order: list[bytes] = field(default_factory=list)  # the key of every priced event, in input order
    # Arrow workers' mixed batches (streams/columnar/mixed_arrow.py): where each priced event's Arrow row comes from
    arrow_source: Any = None

    def add_counts(self, other: "BatchResult") -> None:
        """Add `other`'s counters and dead letters to this result (a batch priced in chunks, streams/batch_overlap.py;
        its priced messages and origins were sent chunk by chunk)."""
        self.events_in += other.events_in
        self.priced_count += other.priced_count
        self.unpriced_count += other.unpriced_count
        self.assumed_count += other.assumed_count
        self.deadletters.extend(other.deadletters)

    def priced_messages(self) -> Iterable[tuple[bytes, bytes]]:
        """(key, JSON array) messages of at most MAX_EVENTS_PER_MESSAGE events and about MAX_MESSAGE_BYTES, grouped
        by key within each PRICED_SEGMENT_EVENTS of the input (so a key's order, and the input's order across keys
        up to a segment, are kept)."""
        order = self.keys_in_order
        if len(order) != sum(map(len, self.priced.values())):  # not recorded: group over the whole batch
            order = [key for key, events in self.priced.items() for _ in events]
        taken = dict.fromkeys(self.priced, 0)
        for start in range(0, len(order), PRICED_SEGMENT_EVENTS):
            # Counter counts in C and keeps the keys in the order they first appear in the segment
            for key, count in Counter(order[start:start + PRICED_SEGMENT_EVENTS]).items():
                first = taken[key]
                taken[key] = first + count
                yield from ((key, value) for value in _frame(self.priced[key][first:first + count]))


    def priced_arrow_messages(self) -> list[tuple[bytes, bytes]]:
        """`priced_messages` as Arrow IPC messages (tokenmeter.priced_arrow), cut where the JSON is: each JSON
        message's events as decoded, so a reader's dicts are the JSON's (the frame path writes them from its columns
        instead: streams/columnar/framed.py)."""
        from tokenmeter import priced_arrow  # pyarrow only in a worker that writes Arrow

        if self.arrow_source is not None:
            messages = self.arrow_source.messages(self)
            if messages is not None:
                return messages
        return [(key, priced_arrow.write_stream(priced_arrow.from_events(orjson.loads(value))))
                for key, value in self.priced_messages()]

    def messages(self, priced_format: str) -> list[tuple[bytes, bytes]]:
        """The priced messages in the topic format the worker writes (`TOKENMETER_PRICED_FORMAT`)."""
        return self.priced_arrow_messages() if priced_format == ARROW else list(self.priced_messages())


def _frame(encoded: list[bytes]) -> Iterable[bytes]:
    """`microbatch.frame(encoded)`, joining each run of MAX_EVENTS_PER_MESSAGE events at once when the whole run
    fits MAX_MESSAGE_BYTES (the common case: frame() would cut exactly there), instead of a size check per event."""
    step = MAX_EVENTS_PER_MESSAGE
    for start in range(0, len(encoded), step):
        chunk = encoded[start:start + step]
        if 2 + sum(map(len, chunk)) + len(chunk) > MAX_MESSAGE_BYTES:  # frame() cuts inside it: let it do the rest
            yield from microbatch.frame(encoded[start:])
            return
        # the brackets go onto the first and last event, so the ~300 KB message is copied once, not three times
        chunk[0] = b"[" + chunk[0]
        chunk[-1] = chunk[-1] + b"]"
        yield b",".join(chunk)


def dead_letter(reason: str, payload: Any, record: RawRecord, stage: str = "worker") -> dict[str, Any]:
    if record.replayed_from:  # a replayed record lettered again: not a new rejection (warehouse/completeness.py)
        return deadletters.dead_letter(reason, payload, stage, topic=record.topic, partition=record.partition,
                                       offset=record.offset, replayed_from=record.replayed_from)
    return deadletters.dead_letter(reason, payload, stage, topic=record.topic, partition=record.partition,
                                   offset=record.offset)


def _decode(record: RawRecord) -> list[Any]:
    if record.value is None:
        raise ValueError("empty message (tombstone) on the usage topic")
    return microbatch.unframe(orjson.loads(record.value))


def process_batch(records: Iterable[RawRecord], book: PriceBook) -> BatchResult:
    """Validate, meter and price; never raises on bad input (it becomes a dead letter, with its reason)."""
    result = BatchResult()
    now = datetime.now(timezone.utc)
    for record in records:
        try:
            items = _decode(record)
        except Exception as exc:  # noqa: BLE001 - orjson's errors, tombstones, anything a hostile value causes
            reason = f"not JSON: {exc}" if isinstance(exc, orjson.JSONDecodeError) else str(exc)
            result.deadletters.append(dead_letter(reason, record.value, record))
            continue
        for item in items:
            result.events_in += 1
            letter = _price_item(item, record, book, now, result)
            if letter is not None:
                result.deadletters.append(letter)
    return result


def _price_item(item: Any, record: RawRecord, book: PriceBook, now: datetime, result: BatchResult) -> dict | None:
    """Price one event into `result`; returns its dead letter instead when it cannot be priced or sent."""
    kept = b"null" if item is None else item  # JSON null: a letter's payload None is a tombstone's, kept as nothing
    try:
        event = UsageEvent.model_validate(item)
        priced = price_event(event, book, priced_at=now)
        # money the warehouse cannot store is never sent: a budget would count what the loader then letters
        unstorable = unstorable_money(priced.cost_usd, priced.cost_breakdown)
        if unstorable is not None:
            return dead_letter(too_much_money_reason(event, *unstorable), kept, record)
        key = partition_key(event)
        priced_json = priced.to_json()
        encoded = orjson.dumps(priced_json)
    except ValidationError as exc:
        return dead_letter(f"invalid event: {describe_validation_error(exc)}", kept, record)
    except MeteringError as exc:
        return dead_letter(f"cannot meter: {exc}", kept, record)
    except Exception as exc:  # noqa: BLE001 - a bug or a hostile value must not stop the stream: keep it, say why
        return dead_letter(f"internal error: {type(exc).__name__}: {exc}", kept, record)
    if len(encoded) > MAX_PRICED_EVENT_BYTES:
        return dead_letter(f"event too large: {len(encoded)} bytes priced, at most {MAX_PRICED_EVENT_BYTES}", kept,
                           record)
    result.priced[key].append(encoded)
    result.keys_in_order.append(key)
    result.origins.append((record.partition, record.offset, priced_json))
    result.priced_count += 1
    result.unpriced_count += priced.pricing_status == "unpriced"
    result.assumed_count += event.usage_assumption is not None
    return None
