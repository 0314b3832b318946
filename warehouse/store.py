"""`Warehouse`: exact, deduplicated inserts of priced events and the spend queries, over any backend.

Dedupe protocol (at-least-once in, exactly-once totals out); event_id alone decides, whatever the ts:
1. the batch is deduplicated by event_id (first copy wins; in Python for dict rows, on columns for an Arrow
   table: `insert_table`);
2. it is split by month of ts into inserts of at most `MAX_MONTHS_PER_INSERT` partitions (ClickHouse refuses
   an INSERT touching more than 100), each going through steps 3-5;
3. its event_ids are looked up in `priced_event_ids` (migration 0009: every stored id, kept by a view on
   priced_events, looked up by key) in ONE query (the ids through a one-column Memory table); ids the in-process
   filter of those keys rules out (warehouse/stored_ids.py, a superset of them) are not sent;
4. the rows whose id was not found are filtered in Arrow and inserted straight into `priced_events` in ONE
   insert (its hours marked in `rollup_insert_pending` around it);
5. the materialized views therefore only ever see new rows, and the rollups stay exact.
Inside one process the sequence runs under a lock. Remaining race: two loaders writing the same event
at the same moment (during a consumer-group rebalance, against a ClickHouse server) can both pass the
anti-join; ReplacingMergeTree then collapses the raw copy on merge but the rollup keeps both. chDB has a
single owner process, so it cannot happen there.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from warehouse import queries
from warehouse.arrow_rows import build_batch
from warehouse.backends import (
    Backend,
    ChdbBackend,
    ClickHouseBackend,
    RemoteBackend,
    WarehouseError,
    WarehouseLocked,
)
from warehouse import dedup, stored_ids
from warehouse.dedup import DUPLICATE_COLUMNS, BatchPlan, SourcePreference, duplicate_record, plan_batch
from warehouse.endpoint import QueryEndpoint, read_endpoint_secret, read_live_endpoint
from warehouse.records_load import TABLES, rows_to_table
from warehouse.retention import apply_retention, prune_event_ids
from warehouse.reprice import (APPLY_BATCH, OWNER_APPLY_BATCH, RepriceBatchFn, RepriceFn, RepriceReport, heal_pending_hours,
                               owner_reprice_fn, plan_and_apply, reprice_named_events)
from warehouse.reprice_apply import apply_staged_copies, replace_priced_rows, stage_priced_rows
from warehouse.reprice_columnar import RepriceColumnsFn, plan_and_apply_columns
from warehouse.schema import COLUMNS, RowError, apply_migrations, rows_to_arrow
from warehouse.writer_lease import WriterLease

log = logging.getLogger(__name__)
# Held by an owner's re-price from its first staged apply call to its finish: one re-price's copies table at a time
# per process (on chDB every Warehouse of the process shares the staging table names).
_REPRICE_SESSIONS = threading.Lock()

TimeArg = datetime | date | str | None
_COLUMN_LIST = ", ".join(f"`{name}`" for name in COLUMNS)
DUPLICATE_SCHEMA = pa.schema([("ts", pa.timestamp("ms", tz="UTC")), ("duplicate_event_id", pa.string()),
                              ("duplicate_source", pa.string()), ("winner_event_id", pa.string()),
                              ("winner_source", pa.string()), ("matched_key", pa.string()), ("provider", pa.string()),
                              ("model", pa.string()), ("duplicate_cost_usd", pa.decimal128(38, 12)),
                              ("replaced", pa.uint8())])
DEMOTION_SCHEMA = pa.schema([("event_id", pa.string()), ("source", pa.string()), ("ts", pa.timestamp("ms", tz="UTC"))])
BRIDGED_SCHEMA = pa.schema([("key", pa.string()), ("event_id", pa.string()), ("source", pa.string()),
                            ("ts", pa.timestamp("ms", tz="UTC"))])


# Months (= partitions of priced_events and of every rollup) one INSERT may touch; ClickHouse's limit is 100.
MAX_MONTHS_PER_INSERT = 50
# The insert into priced_events (and, through it, its materialized views): `optimize_on_insert` (on by default)
# runs each engine's merge (Replacing, Summing) over every inserted block, which here finds nothing to fold: the rows
# are unique by event_id (deduplicated above) and each view's GROUP BY already sums its block. Off, the parts are
# written as the merge would have left them, minus that pass: ~30-35 % of the insert's CPU (issue 14, loader6,
# docs/rounds/benchmarks.md). Readers sum() the rollups and never rely on a folded part, as between any two merges.
PRICED_INSERT_SETTINGS = {"optimize_on_insert": 0}


# The hours of an insert (seconds since the epoch, a bound parameter) as the marker table's DateTime('UTC') values.
_PENDING_HOURS = "arrayMap(x -> toDateTime(x, 'UTC'), {hours:Array(UInt32)})"


def _new_rows_predicate(staging: str) -> str:
    return (
        "event_id NOT IN (SELECT event_id FROM priced_event_ids"
        f" WHERE event_id IN (SELECT event_id FROM {staging}))"
    )


def _by_partition(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The rows in chunks that each touch at most MAX_MONTHS_PER_INSERT months of ts."""
    months: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for row in rows:
        months.setdefault((row["ts"].year, row["ts"].month), []).append(row)
    ordered = sorted(months)
    return [[row for month in ordered[i:i + MAX_MONTHS_PER_INSERT] for row in months[month]]
            for i in range(0, len(ordered), MAX_MONTHS_PER_INSERT)]


class Warehouse:
    """Queries return Polars DataFrames (Arrow underneath); cost columns are exact Decimal(38,12)."""

    def __init__(self, backend: Backend, *, writer: bool = False, staging_table: str = "priced_events_staging",
                 on_close: Any = None, retention_days: int | None = None,
                 source_preference: SourcePreference | None = None):
        self.backend = backend
        # Which copy of a call seen by several sources is counted (warehouse/dedup.py).
        self.source_preference = source_preference or SourcePreference()
        # Events older than the raw retention are not stored: the TTL would drop the raw row while the rollups
        # keep it, so a later redelivery could not be recognized as a duplicate and would count twice.
        self.retention_days = retention_days
        self.writer = writer
        self._staging = staging_table
        self._staging_ready = False
        self._reprice_staging_ready = False
        self._on_close = on_close
        # chDB: the backend's re-entrant lock, shared by every Warehouse of this process on that path.
        self._insert_lock = getattr(backend, "insert_lock", None) or threading.Lock()
        self.last_insert_seconds: float | None = None
        # A writer on a ClickHouse server holds the server's writer lease (warehouse/writer_lease.py); chDB: None.
        self._lease: WriterLease | None = None

    @property
    def kind(self) -> str:
        return self.backend.kind

    # Writing ---------------------------------------------------------------------------------------

    def insert_priced(self, events: list[dict[str, Any]]) -> int:
        """Store PricedEvent JSON dicts (as `PricedEvent.to_json()` makes them); returns rows newly stored.
        Already-stored event_ids are skipped. Raises WarehouseError naming the first invalid event.
        The rows are built column by column (warehouse.arrow_rows) and inserted as one Arrow table."""
        table, _, errors = build_batch(events)
        if errors:
            index, exc = errors[0]
            if not isinstance(exc, RowError):
                raise exc
            item = events[index]
            event_id = item.get("event_id") if isinstance(item, dict) else None
            raise WarehouseError(f"event {index} (event_id={event_id!r}): {exc}") from None
        return self.insert_table(table)

    def insert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Insert rows already validated by `schema.event_to_row`, with the dedupe protocol above."""
        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        unique: dict[Any, dict[str, Any]] = {}
        for row in rows:  # correlated rows by (event_id, source): two sources may both use the response id as id
            unique.setdefault((row["event_id"], row["source"]) if row.get("call_keys") else row["event_id"], row)
        if self.retention_days:
            horizon = datetime.now(timezone.utc) - timedelta(days=self.retention_days)
            kept = {k: r for k, r in unique.items() if r["ts"] >= horizon}
            if len(kept) < len(unique):
                log.warning("%d event(s) older than the raw retention (%d days) skipped", len(unique) - len(kept),
                            self.retention_days)
            unique = kept
        if not unique:
            return 0
        started = time.perf_counter()
        new_rows = 0
        with self._insert_lock:
            self._ensure_staging()
            plan = self._cross_source_plan(list(unique.values()))
            duplicates = self._duplicate_records(plan)
            if plan.revived:  # first: a revived copy must not stay recorded as the loser of the copy it beats
                self._forget_duplicates(plan.revived)
            demoted = [record for record in duplicates if record["replaced"]]
            if demoted:  # the intent first: a crash from here on heals on open (dedup.remove_demoted). It lists
                # the stored losers only: the copies they had beaten (recorded again) left the raw table before.
                self.backend.insert_arrow("cross_source_demotions_pending", pa.Table.from_pylist(
                    [{"event_id": i[0], "source": i[1], "ts": plan.stored_rows[i]["ts"]} for i in plan.demoted],
                    DEMOTION_SCHEMA))
                self._write_duplicates(demoted)
                dedup.capture_demoted(self.backend, f"{self._staging}_demoted")  # their rows, before the winners
            by_id: dict[str, dict[str, Any]] = {}
            for row in plan.keep:  # one event_id kept twice (two sources, no key in common): one row, one duplicate
                first = by_id.setdefault(row["event_id"], row)
                if first is not row:
                    duplicates.append(duplicate_record(row, first["event_id"], first["source"], "event_id"))
            keep = list(by_id.values())
            forced = self._taking_over_an_id(plan, keep, {r["duplicate_event_id"] for r in demoted})
            for chunk in _by_partition([row for row in keep if row["event_id"] not in forced]):
                new_rows += self._insert_new(rows_to_arrow(chunk))
            for chunk in _by_partition([row for row in keep if row["event_id"] in forced]):
                new_rows += self._insert_new(rows_to_arrow(chunk), anti_join=False)
            if plan.key_owners:  # after the winners: a crash in between finds the same on redelivery
                self.backend.insert_arrow("call_keys", pa.Table.from_pylist(
                    [{"key": key, "event_id": owner[0], "source": owner[1], "ts": ts}
                     for key, (owner, ts) in plan.key_owners.items()], BRIDGED_SCHEMA))
            others = [record for record in duplicates if not record["replaced"]]
            if others:
                self._keep_copies([plan.rows[(r["duplicate_event_id"], r["duplicate_source"])] for r in others
                                   if r["matched_key"] != "event_id"
                                   and (r["duplicate_event_id"], r["duplicate_source"]) in plan.rows])
                self._write_duplicates(others)
                log.info("%d event(s) already counted from another source (cross-source duplicates)", len(others))
            if demoted:
                dedup.remove_demoted(self.backend, f"{self._staging}_demoted", captured=True)
                log.info("%d stored event(s) replaced by a preferred copy of the same call", len(demoted))
        self.last_insert_seconds = time.perf_counter() - started
        return new_rows

    def insert_table(self, table: pa.Table) -> int:
        """Insert a `priced_events` Arrow table (schema.ARROW_SCHEMA, e.g. from `arrow_rows.build_batch`) with the
        dedupe protocol above, without a Python object per row: first copy of an event_id wins, events older than
        the raw retention are skipped, months are split as in `insert_rows`. A table holding rows with call keys
        (cross-source dedup) takes `insert_rows`, whose split works on dict rows."""
        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        if table.num_rows == 0:
            return 0
        if pc.any(pc.greater(pc.list_value_length(table.column("call_keys")), 0)).as_py():
            return self.insert_rows(table.to_pylist())
        frame = pl.from_arrow(table.select(["event_id", "ts"]))
        keep = frame.select(pl.col("event_id").is_first_distinct()).to_series()
        if self.retention_days:
            horizon = datetime.now(timezone.utc) - timedelta(days=self.retention_days)
            young = frame.select(pl.col("ts") >= horizon).to_series()
            expired = int((keep & ~young).sum())
            if expired:
                log.warning("%d event(s) older than the raw retention (%d days) skipped", expired,
                            self.retention_days)
            keep = keep & young
        if not keep.all():
            table = table.filter(keep.to_arrow())
        if table.num_rows == 0:
            return 0
        started = time.perf_counter()
        new_rows = 0
        months = pc.add(pc.multiply(pc.year(table.column("ts")), 12), pc.month(table.column("ts")))
        distinct = sorted(pc.unique(months).to_pylist())
        with self._insert_lock:
            self._ensure_staging()
            if len(distinct) <= MAX_MONTHS_PER_INSERT:
                new_rows += self._insert_new(table)
            else:
                for i in range(0, len(distinct), MAX_MONTHS_PER_INSERT):
                    chunk = pa.array(distinct[i:i + MAX_MONTHS_PER_INSERT], months.type)
                    new_rows += self._insert_new(table.filter(pc.is_in(months, value_set=chunk)))
        self.last_insert_seconds = time.perf_counter() - started
        return new_rows

    def prune_expired_keys(self) -> dict[str, int]:
        """A running writer's prune of the keys past the raw retention (warehouse/retention.py, otherwise done only
        at open): the keys deleted per table. When dedupe keys went, the in-process filter of them is built again
        from those left, under the insert lock (it only ever grows otherwise: a pruned key stays in it)."""
        if not self.retention_days:
            return {}
        with self._insert_lock:
            deleted = prune_event_ids(self.backend, self.retention_days)
            if deleted.get("priced_event_ids") and getattr(self.backend, "stored_id_filter", None) is not None:
                self.backend.stored_id_filter = stored_ids.build(self.backend)
        return deleted

    def load_stored_ids(self) -> int:
        """Build the in-process filter of the dedupe keys now (warehouse/stored_ids.py; otherwise the first insert
        builds it); returns the keys it was built from, 0 for a backend without one."""
        with self._insert_lock:
            id_filter = stored_ids.current(self.backend)
            return id_filter.count if id_filter is not None else 0

    def _with_ids(self, name: str, columns: dict[str, list[str]], sql: str) -> list[dict[str, Any]]:
        """Run `sql` with {ids} standing for a Memory table holding `columns`: ids come from outside and may hold
        any character, so they go through a table, never into the SQL text."""
        table = f"{self._staging}_{name}"
        names = ", ".join(f"{column} String" for column in columns)
        self.backend.command(f"CREATE TABLE IF NOT EXISTS {table} ({names}) ENGINE = Memory")
        self.backend.command(f"TRUNCATE TABLE {table}")
        try:
            self.backend.insert_arrow(table, pa.table({c: pa.array(v, pa.string()) for c, v in columns.items()}))
            return self.backend.query_arrow(sql.format(ids=table)).to_pylist()
        finally:
            self.backend.command(f"TRUNCATE TABLE {table}")

    def _redirects(self, identities: set[tuple[str, str]], pinned: set[tuple[str, str]] | None = None
                   ) -> dict[tuple[str, str], tuple[str, str]]:
        """Recorded loser -> its recorded winner, for `identities` and the winners they lead to; `pinned` gets the
        losers that shared only an event_id with their winner."""
        redirects: dict[tuple[str, str], tuple[str, str]] = {}
        asked: set[tuple[str, str]] = set()
        todo = set(identities)
        for _ in range(8):  # a chain is as long as the times a call's winner was replaced: a few sources at most
            todo -= asked
            if not todo:
                break
            asked |= todo
            found = self._with_ids("ids", {"event_id": [i[0] for i in todo], "source": [i[1] for i in todo]},
                                   "SELECT duplicate_event_id, duplicate_source, winner_event_id, winner_source,"
                                   " matched_key"
                                   " FROM cross_source_duplicates FINAL WHERE (duplicate_event_id, duplicate_source)"
                                   " IN (SELECT event_id, source FROM {ids})")
            todo = set()
            for r in found:
                winner = (r["winner_event_id"], r["winner_source"])
                redirects[(r["duplicate_event_id"], r["duplicate_source"])] = winner
                if pinned is not None and r["matched_key"] == "event_id":
                    pinned.add((r["duplicate_event_id"], r["duplicate_source"]))
                todo.add(winner)
        return redirects

    def _cross_source_plan(self, rows: list[dict[str, Any]]) -> BatchPlan:
        """The batch planned against the stored call keys and recorded losers (warehouse/dedup.py); the caller
        holds the insert lock, so no other insert of this process can store a call's key in between."""
        keys = sorted({key for row in rows for key in row.get("call_keys") or ()})
        if not keys:
            plan = BatchPlan()
            plan.keep = rows
            return plan
        found = self._with_ids("keys", {"key": keys},
                               "SELECT key, event_id, source FROM call_keys WHERE key IN (SELECT key FROM {ids})")
        stored = {r["key"]: (r["event_id"], r["source"]) for r in found}
        correlated = {(row["event_id"], row["source"]) for row in rows if row.get("call_keys")}
        pinned: set[tuple[str, str]] = set()
        redirects = self._redirects(set(stored.values()) | correlated, pinned)
        plan = plan_batch([row for row in rows if row.get("call_keys")], stored, redirects, self.source_preference,
                          pinned)
        plan.keep = [row for row in rows if not row.get("call_keys")] + plan.keep
        plan.stored_rows = self._stored_rows(plan.demoted)
        for identity in plan.demoted:  # the loser's own keys (and copies it had won) now lead to its winner
            row = plan.stored_rows[identity]
            for key in row["call_keys"] or ():
                if key not in plan.key_owners and stored.get(key) != plan.top(identity):
                    plan.key_owners[key] = (plan.top(identity), row["ts"])
        return plan

    def _stored_rows(self, identities: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The stored rows (what a duplicate record needs, and the keys) of events about to be replaced."""
        if not identities:
            return {}
        columns = "event_id, source, ts, provider, model, cost_usd, call_keys"
        ids = {"event_id": [i[0] for i in identities], "source": [i[1] for i in identities]}
        # Their hours first (priced_event_ids holds each id's ts): the raw table is ordered by hour, not by id.
        rows = self._with_ids("ids", ids,
                              f"SELECT {columns} FROM priced_events WHERE toStartOfHour(ts) IN (SELECT toStartOfHour(ts)"
                              " FROM priced_event_ids WHERE event_id IN (SELECT event_id FROM {ids}))"
                              " AND (event_id, source) IN (SELECT event_id, source FROM {ids})")
        found = {(r["event_id"], r["source"]): r for r in rows}
        if len(found) < len(set(identities)):
            rows = self._with_ids("ids", ids, f"SELECT {columns} FROM priced_events"
                                  " WHERE (event_id, source) IN (SELECT event_id, source FROM {ids})")
            found = {(r["event_id"], r["source"]): r for r in rows}
        missing = [i for i in identities if i not in found]
        if missing:
            raise WarehouseError(f"cross-source dedup: stored event {missing[0]} to replace is not in priced_events")
        return found

    def _duplicate_records(self, plan: BatchPlan) -> list[dict[str, Any]]:
        """The `cross_source_duplicates` rows of a plan: its losers, and earlier losers whose winner lost now."""
        records = []
        demoted = set(plan.demoted)
        for loser, (winner, key) in plan.losers.items():
            row = plan.stored_rows[loser] if loser in demoted else plan.rows[loser]
            records.append(duplicate_record(row, winner[0], winner[1], key, replaced=loser in demoted))
        if demoted:  # copies the replaced events had beaten: recorded again with the call's new winner
            earlier = self._with_ids(
                "ids", {"event_id": [i[0] for i in demoted], "source": [i[1] for i in demoted]},
                f"SELECT {', '.join(DUPLICATE_COLUMNS)} FROM cross_source_duplicates FINAL"
                " WHERE (winner_event_id, winner_source) IN (SELECT event_id, source FROM {ids})")
            for record in earlier:
                identity = (record["duplicate_event_id"], record["duplicate_source"])
                if identity in plan.losers or identity in plan.revived:
                    continue
                winner = plan.top((record["winner_event_id"], record["winner_source"]))
                records.append(dict(record, winner_event_id=winner[0], winner_source=winner[1]))
        return records

    def _keep_copies(self, rows: list[dict[str, Any]]) -> None:
        """The full rows of copies not counted (`cross_source_copies`, migration 0018): a later preference may
        count them (`dedup.reapply`). Written before their loser records, so a recorded loser has its row."""
        if rows:
            self.backend.insert_arrow("cross_source_copies", rows_to_arrow(rows))

    def _forget_duplicates(self, identities: set[tuple[str, str]]) -> None:
        """Delete the loser records of copies counted now (revived under a changed preference)."""
        table = f"{self._staging}_ids"
        self.backend.command(f"CREATE TABLE IF NOT EXISTS {table} (event_id String, source String) ENGINE = Memory")
        self.backend.command(f"TRUNCATE TABLE {table}")
        try:
            self.backend.insert_arrow(table, pa.table({"event_id": pa.array([i[0] for i in identities], pa.string()),
                                                       "source": pa.array([i[1] for i in identities], pa.string())}))
            self.backend.command("DELETE FROM cross_source_duplicates WHERE (duplicate_event_id, duplicate_source)"
                                 f" IN (SELECT event_id, source FROM {table})")
        finally:
            self.backend.command(f"TRUNCATE TABLE {table}")

    def _write_duplicates(self, records: list[dict[str, Any]]) -> None:
        self.backend.insert_arrow("cross_source_duplicates", pa.Table.from_pylist(
            [{name: record[name] for name in DUPLICATE_COLUMNS} for record in records], DUPLICATE_SCHEMA))

    def _taking_over_an_id(self, plan: BatchPlan, keep: list[dict[str, Any]], replaced: set[str]) -> set[str]:
        """Event ids of kept rows that a replaced (or already recorded) loser of another source holds in
        priced_event_ids (LiteLLM and the SDK both use the response id as event_id): the anti-join would skip
        them, so they are inserted without it, unless that very (event_id, source) is stored already. `replaced`:
        the ids of this batch's replaced records, the copies the replaced events had beaten included (an SDK event
        replaced by a span earlier, whose id the gateway log now brings: without it the gateway log was skipped and
        the call, its span taken out, counted nowhere)."""
        losers = {identity[0] for identity in plan.losers} | replaced
        candidates = {row["event_id"] for row in keep if row.get("call_keys") and (
            row["event_id"] in losers or (row["event_id"], row["source"]) in plan.revived)}  # a revived copy may
        # have been stored and replaced before: priced_event_ids still holds its id
        if not candidates:
            return set()
        ids = sorted(candidates)
        sources = {row["event_id"]: row["source"] for row in keep if row["event_id"] in candidates}
        present = self._with_ids("event_ids", {"event_id": ids},
                                 "SELECT event_id, source FROM priced_events WHERE event_id IN (SELECT event_id FROM {ids})")
        stored_as_is = {r["event_id"] for r in present if sources.get(r["event_id"]) == r["source"]}
        return candidates - stored_as_is

    def _insert_new(self, table: Any, anti_join: bool = True) -> int:
        """Steps 3-5 of the protocol for rows of at most MAX_MONTHS_PER_INSERT months; the caller holds the lock.
        anti_join=False: rows taking over an event_id a replaced copy held (see _taking_over_an_id).
        `table` holds each event_id once (both callers dedupe first). The anti-join is one lookup of the batch's
        ids in `priced_event_ids` (the ids through a one-column Memory table `<staging>_event_ids`); the rows
        whose id is not found are filtered in Arrow and inserted straight into `priced_events` (issue 14, loader5:
        before, the rows went through a staging Memory table and an anti-join copy into a second one; those two
        copies and the count are gone, tests/warehouse/test_loader_insert_path.py holds both protocols equal)."""
        if pc.count_distinct(table.column("event_id")).as_py() < table.num_rows:  # the old LIMIT 1 BY's safety net
            first = pl.from_arrow(table.select(["event_id"])).select(pl.col("event_id").is_first_distinct())
            table = table.filter(first.to_series().to_arrow())
        id_filter = stored_ids.current(self.backend)
        if anti_join:
            stored = self._stored_ids(table.column("event_id"), id_filter)
            if len(stored):
                table = table.filter(pc.invert(pc.is_in(table.column("event_id"), value_set=stored)))
        new_rows = table.num_rows
        if not new_rows:
            return 0
        if self._lease is not None:
            self._lease.check()
        if id_filter is not None:  # before the INSERT: a failed or killed one leaves a superset, which is safe
            id_filter.add(table.column("event_id"))
        # A kill inside the INSERT can leave raw rows whose materialized-view (rollup) rows were never written,
        # and the replay then skips them (their ids are stored): the soak saw the rollup 2-3 events per team under
        # raw after loader SIGKILLs. So the hours are marked first (0017: a key-value table, cheap to delete from)
        # and unmarked after; a warehouse opened with marked hours rebuilds their rollups from raw
        # (heal_pending_hours).
        # The marker's few hours go as a bound array, not through chDB's Python() table function, whose fixed cost
        # (~3 ms CPU more per insert, loader8) bought nothing for a handful of values.
        hours = {"hours": pc.unique(pc.floor_temporal(table.column("ts"), unit="hour"))
                 .cast(pa.timestamp("s", tz="UTC")).cast(pa.int64()).to_pylist()}
        self.backend.command("INSERT INTO rollup_insert_pending (hour)"
                             f" SELECT arrayJoin({_PENDING_HOURS})", hours)
        try:
            self.backend.insert_arrow("priced_events", table, settings=PRICED_INSERT_SETTINGS)
        finally:  # this INSERT's keys are in the filter, stored or not; any other key write leaves it stale
            if id_filter is not None and self.backend.key_writes == id_filter.key_writes + 1:
                id_filter.key_writes += 1
        self.backend.command(f"DELETE FROM rollup_insert_pending WHERE hour IN {_PENDING_HOURS}", hours)
        return new_rows

    def _stored_ids(self, event_ids: Any, id_filter: stored_ids.StoredIdFilter | None = None) -> pa.Array:
        """The ids among `event_ids` that `priced_event_ids` holds (one key lookup per id). With the in-process
        filter of the keys (warehouse/stored_ids.py) only the ids it cannot rule out are looked up."""
        if id_filter is not None:
            maybe = id_filter.may_hold(event_ids)
            if not maybe.any():
                return pa.array([], pa.string())
            if not maybe.all():
                event_ids = event_ids.filter(pa.array(maybe))
        ids = f"{self._staging}_event_ids"
        self.backend.command(f"TRUNCATE TABLE {ids}")
        try:
            self.backend.insert_arrow(ids, pa.table({"event_id": event_ids}))
            found = self.backend.query_arrow("SELECT event_id FROM priced_event_ids"
                                             f" WHERE event_id IN (SELECT event_id FROM {ids})")
        finally:
            self.backend.command(f"TRUNCATE TABLE {ids}")
        return found.column("event_id").combine_chunks().cast(pa.string())

    def _ensure_staging(self) -> None:
        if not self._staging_ready:
            # Recreated on each open so they always match the current priced_events schema. The loader's insert no
            # longer stages rows (loader5: `_event_ids` only); the two row tables stay for warehouse.bench_load's view
            # costs and the reference protocol of tests/warehouse/test_loader_insert_path.py (empty Memory tables).
            for table in (self._staging, f"{self._staging}_new"):
                self.backend.command(f"DROP TABLE IF EXISTS {table}")
                self.backend.command(f"CREATE TABLE {table} AS priced_events ENGINE = Memory")
            self.backend.command(f"DROP TABLE IF EXISTS {self._staging}_event_ids")
            self.backend.command(f"CREATE TABLE {self._staging}_event_ids (event_id String) ENGINE = Memory")
            self._staging_ready = True

    def insert_records(self, topic: str, rows: list[dict[str, Any]]) -> int:
        """Store rows built by `warehouse.records_load.record_to_row` for a record topic (alerts, deliveries,
        enforcement, anomalies, acks, provider usage). Redelivered copies are folded by the tables' Replacing
        engines and picked on read (latest version), so no dedupe happens here."""
        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        if not rows:
            return 0
        table = rows_to_table(topic, rows)
        with self._insert_lock:
            self.backend.insert_arrow(TABLES[topic][0], table)
        return len(rows)

    def record_price_catalog(self, rows: list[dict[str, Any]]) -> int:
        """Write catalog entry versions to `price_catalog_history` (rows from `price_catalog_rows(book)`), skipping
        those already stored for the same catalog version; returns the rows written."""
        from warehouse.price_history import new_price_rows

        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        with self._insert_lock:
            return new_price_rows(self.backend, rows)

    # Re-pricing (see warehouse.reprice) -------------------------------------------------------------

    def reprice(self, since: TimeArg, until: TimeArg = None, *, reprice_fn: RepriceFn,
                dry_run: bool = False, reprice_batch: RepriceBatchFn | None = None,
                reprice_columns: RepriceColumnsFn | None = None) -> RepriceReport:
        """`_reprice` (below); on a ClickHouse server a handle without the writer lease (`tokenmeter reprice` opens a
        reader) takes it for the re-price's length, or is refused while another writer (the loader) holds it: the
        re-price heals and rewrites hours that writer may be inserting into."""
        if dry_run or self.kind != "clickhouse" or self._lease is not None:
            return self._reprice(since, until, reprice_fn=reprice_fn, dry_run=dry_run, reprice_batch=reprice_batch,
                                 reprice_columns=reprice_columns)
        self._lease = WriterLease(self.backend).acquire()
        try:
            return self._reprice(since, until, reprice_fn=reprice_fn, dry_run=dry_run, reprice_batch=reprice_batch,
                                 reprice_columns=reprice_columns)
        finally:
            lease, self._lease = self._lease, None
            lease.release()

    def _reprice(self, since: TimeArg, until: TimeArg = None, *, reprice_fn: RepriceFn,
                 dry_run: bool = False, reprice_batch: RepriceBatchFn | None = None,
                 reprice_columns: RepriceColumnsFn | None = None) -> RepriceReport:
        """Price the stored events of [since, until) again with `reprice_fn` (the current book) and, unless
        dry_run, replace the changed ones in the raw table and the rollup. Works on a reader too: the changed
        rows then go to the owning process, which applies them under its insert lock. `reprice_batch` (optional)
        prices a day's rows at once (the columnar path), each row exactly as `reprice_fn` would;
        `reprice_columns` (optional, preferred) prices the stored Arrow columns themselves
        (warehouse.reprice_columnar)."""
        start = queries.to_utc(since, "since")
        if start is None:
            raise WarehouseError("since: required (re-pricing all history must be asked for explicitly)")
        end = queries.to_utc(until, "until")
        if end is not None and end <= start:
            raise WarehouseError(f"until ({end.isoformat()}) must be after since ({start.isoformat()})")
        apply_batch = APPLY_BATCH
        if self.backend.writable:
            apply, apply_batch = self.apply_repriced_events, OWNER_APPLY_BATCH
            if not dry_run:
                with self._insert_lock:  # finish a re-price that stopped half-way, so the plan reads clean raw
                    if self._lease is not None:
                        self._lease.check()
                    heal_pending_hours(self.backend)
        else:
            apply = getattr(self.backend, "apply_repriced_events", None)
            if apply is None and not dry_run:
                raise WarehouseError(f"a {self.kind} warehouse handle cannot re-price; open the owner")
        if reprice_columns is None:
            return plan_and_apply(self, start, end, reprice_fn, dry_run, apply, apply_batch, reprice_batch)
        if dry_run or not self.backend.writable:
            return plan_and_apply_columns(self, start, end, reprice_fn, reprice_columns, dry_run, None,
                                          None if self.backend.writable else apply, apply_batch)
        # The owner stages every apply call's new copies and puts them all in at the end (warehouse.reprice_apply):
        # one swap or DELETE of the old copies per re-price instead of a DELETE mutation per call.
        with _REPRICE_SESSIONS:
            self._begin_repriced()
            try:
                return plan_and_apply_columns(self, start, end, reprice_fn, reprice_columns, dry_run,
                                              self.stage_repriced_table, None, apply_batch, self.finish_repriced)
            finally:
                self._end_repriced()

    def apply_repriced_events(self, events: list[dict[str, Any]]) -> int:
        """Replace stored events by re-priced PricedEvent JSON dicts (same event, new price); owner only.
        Returns the rows replaced. Raises WarehouseError if an event is not stored as it is given."""
        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        table, _, errors = build_batch(events)  # column by column (warehouse.arrow_rows), no dict per row
        if errors:
            index, exc = errors[0]
            if not isinstance(exc, RowError):
                raise exc
            raise WarehouseError(f"re-priced event {index}: {exc}") from None
        return self.apply_repriced_table(table)

    def apply_repriced_table(self, table: pa.Table) -> int:
        """`apply_repriced_events` for re-priced rows already built as a `priced_events` Arrow table
        (schema.ARROW_SCHEMA; the columnar re-price builds them from the stored columns); owner only. Checked,
        staged and applied at once (`warehouse.reprice_apply.replace_priced_rows`)."""
        return self._with_staged_rows(table, lambda staging: replace_priced_rows(
            self.backend, staging, f"{staging}_copies", exclusive=self.kind == "chdb"))

    def stage_repriced_table(self, table: pa.Table) -> int:
        """The first half of `apply_repriced_table` inside a re-price (`reprice` with `reprice_columns`, owner): the
        rows are checked against their stored copies and their new copies kept in the re-price's copies table;
        nothing readers see changes until `finish_repriced`. Returns the rows staged."""
        return self._with_staged_rows(table, lambda staging: stage_priced_rows(
            self.backend, staging, f"{staging}_session"))

    def _with_staged_rows(self, table: pa.Table, step: Any) -> int:
        """`step(staging)` under the insert lock with the rows to apply of `table` in the Memory table `staging`
        (owner only; an event_id given twice is applied once, its first row); its result, or 0 without rows."""
        if not self.backend.writable:
            raise WarehouseError("this warehouse handle is read-only (another process owns it)")
        if table.num_rows == 0:
            return 0
        first = pl.from_arrow(table.select(["event_id"])).select(pl.col("event_id").is_first_distinct()).to_series()
        if not first.all():
            table = table.filter(first.to_arrow())
        staging = f"{self._staging}_reprice"
        with self._insert_lock:
            self._ensure_reprice_staging()
            self.backend.command(f"TRUNCATE TABLE {staging}")
            try:
                self.backend.insert_arrow(staging, table)
                return int(step(staging))
            finally:
                self.backend.command(f"TRUNCATE TABLE {staging}")

    def finish_repriced(self) -> int:
        """Every copy `stage_repriced_table` kept, put into priced_events with the rollups corrected
        (`warehouse.reprice_apply.apply_staged_copies`: whole partitions swapped on chDB); returns the rows put in."""
        with self._insert_lock:
            return apply_staged_copies(self.backend, f"{self._staging}_reprice_session", f"{self._staging}_reprice_delta",
                                       exclusive=self.kind == "chdb")

    def _begin_repriced(self) -> None:
        """A re-price's copies table, new (copies a killed re-price staged are never applied; a table of an older
        schema is replaced). The caller holds _REPRICE_SESSIONS: on chDB every Warehouse of the process shares the
        staging names."""
        with self._insert_lock:
            self.backend.command(f"DROP TABLE IF EXISTS {self._staging}_reprice_session")
            self.backend.command(f"CREATE TABLE {self._staging}_reprice_session AS priced_events")

    def _end_repriced(self) -> None:
        with self._insert_lock:  # after a finish (already empty) or a failure between two apply calls
            self.backend.command(f"DROP TABLE IF EXISTS {self._staging}_reprice_session")

    def _ensure_reprice_staging(self) -> None:
        """The apply's tables (the caller holds the insert lock): `<staging>_reprice` (Memory) for one call's rows,
        `_reprice_copies` for a single apply's new copies (`AS priced_events`, so its partitions attach to it)."""
        if self._reprice_staging_ready:
            return
        staging = f"{self._staging}_reprice"
        self.backend.command(f"DROP TABLE IF EXISTS {staging}")
        self.backend.command(f"CREATE TABLE {staging} AS priced_events ENGINE = Memory")
        self.backend.command(f"DROP TABLE IF EXISTS {staging}_copies")  # a crashed run's, maybe of an older schema
        self.backend.command(f"CREATE TABLE {staging}_copies AS priced_events")
        self._reprice_staging_ready = True

    # Reading ---------------------------------------------------------------------------------------

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pl.DataFrame:
        """Run a parameterized SELECT (`{name:Type}` placeholders) and return a DataFrame."""
        return pl.from_arrow(self.backend.query_arrow(sql, params))  # type: ignore[return-value]

    def spend(
        self,
        group_by: list[str],
        since: TimeArg = None,
        until: TimeArg = None,
        filters: dict[str, list[str]] | None = None,
    ) -> pl.DataFrame:
        """Spend per combination of `group_by` dimensions over [since, until). Columns: the dimensions,
        events, unpriced_events, input/output/cached_input/cache_write/reasoning tokens, cost_usd."""
        sql, params = queries.spend_sql(
            list(group_by), queries.to_utc(since, "since"), queries.to_utc(until, "until"), filters
        )
        return self.query(sql, params)

    def cost_lines(
        self,
        group_by: list[str],
        since: TimeArg = None,
        until: TimeArg = None,
        filters: dict[str, list[str]] | None = None,
    ) -> pl.DataFrame:
        """Cost per breakdown line (tokens, request fee, server-side tool fees) per group: the dimensions,
        cost_line, events, requests (tool requests of a fee line's kind), cost_usd."""
        sql, params = queries.cost_lines_sql(
            list(group_by), queries.to_utc(since, "since"), queries.to_utc(until, "until"), filters
        )
        return self.query(sql, params)

    def spend_over_time(
        self,
        bucket: str = "hour",
        group_by: str | None = None,
        since: TimeArg = None,
        until: TimeArg = None,
        filters: dict[str, list[str]] | None = None,
    ) -> pl.DataFrame:
        """Spend per time bucket ("hour" or "day", UTC), optionally split by one dimension."""
        sql, params = queries.spend_over_time_sql(
            bucket, group_by, queries.to_utc(since, "since"), queries.to_utc(until, "until"), filters
        )
        return self.query(sql, params)

    def distinct_values(self, dim: str, since: TimeArg = None, until: TimeArg = None) -> list[str]:
        sql, params = queries.distinct_values_sql(dim, queries.to_utc(since, "since"), queries.to_utc(until, "until"))
        return [str(v) for v in self.backend.query_arrow(sql, params).column("value").to_pylist()]

    def freshness(self) -> dict[str, Any]:
        """{"last_event_ts", "last_loaded_at", "events"}; times are aware UTC datetimes, None when empty."""
        row = self.backend.query_arrow(queries.FRESHNESS_SQL).to_pylist()[0]
        events = int(row["events"])

        def moment(value: datetime | None) -> datetime | None:
            if events == 0 or value is None:
                return None
            return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)

        return {
            "last_event_ts": moment(row["last_event_ts"]),
            "last_loaded_at": moment(row["last_loaded_at"]),
            "events": events,
        }

    def close(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# Opening: one chDB owner per path ---------------------------------------------------------------------


class _OwnedPath:
    """The chDB session this process holds, its query endpoint, and how many Warehouses use it."""

    def __init__(self, backend: ChdbBackend, endpoint: QueryEndpoint | None):
        self.backend = backend
        self.endpoint = endpoint
        self.users = 0


_owned: dict[Path, _OwnedPath] = {}
_owned_lock = threading.Lock()


def _release(path: Path) -> None:
    with _owned_lock:
        owned = _owned.get(path)
        if owned is None:
            return
        owned.users -= 1
        if owned.users > 0:
            return
        del _owned[path]
    if owned.endpoint is not None:
        owned.endpoint.stop()
    owned.backend.close()


def _open_chdb(path: Path, data_dir: Path, serve: bool, retention_days: int, settings: Any = None) -> Warehouse:
    with _owned_lock:
        owned = _owned.get(path)
        if owned is None:
            if _owned:
                other = next(iter(_owned))
                raise WarehouseError(
                    f"this process already has the chDB warehouse {other} open; chDB allows one path per process"
                )
            backend = ChdbBackend(path)
            try:
                apply_migrations(backend)
                apply_retention(backend, retention_days)
                heal_cross_source_demotions(backend)  # a replaced copy whose removal a crash interrupted
                heal_pending_hours(backend)  # a re-price that crashed half-way: rebuild its hours first
                # The endpoint applies re-priced rows sent by readers (`tokenmeter reprice` while the loader runs).
                repricer = Warehouse(backend, writer=True)
                pricing_settings = settings

                def apply_repriced(keys: list[dict[str, str]]) -> int:  # priced here, never by the caller
                    return reprice_named_events(repricer, keys, owner_reprice_fn(pricing_settings))

                endpoint = (
                    QueryEndpoint(backend, data_dir, apply_repriced=apply_repriced if settings is not None else None
                                  ).start()
                    if serve else None
                )
            except Exception:
                backend.close()
                raise
            owned = _owned[path] = _OwnedPath(backend, endpoint)
        owned.users += 1
    return Warehouse(owned.backend, writer=True, on_close=lambda: _release(path), retention_days=retention_days,
                     source_preference=_source_preference(settings))


def open_warehouse(settings: Any, writer: bool = False, *, serve: bool = True, wait_seconds: float = 10.0) -> Warehouse:
    """The warehouse for `settings`: a ClickHouse server if `clickhouse_url` is set; otherwise chDB at
    `settings.warehouse_path`, opened directly (and served to other processes) when no other live process
    owns it, or read through the owner's HTTP endpoint when one does. writer=True refuses to read remotely."""
    if settings.clickhouse_url:
        backend = ClickHouseBackend(settings.clickhouse_url)
        lease = None
        try:
            if writer:
                apply_migrations(backend)
                # One writer per server, before anything heals or writes (warehouse/writer_lease.py); a killed
                # predecessor's lease lapses within LEASE_SECONDS, which the loader's wait covers.
                lease = WriterLease(backend).acquire(wait_seconds)
                apply_retention(backend, getattr(settings, "raw_retention_days", 400))
            staging = f"priced_events_staging_{uuid.uuid4().hex[:12]}"  # per process: its own Memory tables
            warehouse = Warehouse(backend, writer=writer, staging_table=staging,
                                  retention_days=getattr(settings, "raw_retention_days", None),
                                  source_preference=_source_preference(settings))
            warehouse._lease = lease
            warehouse._on_close = lambda: _close_server_handle(warehouse)
            if writer:
                with warehouse._insert_lock:
                    heal_cross_source_demotions(backend)  # a replaced copy whose removal a crash interrupted
                    heal_pending_hours(backend)  # a re-price that crashed half-way: rebuild its hours first
        except BaseException:
            if lease is not None:
                lease.release()
            backend.close()
            raise
        return warehouse

    path = Path(settings.warehouse_path).resolve()
    data_dir = Path(settings.data_dir).resolve()
    if path in _owned:
        return _open_chdb(path, data_dir, serve, getattr(settings, "raw_retention_days", 400), settings)
    deadline = time.monotonic() + wait_seconds
    while True:
        url = read_live_endpoint(data_dir)
        if url is not None:
            if not writer:
                return Warehouse(RemoteBackend(url, secret=read_endpoint_secret(data_dir)))
            # A reader that found no owner opened chDB itself (`tokenmeter report` while the loader starts):
            # it lets go within seconds, so the writer waits for it instead of dying.
            if time.monotonic() > deadline:
                raise WarehouseLocked(
                    f"warehouse {path} is owned by another process (endpoint {url}) for more than "
                    f"{wait_seconds:.0f} s; stop it before starting a writer (the loader must own the warehouse)"
                )
            time.sleep(0.2)
            continue
        try:
            return _open_chdb(path, data_dir, serve, getattr(settings, "raw_retention_days", 400), settings)
        except WarehouseLocked:
            # Locked but not yet advertised: the owner is starting up. Poll for its endpoint file.
            if time.monotonic() > deadline:
                raise WarehouseLocked(
                    f"warehouse {path} is locked by another process that advertises no query endpoint "
                    f"in {data_dir}; is an old tokenmeter process still running?"
                ) from None
            time.sleep(0.1)


def heal_cross_source_demotions(backend: Any) -> int:
    """Finish replacements of stored copies by preferred ones that a crash interrupted (warehouse/dedup.py)."""
    return dedup.remove_demoted(backend)


def _source_preference(settings: Any) -> SourcePreference:
    order = getattr(settings, "dedup_source_preference", None)
    return SourcePreference(order) if order else SourcePreference()


def _close_server_handle(warehouse: Warehouse) -> None:
    lease, warehouse._lease = warehouse._lease, None
    if lease is not None:
        lease.release()
    staging_tables = ([warehouse._staging, *(f"{warehouse._staging}_{name}" for name in ("keys", "ids", "event_ids", "new"))]
                      if warehouse._staging_ready else [])
    if warehouse._reprice_staging_ready:
        staging_tables += [f"{warehouse._staging}_reprice{name}"  # dropped after each apply, unless it was killed
                           for name in ("", "_copies", "_session", "_delta")]
    for table in staging_tables:
        try:
            warehouse.backend.command(f"DROP TABLE IF EXISTS {table}")
        except WarehouseError as exc:
            log.warning("could not drop staging table %s: %s", table, exc)
    warehouse.backend.close()
