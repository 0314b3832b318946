"""The owner's re-price apply in two steps (issue 14, reprice9): `stage_priced_rows` checks each call's re-priced
rows and keeps their new copies in a copies table nobody reads; `apply_staged_copies` then puts every staged copy
into `priced_events` at once and corrects the rollups (steps 2-6 of `warehouse.reprice`'s module doc).

Why two steps: the old copies used to be removed by one lightweight DELETE per apply call, a mutation that rewrites
the row mask of every part holding a touched hour (after merges, the parts of a month span the whole month), so a
10M-event month re-priced in 30 calls mutated 134.5M rows (65.7 s wall, 69.1 CPU-s in reprice8's per-statement run). A month whose every stored
row was re-priced is now swapped in by `ALTER TABLE priced_events REPLACE PARTITION ... FROM <copies>`: atomic per
partition, the parts are linked (nothing written again), the old parts dropped, no mutation. Other partitions get
the copies attached and ONE DELETE of their old copies for the whole re-price.

REPLACE PARTITION replaces whatever the partition holds, so it is used only when the copies are exactly the
partition's stored rows at that moment (same count and same order-free hash sum and xor of (event_id, source, ts)
on both sides, checked under the insert lock), and only on chDB, where every writer of the path is this process and
takes that lock (loader inserts, dedup removals, other applies). On a ClickHouse server another process may insert
into the partition between the check and the swap, so it always attaches and deletes. Materialized views are not
fired by REPLACE or ATTACH PARTITION (the rollups are corrected below, the event ids and call keys are the same).
"""

from __future__ import annotations

import re
from typing import Any

from warehouse.backends import WarehouseError
from warehouse.reprice import _COLUMN_LIST, IDENTITY_COLUMNS, heal_pending_hours
from warehouse.rollups import INSERT_SETTINGS, correction_statements, delete_subtracted, delta_statements, signed_rows

# Above this share of the touched hours' stored rows changing, the apply rebuilds those hours' rollups from raw
# instead of adding deltas (a delta costs an old and a new row per change; a rebuild one row per stored row).
DELTA_SHARE = 0.5
CORRECTION_ROWS = 500_000  # stored rows whose rollups one correction statement recomputes (`_correct_rollups`)
_KEY = "event_id, source, ts"  # one stored copy per key; a re-priced copy keeps it (only prices change)
_PARTITION_ID = re.compile(r"^[0-9A-Za-z_-]+$")  # what `_partition_id` holds (formatted into ALTER ... PARTITION ID)


def _identity_hash() -> str:
    """A 128-bit hash of a row's IDENTITY_COLUMNS: the identity check compares (event_id, ts, hash) against the
    Memory table of the stored copies instead of 27-column tuples against the raw table. Two fast 64-bit hashes
    (xxh3, cityHash64) side by side: sipHash128 cost ~1.8 CPU-s per 1M rows and side, these ~0.2 (reprice7). The
    check guards against a bug or a concurrent change handing the owner another event (the owner prices the rows it
    applies itself; a reader only names events), not against a crafted collision; the hash is never stored."""
    columns = ", ".join(f"`{name}`" for name in IDENTITY_COLUMNS)
    return f"bitOr(bitShiftLeft(toUInt128(xxh3({columns})), 64), toUInt128(cityHash64({columns})))"


def _count(backend: Any, sql: str) -> int:
    return int(backend.query_arrow(sql).column("n")[0].as_py())


def stage_priced_rows(backend: Any, staging: str, copies: str) -> int:
    """Step 1 and the new copies of step 3 for the rows in `staging` (one apply call); the caller holds the insert
    lock. Every row must be a stored event with identical usage and attribution (WarehouseError otherwise); its new
    copy goes into `copies` (created `AS priced_events`) with a `loaded_at` strictly newer than its stored copy, so
    "keep the newest copy" (the heal, the ReplacingMergeTree) is unambiguous. Nothing readers see changes here.
    Returns the rows staged."""
    check = f"{staging}_check"
    hours = f"toStartOfHour(ts) IN (SELECT DISTINCT toStartOfHour(ts) FROM {staging})"  # prunes by the sorting key
    counted = _count(backend, f"SELECT count() AS n FROM {staging}")
    backend.command(f"DROP TABLE IF EXISTS {check}")
    backend.command(f"CREATE TABLE {check} ENGINE = Memory AS SELECT `event_id`, `ts`, `loaded_at`,"
                    f" {_identity_hash()} AS identity FROM priced_events"
                    f" WHERE {hours} AND (event_id, ts) IN (SELECT event_id, ts FROM {staging})")
    try:
        unmatched = _count(backend, f"SELECT count() AS n FROM {staging} WHERE (event_id, ts, {_identity_hash()})"
                                    f" NOT IN (SELECT event_id, ts, identity FROM {check})")
        if unmatched:
            raise WarehouseError(
                f"{unmatched} re-priced event(s) do not match a stored event (missing, or usage/attribution differ);"
                " only prices may change: re-run the reprice"
            )
        # Strictly newer than every stored copy, so "keep the newest copy" never keeps two.
        version = f"(SELECT greatest(now64(3), max(loaded_at) + toIntervalMillisecond(1)) FROM {check})"
        backend.command(  # one row per event (the owner drops repeated ids): no ReplacingMergeTree fold on insert
            f"INSERT INTO {copies} ({_COLUMN_LIST}, `loaded_at`) SELECT {_COLUMN_LIST}, {version} FROM {staging}"
            f"{INSERT_SETTINGS}"
        )
    finally:
        backend.command(f"DROP TABLE IF EXISTS {check}")
    return counted


def _partition_rows(backend: Any, table: str, where: str = "1") -> dict[str, int]:
    rows = backend.query_arrow(f"SELECT _partition_id AS id, count() AS n FROM {table} WHERE {where} GROUP BY id")
    return {row["id"]: row["n"] for row in rows.to_pylist()}


def _fingerprints(backend: Any, table: str, where: str) -> dict[str, tuple[int, int]]:
    """Per partition of `table`: the wrapping sum and the xor of a 64-bit hash of each row's key."""
    rows = backend.query_arrow(
        f"SELECT _partition_id AS id, sum(h) AS s, groupBitXor(h) AS x"
        f" FROM (SELECT _partition_id, cityHash64({_KEY}) AS h FROM {table} WHERE {where}) GROUP BY id").to_pylist()
    return {row["id"]: (row["s"], row["x"]) for row in rows}


def _whole_partitions(backend: Any, copies: str, sizes: dict[str, int]) -> list[str]:
    """The partitions whose stored rows are exactly the staged copies' events: as many rows, and the same hash sum
    and xor of their keys (the hashes are read only where the counts match, so a small apply scans no month)."""
    stored = _partition_rows(backend, "priced_events", f"_partition_id IN {_partition_list(sorted(sizes))}")
    same_size = sorted(p for p, n in sizes.items() if stored.get(p) == n)
    if not same_size:
        return []
    where = f"_partition_id IN {_partition_list(same_size)}"
    staged, kept = _fingerprints(backend, copies, where), _fingerprints(backend, "priced_events", where)
    return [p for p in same_size if staged[p] == kept.get(p)]


def _partition_list(partitions: list[str]) -> str:
    for partition in partitions:
        if not _PARTITION_ID.match(partition):
            raise WarehouseError(f"unexpected partition id {partition!r}")
    return "(" + ", ".join(f"'{partition}'" for partition in partitions) + ")"


def apply_staged_copies(backend: Any, copies: str, delta: str, *, exclusive: bool) -> int:
    """Steps 2-6 of `warehouse.reprice`'s module doc for every copy staged in `copies` (`stage_priced_rows`); the
    caller holds the insert lock. `exclusive`: every writer of the warehouse takes that lock (chDB), so a partition
    whose stored rows are exactly the staged ones can be swapped whole (REPLACE PARTITION; module doc).

    Copies whose stored row went away since they were staged (a demoted cross-source copy, a row past retention) are
    dropped, not brought back. Crash safety as before: nothing readers see changes before the touched hours are
    marked pending; from there a crash leaves the raw table with, per event, the old copy, the new one, or both (a
    partition is replaced atomically; an attached one keeps its old copies until the DELETE), and the heal keeps the
    newest copy and rebuilds the hours' rollups from raw. Returns the rows put into priced_events."""
    heal_pending_hours(backend)  # a crash's leftovers first, so every stored copy is counted once in the rollups
    counted = _count(backend, f"SELECT count() AS n FROM {copies}")
    if not counted:
        return 0
    hours = f"toStartOfHour(ts) IN (SELECT DISTINCT toStartOfHour(ts) FROM {copies})"  # prunes by the sorting key
    sizes = _partition_rows(backend, copies)
    whole = _whole_partitions(backend, copies, sizes) if exclusive else []
    partial = sorted(p for p in sizes if p not in whole)
    stored_rows = _count(backend, f"SELECT count() AS n FROM priced_events WHERE {hours}")
    rebuild = counted > stored_rows * DELTA_SHARE
    in_copies = f"{hours} AND ({_KEY}) IN (SELECT {_KEY} FROM {copies})"
    in_partial = f"_partition_id IN {_partition_list(partial)}" if partial else "0"
    backend.command(f"DROP TABLE IF EXISTS {delta}")
    try:
        # The stored copies being replaced: their keys where they are deleted (partial partitions), and with deltas
        # their measures everywhere (read before any swap).
        if rebuild and partial:
            backend.command(f"CREATE TABLE {delta} ENGINE = Memory AS SELECT `event_id`, `source`, `ts`, `loaded_at`,"
                            f" toInt8(-1) AS sign FROM priced_events WHERE {in_copies} AND {in_partial}")
        elif not rebuild:
            backend.command(f"CREATE TABLE {delta} ENGINE = Memory AS {signed_rows('priced_events', in_copies, -1)}")
        gone = 0
        if partial:
            lost = f"{in_partial} AND ({_KEY}) NOT IN (SELECT {_KEY} FROM {delta})"
            gone = _count(backend, f"SELECT count() AS n FROM {copies} WHERE {lost}")
            if gone:
                backend.command(f"DELETE FROM {copies} WHERE {lost}")
        backend.command(
            "INSERT INTO rollup_rebuild_pending (hour)"
            f" SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC') FROM {copies}"
        )
        for partition in whole:
            backend.command(f"ALTER TABLE priced_events REPLACE PARTITION ID '{partition}' FROM {copies}")
        for partition in partial:
            backend.command(f"ALTER TABLE priced_events ATTACH PARTITION ID '{partition}' FROM {copies}")
        if partial:
            backend.command(delete_subtracted(delta, f"{hours} AND {in_partial}"))
        if rebuild:  # the hours' aggregation minus the rollups' rows: a rebuild without DELETE mutations (reprice8)
            _correct_rollups(backend, f"{delta}_hours")
        else:
            backend.command(f"INSERT INTO {delta} {signed_rows(copies, '1', 1)}")
            for statement in delta_statements(delta):
                backend.command(statement)
        backend.command("TRUNCATE TABLE rollup_rebuild_pending")
    finally:
        backend.command(f"DROP TABLE IF EXISTS {delta}")
    backend.command(f"TRUNCATE TABLE {copies}")
    return counted - gone


def _correct_rollups(backend: Any, hours_table: str) -> None:
    """`correction_statements` for the pending hours, whole UTC days of about CORRECTION_ROWS stored rows at a time
    (through `hours_table`, a Memory table of the chunk's hours): one statement over a whole re-priced month groups
    every key of the month at once, which cost more than the per-call corrections it replaced (2M events:
    spend_hourly_tags 9.8 CPU-s at once against 7.0 in five calls)."""
    days = backend.query_arrow(
        "SELECT toStartOfDay(hour) AS day, count() AS n FROM (SELECT toDateTime(toStartOfHour(ts), 'UTC') AS hour"
        " FROM priced_events WHERE hour IN (SELECT hour FROM rollup_rebuild_pending)) GROUP BY day ORDER BY day"
    ).to_pylist()
    chunks: list[list[Any]] = []
    rows = 0
    for item in days:
        if not chunks or rows + item["n"] > CORRECTION_ROWS:
            chunks.append([item["day"], item["day"]])
            rows = 0
        chunks[-1][1] = item["day"]
        rows += item["n"]
    backend.command(f"DROP TABLE IF EXISTS {hours_table}")
    backend.command(f"CREATE TABLE {hours_table} (hour DateTime('UTC')) ENGINE = Memory")
    try:
        for first, last in chunks:
            backend.command(f"TRUNCATE TABLE {hours_table}")
            backend.command(f"INSERT INTO {hours_table} SELECT hour FROM rollup_rebuild_pending WHERE"
                            " toStartOfDay(hour) BETWEEN {first:DateTime64(3, 'UTC')} AND {last:DateTime64(3, 'UTC')}",
                            {"first": first, "last": last})
            for statement in correction_statements(hours_table):
                backend.command(statement)
    finally:
        backend.command(f"DROP TABLE IF EXISTS {hours_table}")


def replace_priced_rows(backend: Any, staging: str, copies: str, *, exclusive: bool = False) -> int:
    """One apply call's rows (in `staging`) checked, staged and applied at once (a reader's request to the owner,
    the per-row plan); the caller holds the insert lock and `copies` is empty or holds a crashed run's copies."""
    heal_pending_hours(backend)
    backend.command(f"TRUNCATE TABLE {copies}")
    stage_priced_rows(backend, staging, copies)
    return apply_staged_copies(backend, copies, f"{staging}_delta", exclusive=exclusive)


__all__ = ["DELTA_SHARE", "apply_staged_copies", "replace_priced_rows", "stage_priced_rows"]
