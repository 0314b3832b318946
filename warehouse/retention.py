"""Retention of raw priced events (`Settings.raw_retention_days`) as a TTL on `priced_events` (and a prune of
the dedupe keys of expired events); the rollups have none, so dashboards keep their history after raw rows expire. Applied on every writer open, and only
changed when the configured days differ from the table's TTL (so reopening never re-materializes it)."""

from __future__ import annotations

import re
from typing import Any

from warehouse.backends import WarehouseError

# ts + days must stay inside ClickHouse's DateTime range (ends 2106-02-07), or the TTL wraps and drops everything.
MAX_DAYS = 20000
_TTL_DAYS = re.compile(r"TTL\s+toDateTime\(ts\)\s*\+\s*toIntervalDay\((\d+)\)")


def current_retention_days(backend: Any) -> int | None:
    rows = backend.query_arrow(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'priced_events'"
    ).to_pylist()
    if not rows:
        raise WarehouseError("priced_events does not exist: apply the migrations first")
    match = _TTL_DAYS.search(rows[0]["engine_full"])
    return int(match[1]) if match else None


def apply_retention(backend: Any, days: int) -> bool:
    """Make the raw table keep `days` days of events by event time; returns True when the TTL changed."""
    days = int(days)
    if not 1 <= days <= MAX_DAYS:
        raise WarehouseError(f"TOKENMETER_RAW_RETENTION_DAYS must be between 1 and {MAX_DAYS}, got {days}")
    prune_event_ids(backend, days)
    if current_retention_days(backend) == days:
        return False
    backend.command(f"ALTER TABLE priced_events MODIFY TTL toDateTime(ts) + INTERVAL {days} DAY")
    return True


def prune_event_ids(backend: Any, days: int) -> None:
    """Forget the dedupe keys (migration 0009) of events older than the horizon: their raw rows have expired, and
    the loader refuses (dead-letters) such events anyway, so the key can no longer stop anything. Keeping them
    would only cost disk; done on every writer open."""
    backend.command(
        f"ALTER TABLE priced_event_ids DELETE WHERE ts < now64(3) - INTERVAL {int(days)} DAY"
    )
    # the call keys of cross-source dedup (migration 0013), for the same reason
    backend.command(f"ALTER TABLE call_keys DELETE WHERE ts < now64(3) - INTERVAL {int(days)} DAY")
    # and the kept rows of copies not counted (migration 0018): an expired call can no longer be re-decided
    backend.command(f"ALTER TABLE cross_source_copies DELETE WHERE ts < now64(3) - INTERVAL {int(days)} DAY")
