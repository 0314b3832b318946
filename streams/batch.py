"""Turn a batch of raw Kafka records from `tokenmeter.usage` into priced events, dead letters and aggregates.

Pure (no Kafka, no Faust) so the worker, `tokenmeter bench` and the tests share it. A record's value is one
canonical event as a JSON object, or a JSON array of them (a micro-batch: collectors send many events per
Kafka message because the per-message path, not the CPU, limits a Faust worker).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable

import orjson
from pydantic import ValidationError

from streams.enrich import price_event
from streams.metering import MeteringError
from streams.pricing import PriceBook
from tokenmeter import deadletters
from tokenmeter.events import UsageEvent, describe_validation_error, partition_key

MAX_EVENTS_PER_MESSAGE = 500  # keeps priced messages well under Kafka's 1 MB default


@dataclass(frozen=True)
class RawRecord:
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1


@dataclass
class Aggregate:
    """Spend of one attribution scope in one hour bucket, as accumulated by one batch."""

    events: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    unpriced_events: int = 0

    def add(self, other: "Aggregate") -> "Aggregate":
        return Aggregate(
            self.events + other.events,
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
            self.unpriced_events + other.unpriced_events,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": format(self.cost_usd, "f"),
            "unpriced_events": self.unpriced_events,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> "Aggregate":
        if not data:
            return cls()
        return cls(
            data["events"], data["input_tokens"], data["output_tokens"], Decimal(data["cost_usd"]), data["unpriced_events"]
        )


@dataclass
class BatchResult:
    priced: dict[bytes, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    deadletters: list[dict[str, Any]] = field(default_factory=list)
    # (partition, aggregate key) -> Aggregate; keyed by partition so table writes land on the changelog
    # partition of the input they came from (Faust co-partitioning).
    aggregates: dict[tuple[int, str], Aggregate] = field(default_factory=dict)
    # (usage partition, usage offset, priced event JSON) in input order: budgets route amounts by origin.
    origins: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list)
    events_in: int = 0
    priced_count: int = 0
    unpriced_count: int = 0
    assumed_count: int = 0  # events whose usage a collector read under an assumption (usage_assumption)

    def priced_messages(self) -> Iterable[tuple[bytes, bytes]]:
        for key, events in self.priced.items():
            for start in range(0, len(events), MAX_EVENTS_PER_MESSAGE):
                yield key, orjson.dumps(events[start : start + MAX_EVENTS_PER_MESSAGE])


def aggregate_key(event: UsageEvent, key: bytes) -> str:
    """`<partition key>|<UTC hour>`; the caller passes the partition key it already computed for the event."""
    hour = event.ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H")
    return f"{key.decode()}|{hour}"


def dead_letter(reason: str, payload: Any, record: RawRecord, stage: str = "worker") -> dict[str, Any]:
    return deadletters.dead_letter(reason, payload, stage, topic=record.topic, partition=record.partition,
                                   offset=record.offset)


def _decode(record: RawRecord) -> list[Any]:
    if record.value is None:
        raise ValueError("empty message (tombstone) on the usage topic")
    data = orjson.loads(record.value)
    return data if isinstance(data, list) else [data]


def process_batch(records: Iterable[RawRecord], book: PriceBook) -> BatchResult:
    """Validate, meter, price and aggregate; never raises on bad input (it becomes a dead letter)."""
    result = BatchResult()
    now = datetime.now(timezone.utc)
    for record in records:
        try:
            items = _decode(record)
        except (orjson.JSONDecodeError, ValueError) as exc:
            result.deadletters.append(dead_letter(f"not JSON: {exc}", record.value, record))
            continue
        for item in items:
            result.events_in += 1
            try:
                event = UsageEvent.model_validate(item)
                priced = price_event(event, book, priced_at=now)
            except ValidationError as exc:
                result.deadletters.append(dead_letter(f"invalid event: {describe_validation_error(exc)}", item, record))
                continue
            except MeteringError as exc:
                result.deadletters.append(dead_letter(f"cannot meter: {exc}", item, record))
                continue
            except Exception as exc:  # a bug must not stop the stream: keep the record and the reason
                result.deadletters.append(dead_letter(f"internal error: {type(exc).__name__}: {exc}", item, record))
                continue
            key = partition_key(event)
            priced_json = priced.to_json()
            result.priced[key].append(priced_json)
            result.origins.append((record.partition, record.offset, priced_json))
            unpriced = priced.pricing_status == "unpriced"
            result.priced_count += 1
            result.unpriced_count += unpriced
            result.assumed_count += event.usage_assumption is not None
            scope_hour = (record.partition, aggregate_key(event, key))
            delta = Aggregate(1, priced.usage.input_tokens, priced.usage.output_tokens, priced.cost_usd, int(unpriced))
            current = result.aggregates.get(scope_hour)
            result.aggregates[scope_hour] = current.add(delta) if current else delta
    return result
