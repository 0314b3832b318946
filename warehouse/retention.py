"""Retention of raw priced events (`Settings.raw_retention_days`) as a TTL on `priced_events` (and a prune of
the dedupe keys of expired events); the rollups have none, so dashboards keep their history after raw rows expire.
Reservation holds (`budget_holds`) get a TTL too (HOLD_DAYS, at most the raw days). Applied on every writer open,
and only changed when the configured days differ from the table's TTL (so reopening never re-materializes it)."""

from __future__ import annotations

import re
from typing import Any

from warehouse.backends import WarehouseError

# Reservation holds (`budget_holds`, migration 0015) are read back only by the budget rebuild after a broker loss,
# for the budgets' current periods: the longest is a rolling:90d window (streams/budgets/model.py ROLLING_MAX_HOURS),
# plus a day for a calendar period's zone and the expired-hold grace. Never longer than the raw events: a hold whose
# priced event the raw TTL dropped would look as if its usage were lost and be held again.
HOLD_DAYS = 92
_HOLD_TTL_DAYS = re.compile(r"TTL\s+toDateTime\(created_at\)\s*\+\s*toIntervalDay\((\d+)\)")
# ts + days must stay inside ClickHouse's DateTime range (ends 2106-02-07), or the TTL wraps and drops everything.
MAX_DAYS = 20000
_TTL_DAYS = re.compile(r"TTL\s+toDateTime\(ts\)\s*\+\s*toIntervalDay\((\d+)\)")


def _ttl_days(backend: Any, table: str, pattern: re.Pattern[str]) -> int | None:
    rows = backend.query_arrow(
        f"SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = '{table}'"
    ).to_pylist()
    if not rows:
        raise WarehouseError(f"{table} does not exist: apply the migrations first")
    match = pattern.search(rows[0]["engine_full"])
    return int(match[1]) if match else None


def current_retention_days(backend: Any) -> int | None:
    return _ttl_days(backend, "priced_events", _TTL_DAYS)


def apply_retention(backend: Any, days: int) -> bool:
    """Make the raw table keep `days` days of events by event time; returns True when the TTL changed."""
    days = int(days)
    if not 1 <= days <= MAX_DAYS:
        raise WarehouseError(f"TOKENMETER_RAW_RETENTION_DAYS must be between 1 and {MAX_DAYS}, got {days}")
    prune_event_ids(backend, days)
    apply_hold_retention(backend, min(days, HOLD_DAYS))
    if current_retention_days(backend) == days:
        return False
    backend.command(f"ALTER TABLE priced_events MODIFY TTL toDateTime(ts) + INTERVAL {days} DAY")
    return True


def apply_hold_retention(backend: Any, days: int) -> bool:
    """Keep `budget_holds` rows `days` days after the hold's admission (see HOLD_DAYS); True when it changed."""
    if _ttl_days(backend, "budget_holds", _HOLD_TTL_DAYS) == days:
        return False
    backend.command(f"ALTER TABLE budget_holds MODIFY TTL toDateTime(created_at) + INTERVAL {int(days)} DAY")
    return True


# The dedupe keys and call keys have no TTL (EmbeddedRocksDB has none): pruned here, at every writer open and by a
# running loader every PRUNE_EVERY_SECONDS (warehouse/loader.py). Each table's expired keys are counted first (one
# scan) and deleted only when there are some (a mutation otherwise rewrites nothing but costs its scan again).
KEY_TABLES = ("priced_event_ids", "call_keys", "cross_source_copies")


def prune_event_ids(backend: Any, days: int) -> dict[str, int]:
    """Forget the dedupe keys (migration 0009) of events older than the horizon: their raw rows have expired, and
    the loader refuses (dead-letters) such events anyway, so the key can no longer stop anything. Keeping them
    would only cost disk (and the loader's in-process filter of them, warehouse/stored_ids.py). The call keys of
    cross-source dedup (migration 0013) and the kept rows of copies not counted (migration 0018: an expired call can
    no longer be re-decided) go for the same reason. Returns the keys deleted per table."""
    horizon = f"now64(3) - INTERVAL {int(days)} DAY"
    deleted = {}
    for table in KEY_TABLES:
        rows = backend.query_arrow(f"SELECT count() AS n FROM {table} WHERE ts < {horizon}").to_pylist()
        deleted[table] = int(rows[0]["n"]) if rows else 0
        if deleted[table]:
            backend.command(f"ALTER TABLE {table} DELETE WHERE ts < {horizon}")
    return deleted
