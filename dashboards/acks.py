"""Acknowledge / mute an anomaly from the dashboard: one ack record (contract in tokenmeter/records.py) to the
compacted topic `tokenmeter.anomaly-acks`, keyed by anomaly id, waiting for Kafka's acknowledgement.

A small producer of our own, so the dashboard depends on the topic contract only, not on streams/ code.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from tokenmeter.records import RecordError, iso
from tokenmeter.topics import ANOMALY_ACKS

ACK_FIELDS = ("anomaly_id", "kind", "scope_dim", "scope_value", "action", "by", "note", "mute_until", "at")
ACTIONS = ("ack", "mute", "unmute")
MUTE_HOURS = 24  # a mute from the dashboard silences that kind of anomaly on that scope for a day
SEND_TIMEOUT_S = 10.0


def build_ack(anomaly: dict[str, Any], action: str, by: str, note: str = "",
              now: datetime | None = None, mute_hours: int = MUTE_HOURS) -> dict[str, Any]:
    if action not in ACTIONS:
        raise RecordError(f"anomaly ack record: action must be one of {ACTIONS}, got {action!r}")
    now = now or datetime.now(timezone.utc)
    record = {
        "anomaly_id": str(anomaly["id"]), "kind": str(anomaly["kind"]), "scope_dim": str(anomaly["scope_dim"]),
        "scope_value": str(anomaly.get("scope_value") or ""), "action": action, "by": by, "note": note,
        "mute_until": iso(now + timedelta(hours=mute_hours)) if action == "mute" else None, "at": iso(now),
    }
    missing = [name for name in ("anomaly_id", "kind", "scope_dim", "by") if not record[name]]
    if missing:
        raise RecordError(f"anomaly ack record: empty {', '.join(missing)}")
    return {name: record[name] for name in ACK_FIELDS}


async def _send(bootstrap: str, record: dict[str, Any]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", request_timeout_ms=int(SEND_TIMEOUT_S * 1000))
    await asyncio.wait_for(producer.start(), SEND_TIMEOUT_S)
    try:
        await asyncio.wait_for(producer.send_and_wait(
            ANOMALY_ACKS, key=record["anomaly_id"].encode(), value=orjson.dumps(record)), SEND_TIMEOUT_S)
    finally:
        await producer.stop()


def publish_ack(bootstrap: str, record: dict[str, Any]) -> None:
    """Blocking publish for Dash callbacks (they run in server threads without an event loop)."""
    asyncio.run(_send(bootstrap, record))
