"""Acknowledge / mute records on `tokenmeter.anomaly-acks` (contract in tokenmeter/records.py).

The dashboard publishes them (`publish_ack_sync` from a Dash callback); the anomaly runner reads the topic and
suppresses *notifications* (never detection) for a muted (kind, scope) until `mute_until`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Mapping

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tokenmeter.kafka_topics import ReadIncomplete, read_to_end, topic_partitions
from tokenmeter.records import RecordError, iso
from tokenmeter.settings import fetch_wait as settings_fetch_wait
from tokenmeter.topics import ANOMALIES, ANOMALY_ACKS

log = logging.getLogger("tokenmeter.anomalies")
ACK_ACTIONS = ("ack", "mute", "unmute")
ACK_FIELDS = ("anomaly_id", "kind", "scope_dim", "scope_value", "action", "by", "note", "mute_until", "at")


def ack_record(**fields: Any) -> dict[str, Any]:
    """Build an ack record, checking the contract; raises RecordError listing every problem."""
    fields.setdefault("note", "")
    fields.setdefault("mute_until", None)
    fields.setdefault("at", datetime.now(timezone.utc))
    problems = [f"missing {name}" for name in ACK_FIELDS if name not in fields]
    extra = set(fields) - set(ACK_FIELDS)
    if extra:
        problems.append(f"unknown fields {sorted(extra)}")
    if fields.get("action") not in ACK_ACTIONS:
        problems.append(f"action must be one of {ACK_ACTIONS}, got {fields.get('action')!r}")
    for name in ("anomaly_id", "kind", "scope_dim"):
        if name in fields and (not isinstance(fields[name], str) or not fields[name]):
            problems.append(f"{name} must be a non-empty string")
    for name in ("at", "mute_until"):
        value = fields.get(name)
        if isinstance(value, datetime):
            fields[name] = iso(value)
        elif value is not None and parse_time(value) is None:
            problems.append(f"{name} must be an RFC 3339 time, got {value!r}")
    if fields.get("action") == "mute" and not fields.get("mute_until"):
        problems.append("a mute needs mute_until")
    if problems:
        raise RecordError("anomaly ack record: " + "; ".join(problems))
    return {name: fields[name] for name in ACK_FIELDS}


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


async def publish_ack(bootstrap: str, record: dict) -> None:
    """Validate and write one ack record (key = anomaly id), waiting for Kafka's acknowledgement."""
    record = ack_record(**record)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()  # inside the try: a broker that is down leaves no unclosed producer behind
        await producer.send_and_wait(ANOMALY_ACKS, key=record["anomaly_id"].encode(), value=orjson.dumps(record))
    finally:
        await producer.stop()


def publish_ack_sync(bootstrap: str, record: dict) -> None:
    """`publish_ack` for synchronous callers (Dash callbacks run in threads without an event loop)."""
    asyncio.run(publish_ack(bootstrap, record))


class MuteTable:
    """Which (kind, scope_dim, scope_value) are muted until when, folded from ack records in topic order.

    A mute applies to the kind and scope of the anomaly it names, so later anomalies of the same kind on the
    same scope stay silent too until `mute_until`; `unmute` lifts it; `ack` only records that someone saw it.
    The newest mute or unmute of a scope (by its `at`) wins, whatever order the records are read in: the topic is
    keyed by anomaly id, so a mute from one anomaly and an unmute from a later one of the same scope sit on
    different partitions, and a restart reads partitions in fetch order (anom24).
    """

    def __init__(self) -> None:
        self._until: dict[tuple[str, str, str], datetime] = {}
        self._decided_at: dict[tuple[str, str, str], datetime] = {}  # `at` of the mute/unmute in force per scope
        self._mute_records: dict[tuple[str, str, str], dict] = {}  # the mute in force per scope: who, on which anomaly
        self.acked: dict[str, dict] = {}
        self.rejected = 0

    def apply(self, raw: bytes | dict | None) -> None:
        if raw is None:  # tombstone of a compacted topic: nothing to fold
            return
        try:
            record = orjson.loads(raw) if isinstance(raw, (bytes, str)) else raw
            key = (str(record["kind"]), str(record["scope_dim"]), str(record.get("scope_value") or ""))
            action = record["action"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.rejected += 1  # a bad ack must not stop the runner; counted and skipped
            return
        until = parse_time(record.get("mute_until")) if action == "mute" else None
        if action == "mute" and until is None:
            self.rejected += 1
            return
        if action in ("mute", "unmute"):
            at = parse_time(record.get("at")) or datetime.min.replace(tzinfo=timezone.utc)
            if at < self._decided_at.get(key, at):
                return  # an older decision read after a newer one (another partition): the newer one stands
            self._decided_at[key] = at
            if until is None:
                self._until.pop(key, None)
                self._mute_records.pop(key, None)
            else:
                self._until[key] = until
                self._mute_records[key] = record
        elif action == "ack":
            self.acked[str(record.get("anomaly_id"))] = record
        else:
            self.rejected += 1

    def muted(self, kind: str, scope_dim: str, scope_value: str, at: datetime) -> bool:
        until = self._until.get((kind, scope_dim, scope_value))
        return until is not None and at < until

    def to_json(self) -> dict[str, str]:
        return {"|".join(k): iso(v) for k, v in self._until.items()}

    def in_force(self, now: datetime) -> list[tuple[str, str, str, datetime, dict]]:
        """(kind, scope_dim, scope_value, until, the mute record: `by`, `anomaly_id`) of every mute not ended at `now`,
        sorted: what `anomalies mutes` lists, with who muted and the anomaly an unmute can name (walk36)."""
        return [(*key, until, self._mute_records.get(key, {})) for key, until in sorted(self._until.items())
                if until > now]


async def follow_acks(bootstrap: str, consumer: AIOKafkaConsumer, table: MuteTable, timeout: float = 15.0) -> None:
    """Assign `consumer` (started, no group) to the ack topic and fold it into `table` up to its end. The end is
    each partition's end as the read starts (`read_to_end`). The consumer stays assigned, so a caller can keep
    folding new records with `getmany`."""
    tps = await topic_partitions(bootstrap, ANOMALY_ACKS)
    try:
        await read_to_end(consumer, tps, lambda record: table.apply(record.value), timeout=timeout)
    except ReadIncomplete as exc:
        log.warning("%s; mutes may apply late", exc)


async def read_mutes(bootstrap: str, timeout: float = 15.0, *,
                     fetch_wait: Mapping[str, int] | None = None) -> MuteTable:
    """The current mutes and acks, read once from the topic (for tools and tests; `fetch_wait`: the caller's
    `Settings.fetch_wait`, else the environment's)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
    try:
        await consumer.start()  # inside: stopped (no "Unclosed AIOKafkaConsumer") when no broker answers
        table = MuteTable()
        await follow_acks(bootstrap, consumer, table, timeout)
        return table
    finally:
        await consumer.stop()


async def find_anomaly(bootstrap: str, anomaly_id: str, timeout: float = 10.0, *,
                       fetch_wait: Mapping[str, int] | None = None) -> dict[str, Any] | None:
    """The latest record of anomaly `anomaly_id` on tokenmeter.anomalies (keyed by id), None when the topic holds
    none (a typo, or one older than the topic's retention). Raises ReadIncomplete past `timeout`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **(fetch_wait or settings_fetch_wait()))
    wanted, found = anomaly_id.encode(), []

    def keep(record: Any) -> None:
        if record.key == wanted and record.value:
            found.append(record.value)

    try:
        await consumer.start()
        await read_to_end(consumer, await topic_partitions(bootstrap, ANOMALIES), keep, timeout=timeout)
    finally:
        await consumer.stop()
    for value in reversed(found):
        try:
            record = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(record, dict):
            return record
    return None
