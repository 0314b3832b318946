"""Re-pricing stored history with the current price book, so a price change applies by event time.

The columnar plan (`warehouse.reprice_columnar`, what `tokenmeter reprice` runs) computes the same report and
hands the same rows to the same apply, from Arrow columns; the per-row plan below is its reference.

Plan (any process, SELECT only): read the stored rows of [since, until) one UTC day at a time, rebuild each
UsageEvent (tokens exactly as stored: never re-estimated), price it with the caller's `reprice_fn`, and
diff. The warehouse never imports the pricing stage: the caller injects `reprice_fn(UsageEvent) -> PricedEvent`.

Apply (only in the process that owns the data; a reader sends the changed rows to the owner's endpoint;
`warehouse.reprice_apply`): for the changed events, under the insert lock (loader inserts wait for it),
1. check every new row is a stored event with identical usage and attribution (only pricing may change), and stage
   its new copy, with a `loaded_at` strictly newer than every stored copy of the event, in a copies table made
   `AS priced_events` that nobody reads (the columnar plan stages every apply call of a re-price first);
2. record the affected hours in `rollup_rebuild_pending` (0004);
3. put the new copies into priced_events: a partition whose stored rows are exactly the staged ones is swapped
   whole (REPLACE PARTITION: the old copies go in the same step), other partitions get the copies attached
   (ATTACH PARTITION); neither fires the views, whose rollups step 5 corrects;
4. lightweight-DELETE the old raw copies of the attached partitions, once per re-price (on heal: every copy older
   than its event's newest `loaded_at` in the pending hours);
5. correct the rollups: add signed deltas (old copies -1, new +1) for the changed events when they are at most
   `DELTA_SHARE` of the touched hours' stored rows, else INSERT per key the hours' aggregation from the raw table
   (the materialized view's) minus the rollup's stored rows (`warehouse.rollups.correction_statements`: no
   DELETE mutation); on heal, the same correction for every pending hour (whatever deltas reached its rollups);
6. clear those hours from `rollup_rebuild_pending`.
Why a crash anywhere is safe: nothing readers see changes before step 2; the raw table never lacks an event (the
new copy is in before the old one goes, or both in one atomic swap), and two copies differ in `loaded_at`, so
"keep the newest copy" (step 4, also what the ReplacingMergeTree merge keeps) is unambiguous and idempotent. The
hour stays pending until step 5 finishes, and a pending hour's rollup is brought back to the raw aggregation by the
heal (idempotent: per key, raw minus stored), whatever deltas reached it. A writer that opens the warehouse runs
steps 4-6 for every pending hour (`heal_pending_hours`), so a crash at any point heals on the next start; re-running
reprice heals too (it heals all pending hours, not only its own). Staged copies a crash leaves are never applied: each re-price empties the
copies table first.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import pyarrow as pa
from pydantic import ValidationError

from tokenmeter.events import Attribution, Correlation, PricedEvent, Usage, UsageEvent, describe_validation_error
from warehouse.arrow_rows import build_batch
from warehouse.backends import WarehouseError
from warehouse.rollups import correction_statements
from warehouse.schema import ATTRIBUTION_COLUMNS, COLUMNS, USAGE_COLUMNS, RowError, event_to_row

RepriceFn = Callable[[UsageEvent], PricedEvent]
# Prices a day of stored rows at once (the caller's columnar path): returns each row's new PricedEvent JSON in
# order, exactly what `reprice_row` gives for it, or None when it cannot (the rows then take `reprice_fn`).
RepriceBatchFn = Callable[[list[dict[str, Any]]], "list[dict[str, Any]] | None"]

# What a re-price may change. catalog_version is left out on purpose: it is a digest of the whole catalog,
# so comparing it would rewrite every row after any unrelated catalog edit.
PRICING_COLUMNS = (
    "cost_usd", "cost_breakdown", "pricing_status", "unpriced_reason",
    "price_entry", "price_effective_from", "price_override",
)
# What a re-price must NOT change (checked by the owner before it replaces anything). Map `tags` is left
# out: ClickHouse cannot compare it inside a tuple IN; it is copied from the stored row anyway.
IDENTITY_COLUMNS = (
    "event_id", "ts", "source", "provider", "model", "operation", "status", *ATTRIBUTION_COLUMNS,
    *USAGE_COLUMNS, "batch", "service_tier", "tokens_source",
)
APPLY_BATCH = 500  # changed events per apply call to the owner's endpoint (keeps its request body under its limit)
# Changed events per apply call in the owning process. Each call deletes old copies and rebuilds the rollups of
# the hours it touches, a pass whose cost hardly depends on its size (measured: ~3 s on a 20,000-event month in
# chDB), so the owner gathers changes across days instead of paying that pass per day or per 500 events.
OWNER_APPLY_BATCH = 200_000
_COLUMN_LIST = ", ".join(f"`{name}`" for name in COLUMNS)


@dataclass
class ModelDiff:
    provider: str
    model: str
    events: int = 0
    changed: int = 0
    old_cost: Decimal = Decimal(0)
    new_cost: Decimal = Decimal(0)

    @property
    def difference(self) -> Decimal:
        return self.new_cost - self.old_cost


@dataclass
class RepriceReport:
    since: datetime
    until: datetime | None
    dry_run: bool
    events: int = 0
    changed: int = 0
    old_total: Decimal = Decimal(0)
    new_total: Decimal = Decimal(0)
    applied: int = 0  # rows replaced in the warehouse (0 on a dry run)
    old_unpriced: int = 0  # events without a price before and after: unpriced is never a silent $0
    new_unpriced: int = 0
    models: dict[tuple[str, str], ModelDiff] = field(default_factory=dict)

    @property
    def difference(self) -> Decimal:
        return self.new_total - self.old_total

    def top_models(self, limit: int | None = 10) -> list[ModelDiff]:
        changed = [m for m in self.models.values() if m.changed]
        changed.sort(key=lambda m: (-abs(m.difference), m.provider, m.model))
        return changed[:limit] if limit else changed

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat() if self.until else None,
            "dry_run": self.dry_run,
            "events": self.events,
            "changed": self.changed,
            "applied": self.applied,
            "old_unpriced": self.old_unpriced,
            "new_unpriced": self.new_unpriced,
            "old_total_usd": format(self.old_total, "f"),
            "new_total_usd": format(self.new_total, "f"),
            "difference_usd": format(self.difference, "f"),
            "models": [
                {**{k: v for k, v in asdict(m).items() if k not in ("old_cost", "new_cost")},
                 "old_cost_usd": format(m.old_cost, "f"), "new_cost_usd": format(m.new_cost, "f"),
                 "difference_usd": format(m.difference, "f")}
                for m in self.top_models(None)
            ],
        }


def stored_row_to_event(row: dict[str, Any]) -> UsageEvent:
    """The UsageEvent a stored row was priced from: usage as stored (never re-counted), '' back to None."""
    try:
        return UsageEvent(
            event_id=row["event_id"],
            ts=_aware(row["ts"]),
            source=row["source"],
            provider=row["provider"],
            model=row["model"],
            operation=row["operation"],
            status=row["status"],
            attribution=Attribution(**{dim: row[dim] or None for dim in ATTRIBUTION_COLUMNS}, tags=dict(row["tags"])),
            usage=Usage(**{name: row[name] for name in USAGE_COLUMNS}, tool_requests=_tool_requests(row)),
            latency_ms=row["latency_ms"],
            ttft_ms=row["ttft_ms"],
            batch=bool(row["batch"]),
            service_tier=row["service_tier"] or None,
            usage_assumption=row.get("usage_assumption") or None,
            reported_cost_usd=_reported_cost(row),
            correlation=_correlation(row),
        )
    except ValidationError as exc:
        raise WarehouseError(f"stored event {row['event_id']!r}: {describe_validation_error(exc)}") from None


# Breakdown lines of an event whose provider reported its cost (streams/pricing/reported.py): the stored cost is
# that reported cost, so a re-price keeps it as the cost of record and only re-checks it against the catalog.
REPORTED_COST_LINES = ("reported", "reported_difference")


def _reported_cost(row: dict[str, Any]) -> Decimal | None:
    raw = row.get("cost_breakdown") or {}
    keys = {item["key"] if isinstance(item, dict) else item[0] for item in raw} if isinstance(raw, list) else set(raw)
    return Decimal(row["cost_usd"]) if keys.intersection(REPORTED_COST_LINES) else None


def _correlation(row: dict[str, Any]) -> Correlation | None:
    raw = row.get("correlation") or {}
    if isinstance(raw, list):
        raw = dict((item["key"], item["value"]) if isinstance(item, dict) else tuple(item) for item in raw)
    return Correlation(**raw) if raw else None


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    """`column.to_pylist()`, faster for the types that dominate a day of rows: UTC millisecond timestamps
    (pyarrow builds each aware datetime slowly: ~12 µs) and maps (lists of (key, value) pairs)."""
    kind = column.type
    if pa.types.is_timestamp(kind) and kind.unit == "ms" and kind.tz == "UTC":
        return [None if v is None else _EPOCH + v * _MS for v in column.cast(pa.int64()).to_pylist()]
    if pa.types.is_map(kind) and column.null_count == 0:
        maps = column.combine_chunks()
        offsets = maps.offsets.to_pylist()
        pairs = list(zip(_column_values(pa.chunked_array([maps.keys])), _column_values(pa.chunked_array([maps.items]))))
        return [pairs[start:end] for start, end in zip(offsets, offsets[1:])]
    return column.to_pylist()


def arrow_rows(table: pa.Table) -> list[dict[str, Any]]:
    """`table.to_pylist()` (one dict per row), built column by column: ~3x faster on priced_events rows."""
    names = table.column_names
    columns = [_column_values(table.column(name)) for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def stored_event_json(row: dict[str, Any]) -> dict[str, Any]:
    """The canonical event JSON of a stored row: validates into exactly `stored_row_to_event(row)` (for a
    caller's batch pricer, `RepriceBatchFn`)."""
    attribution: dict[str, Any] = {dim: row[dim] for dim in ATTRIBUTION_COLUMNS if row[dim]}
    attribution["tags"] = dict(row["tags"])
    usage: dict[str, Any] = {name: row[name] for name in USAGE_COLUMNS}
    tools = _tool_requests(row)
    if tools is not None:
        usage["tool_requests"] = tools
    event = {"event_id": row["event_id"], "ts": _aware(row["ts"]).isoformat(), "source": row["source"],
             "provider": row["provider"], "model": row["model"], "operation": row["operation"],
             "status": row["status"], "attribution": attribution, "usage": usage, "batch": bool(row["batch"])}
    for name in ("latency_ms", "ttft_ms"):
        if row[name] is not None:
            event[name] = row[name]
    if row["service_tier"]:
        event["service_tier"] = row["service_tier"]
    if row.get("usage_assumption"):
        event["usage_assumption"] = row["usage_assumption"]
    reported = _reported_cost(row)
    if reported is not None:
        event["reported_cost_usd"] = str(reported)
    correlation = _correlation(row)
    if correlation is not None:
        event["correlation"] = correlation.model_dump(exclude_none=True)
    return event


def _tool_requests(row: dict[str, Any]) -> dict[str, int] | None:
    """Stored Map(String, UInt64) as Arrow gives it (a list of key/value dicts or pairs), or a dict."""
    raw = row.get("tool_requests") or {}
    if isinstance(raw, list):
        raw = dict((item["key"], item["value"]) if isinstance(item, dict) else tuple(item) for item in raw)
    return dict(raw) or None


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _pricing_of(row: dict[str, Any]) -> tuple[Any, ...]:
    values = []
    for name in PRICING_COLUMNS:
        value = row[name]
        values.append(dict(value) if name == "cost_breakdown" else value)  # Decimal compares by value
    return tuple(values)


def reprice_row(row: dict[str, Any], reprice_fn: RepriceFn) -> dict[str, Any]:
    """The stored row priced again, as PricedEvent JSON (tokens_source kept: the tokens are the stored ones)."""
    event = stored_row_to_event(row)
    priced = reprice_fn(event).to_json()
    priced["tokens_source"] = row["tokens_source"]
    return priced


def _repriced(row: dict[str, Any], reprice_fn: RepriceFn,
              new: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(PricedEvent JSON, its warehouse row) of a stored row priced again (or already priced: `new`);
    WarehouseError if it cannot be stored."""
    if new is None:
        new = reprice_row(row, reprice_fn)
    try:
        return new, event_to_row(new)
    except RowError as exc:
        raise WarehouseError(f"re-priced event {row['event_id']!r}: {exc}") from None


def _priced_rows(rows: list[dict[str, Any]], priced: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The warehouse columns the diff reads (event_id, cost_usd and PRICING_COLUMNS) of each re-priced event, built
    as columns (warehouse.arrow_rows) instead of a full row per event; WarehouseError names the first event that
    cannot be stored, as `_repriced` does."""
    table, indices, errors = build_batch(priced)
    if errors:
        index, exc = errors[0]
        if isinstance(exc, RowError):
            raise WarehouseError(f"re-priced event {rows[index]['event_id']!r}: {exc}") from None
        raise exc
    return arrow_rows(table.select(["event_id", *PRICING_COLUMNS]))


def _day_windows(first: datetime, last: datetime, since: datetime, until: datetime | None):
    day = first.replace(hour=0, minute=0, second=0, microsecond=0)
    while day <= last:
        start, end = max(day, since), day + timedelta(days=1)
        yield start, (min(end, until) if until else end)
        day = end


def plan_and_apply(warehouse: Any, since: datetime, until: datetime | None, reprice_fn: RepriceFn,
                   dry_run: bool, apply: Callable[[list[dict[str, Any]]], int],
                   apply_batch: int = APPLY_BATCH, reprice_batch: RepriceBatchFn | None = None) -> RepriceReport:
    """Walk the window a day at a time: price, diff, and (unless dry_run) hand changed events to `apply`, in
    calls of at most `apply_batch` events gathered across days."""
    report = RepriceReport(since=since, until=until, dry_run=dry_run)
    changes: list[dict[str, Any]] = []
    where, params = "ts >= {since:DateTime64(3, 'UTC')}", {"since": since}
    if until is not None:
        where += " AND ts < {until:DateTime64(3, 'UTC')}"
        params["until"] = until
    bounds = warehouse.backend.query_arrow(
        f"SELECT count() AS n, min(ts) AS first, max(ts) AS last FROM priced_events WHERE {where}", params
    ).to_pylist()[0]
    if not bounds["n"]:
        return report
    for start, end in _day_windows(_aware(bounds["first"]), _aware(bounds["last"]), since, until):
        rows = arrow_rows(warehouse.backend.query_arrow(
            f"SELECT {_COLUMN_LIST} FROM priced_events"
            " WHERE ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')} ORDER BY event_id",
            {"start": start, "end": end},
        ))
        priced = reprice_batch(rows) if reprice_batch is not None and rows else None
        new_rows = _priced_rows(rows, priced) if priced is not None else None
        for index, row in enumerate(rows):
            if new_rows is None:
                new, new_row = _repriced(row, reprice_fn)
            else:
                new, new_row = priced[index], new_rows[index]
            old_cost, new_cost = Decimal(row["cost_usd"]), Decimal(new_row["cost_usd"])
            diff = report.models.setdefault((row["provider"], row["model"]), ModelDiff(row["provider"], row["model"]))
            report.events += 1
            diff.events += 1
            report.old_unpriced += row["pricing_status"] == "unpriced"
            report.new_unpriced += new_row["pricing_status"] == "unpriced"
            report.old_total += old_cost
            report.new_total += new_cost
            diff.old_cost += old_cost
            diff.new_cost += new_cost
            if _pricing_of(row) != _pricing_of(new_row):
                report.changed += 1
                diff.changed += 1
                changes.append(new)
                if len(changes) >= apply_batch:
                    if not dry_run:
                        report.applied += apply(changes)
                    changes = []
    if changes and not dry_run:
        report.applied += apply(changes)
    return report


# Owner side -------------------------------------------------------------------------------------------


def owner_reprice_fn(settings: Any) -> RepriceFn:
    """The owner's own pricing for a reader's re-price request: the catalog of its settings as it is on disk now
    (bundled + `<data_dir>/pricing` imports + overrides). Loaded per request, so a catalog edit counts at once.
    The only place the warehouse reaches into the pricing stage, and only in the owner serving a reader."""
    from streams import load_book, price_event

    book = load_book(settings)
    priced_at = datetime.now(timezone.utc)
    return lambda event: price_event(event, book, priced_at)


def reprice_named_events(warehouse: Any, keys: list[dict[str, str]], reprice_fn: RepriceFn) -> int:
    """Owner side of POST /reprice: the caller names stored events ({event_id, ts}); their rows are read here,
    priced with `reprice_fn` (the owner's catalog) and those whose pricing changed are replaced. A caller can
    therefore only ask for the owner's own prices to be applied, never set a cost. Returns rows replaced."""
    wanted: dict[str, datetime] = {}
    for key in keys:
        try:
            wanted[str(key["event_id"])] = _aware(datetime.fromisoformat(str(key["ts"])))
        except (KeyError, ValueError) as exc:
            raise WarehouseError(f"re-price request: bad event key {key!r:.120}: {exc}") from None
    if not wanted:
        return 0
    times = sorted(wanted.values())
    params: dict[str, Any] = {f"id{i}": event_id for i, event_id in enumerate(wanted)}
    ids = ", ".join(f"{{{name}:String}}" for name in params)
    rows = warehouse.backend.query_arrow(
        f"SELECT {_COLUMN_LIST} FROM priced_events WHERE event_id IN ({ids})"
        " AND ts >= {first:DateTime64(3, 'UTC')} AND ts <= {last:DateTime64(3, 'UTC')}"
        " ORDER BY event_id, loaded_at DESC LIMIT 1 BY event_id",
        {**params, "first": times[0], "last": times[-1]},
    ).to_pylist()
    changes = []
    for row in rows:
        new, new_row = _repriced(row, reprice_fn)
        if _pricing_of(row) != _pricing_of(new_row):
            changes.append(new)
    return warehouse.apply_repriced_events(changes) if changes else 0


# Pending hours: a re-price's (0004) and the loader's insert markers (0017).
PENDING_TABLES = ("rollup_rebuild_pending", "rollup_insert_pending")
_PENDING = "(" + " UNION ALL ".join(f"SELECT hour FROM {table}" for table in PENDING_TABLES) + ")"
_PENDING_HOURS = f"(SELECT hour FROM {_PENDING})"


def heal_pending_hours(backend: Any) -> int:
    """Steps 4-6 of the module doc for every pending hour (of a re-price or of a loader insert); idempotent. The
    caller holds the insert lock (or is opening the warehouse, before any loader runs). Returns the hours rebuilt."""
    pending = backend.query_arrow(f"SELECT count(DISTINCT hour) AS n FROM {_PENDING}").column("n")[0].as_py()
    if not pending:
        return 0
    in_pending = f"toDateTime(toStartOfHour(ts), 'UTC') IN {_PENDING_HOURS}"
    backend.command(
        f"DELETE FROM priced_events WHERE {in_pending} AND (event_id, loaded_at) NOT IN"
        f" (SELECT event_id, max(loaded_at) FROM priced_events WHERE {in_pending} GROUP BY event_id)"
    )
    # Every rollup of priced_events corrected to the hours' raw aggregation (warehouse.rollups): per key, what the raw
    # rows give minus what the rollup holds, as the apply does (reprice8). It used to DELETE the hours' rollup rows and
    # insert them again: five lightweight DELETEs, mutations of every part holding those hours, ~0.13 of a small
    # heal's ~0.24 CPU-s (suite29, docs/rounds/testing.md); the correction reads the rollup rows instead and writes
    # nothing for a key that is already right (a heal run twice corrects nothing the second time).
    for statement in correction_statements(_PENDING):
        backend.command(statement)
    # The loader's marked hours: the anti-join's key table (priced_event_ids, migration 0009) is a view of the same
    # INSERT, so a kill inside it can leave raw rows whose ids were never written; the replay (or a ts-shifted copy
    # in the same hour) would then be stored again, and a merge of the raw table (same hour, org, team, event_id)
    # fold the two rows into one while the rollup kept both (the soak: rollup one event over raw). A key-value
    # upsert: ids already there are written again unchanged.
    backend.command(
        "INSERT INTO priced_event_ids (event_id, ts) SELECT event_id, ts FROM priced_events"
        " WHERE toDateTime(toStartOfHour(ts), 'UTC') IN (SELECT hour FROM rollup_insert_pending)"
    )
    # The cross-source call keys (migration 0013) are a view of the same INSERT: without them the other source's
    # copy of a stored call is stored too. Only missing keys are written: a key that names an event already is left
    # as it is (a later preferred copy may own it).
    backend.command(
        "INSERT INTO call_keys (key, event_id, source, ts) SELECT key, event_id, source, ts FROM priced_events"
        " ARRAY JOIN call_keys AS key"
        " WHERE toDateTime(toStartOfHour(ts), 'UTC') IN (SELECT hour FROM rollup_insert_pending)"
        " AND key NOT IN (SELECT key FROM call_keys)"
    )
    for table in PENDING_TABLES:
        backend.command(f"TRUNCATE TABLE {table}")
    return int(pending)
