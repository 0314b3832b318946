"""Warehouse schema: versioned SQL migrations, and PricedEvent JSON -> an Arrow row batch of `priced_events`.

Migrations live in `warehouse/migrations/NNNN_name.sql`; each applied version is recorded in
`schema_migrations`. Every statement is idempotent (IF NOT EXISTS), so a run interrupted half-way simply
re-applies on the next open.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from pydantic import ValidationError

from tokenmeter.call_keys import call_keys

log = logging.getLogger(__name__)
from tokenmeter.events import PricedEvent, describe_validation_error
from tokenmeter.stored_money import COST_PRECISION, COST_SCALE, MAX_STORED_COST_USD
from warehouse.fast_rows import fast_row

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

# Decimal(18, 12): 6 integer digits, 12 fractional digits; the limit is the shared contract's (the worker letters a
# call over it: tokenmeter/stored_money.py), migration 0001's columns are checked against it (test_stored_money_limit)
COST_LIMIT = MAX_STORED_COST_USD
COST_TYPE = pa.decimal128(COST_PRECISION, COST_SCALE)
UTC_MS = pa.timestamp("ms", tz="UTC")

# Column name -> Arrow type, in table order (loaded_at is filled by the server's DEFAULT).
ARROW_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("ts", UTC_MS),
        ("source", pa.string()),
        ("provider", pa.string()),
        ("model", pa.string()),
        ("operation", pa.string()),
        ("status", pa.string()),
        ("org", pa.string()),
        ("team", pa.string()),
        ("project", pa.string()),
        ("user", pa.string()),
        ("api_key", pa.string()),
        ("feature", pa.string()),
        ("route", pa.string()),
        ("tags", pa.map_(pa.string(), pa.string())),
        ("input_tokens", pa.uint64()),
        ("cached_input_tokens", pa.uint64()),
        ("cache_write_tokens", pa.uint64()),
        ("cache_write_1h_tokens", pa.uint64()),
        ("output_tokens", pa.uint64()),
        ("reasoning_tokens", pa.uint64()),
        ("latency_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("batch", pa.bool_()),
        ("service_tier", pa.string()),
        ("tokens_source", pa.string()),
        ("cost_usd", COST_TYPE),
        ("cost_breakdown", pa.map_(pa.string(), COST_TYPE)),
        ("pricing_status", pa.string()),
        ("unpriced_reason", pa.string()),
        ("price_entry", pa.string()),
        ("price_effective_from", pa.string()),
        ("catalog_version", pa.string()),
        ("price_override", pa.string()),
        ("priced_at", UTC_MS),
        ("tool_requests", pa.map_(pa.string(), pa.uint64())),  # migration 0008
        ("usage_assumption", pa.string()),
        ("correlation", pa.map_(pa.string(), pa.string())),  # migration 0013: cross-source dedup
        ("call_keys", pa.list_(pa.string())),
    ]
)
COLUMNS: tuple[str, ...] = tuple(ARROW_SCHEMA.names)
ATTRIBUTION_COLUMNS = ("org", "team", "project", "user", "api_key", "feature", "route")
USAGE_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "reasoning_tokens",
)


class RowError(ValueError):
    """A priced event that cannot be stored; the message names the field."""


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:  # PricedEvent.priced_at may be naive: the contract treats times as UTC
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _cost(value: Decimal, field: str) -> Decimal:
    """Money must fit Decimal(18,12) exactly: refuse rather than round or overflow silently."""
    try:
        if not value.is_finite():
            raise RowError(f"{field}: not a finite number ({value})")
        if abs(value) >= COST_LIMIT:
            raise RowError(f"{field}: {value} does not fit Decimal({COST_PRECISION},{COST_SCALE}) (must be below "
                           f"{MAX_STORED_COST_USD:,} USD)")
        if value != value.quantize(Decimal(1).scaleb(-COST_SCALE)):
            raise RowError(f"{field}: {value} has more than {COST_SCALE} decimal places")
    except InvalidOperation as exc:
        raise RowError(f"{field}: {value} is not a valid amount ({exc})") from None
    return value


def event_to_row(item: Any) -> dict[str, Any]:
    """Validate one PricedEvent JSON dict and flatten it into a `priced_events` row; raises RowError.
    Events of the regular shape take `fast_rows.fast_row` (same row, no pydantic); the rest pydantic."""
    row = fast_row(item)
    if row is not None:
        return row
    return validated_row(item)


def validated_row(item: Any) -> dict[str, Any]:
    """`event_to_row` by pydantic: the reference, and the path of every event `fast_row` does not take."""
    if not isinstance(item, dict):
        raise RowError(f"event: expected a JSON object, got {type(item).__name__}")
    try:
        event = PricedEvent.model_validate(item)
    except ValidationError as exc:
        raise RowError(describe_validation_error(exc)) from None
    attribution, usage, price = event.attribution, event.usage, event.price
    correlation = event.correlation.model_dump(exclude_none=True) if event.correlation else {}
    row: dict[str, Any] = {
        "event_id": event.event_id,
        "ts": _utc(event.ts),
        "source": event.source,
        "provider": event.provider,
        "model": event.model,
        "operation": event.operation,
        "status": event.status,
        **{dim: getattr(attribution, dim) or "" for dim in ATTRIBUTION_COLUMNS},
        "tags": list(attribution.tags.items()),
        **{name: getattr(usage, name) for name in USAGE_COLUMNS},
        "latency_ms": event.latency_ms,
        "ttft_ms": event.ttft_ms,
        "batch": event.batch,
        "service_tier": event.service_tier or "",
        "tokens_source": event.tokens_source,
        "cost_usd": _cost(event.cost_usd, "cost_usd"),
        "cost_breakdown": [(k, _cost(v, f"cost_breakdown.{k}")) for k, v in event.cost_breakdown.items()],
        "pricing_status": event.pricing_status,
        "unpriced_reason": event.unpriced_reason or "",
        "price_entry": price.entry if price else "",
        "price_effective_from": (price.effective_from or "") if price else "",
        "catalog_version": (price.catalog_version or "") if price else "",
        "price_override": (price.override or "") if price else "",
        "priced_at": _utc(event.priced_at),
        "tool_requests": list((usage.tool_requests or {}).items()),
        "usage_assumption": event.usage_assumption or "",
        "correlation": list(correlation.items()),
        "call_keys": call_keys(event.provider, correlation),
    }
    for name in USAGE_COLUMNS:
        if row[name] >= 2**64:
            raise RowError(f"usage.{name}: {row[name]} does not fit UInt64")
    return row


def rows_to_arrow(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=ARROW_SCHEMA)


# Migrations -------------------------------------------------------------------------------------------


class SqlRunner(Protocol):
    def command(self, sql: str, params: dict[str, Any] | None = None) -> None: ...

    def query_arrow(self, sql: str, params: dict[str, Any] | None = None) -> pa.Table: ...


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def split_statements(sql: str) -> list[str]:
    """Split a migration file on ';' (our migrations hold no ';' inside strings), dropping comments."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [stmt.strip() for stmt in "\n".join(lines).split(";") if stmt.strip()]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name}: expected NNNN_name.sql")
        migrations.append(Migration(int(match[1]), match[2], tuple(split_statements(path.read_text()))))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}: {versions}")
    return migrations


SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


def applied_versions(runner: SqlRunner) -> set[int]:
    table = runner.query_arrow("SELECT DISTINCT version FROM schema_migrations")
    return set(table.column("version").to_pylist())


def apply_migrations(runner: SqlRunner, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the migrations not yet recorded, in version order; returns the versions applied now."""
    runner.command(SCHEMA_MIGRATIONS_DDL)
    done = applied_versions(runner)
    applied, names = [], []
    started = time.monotonic()
    for migration in load_migrations(directory):
        if migration.version in done:
            continue
        # ops34: an upgrade said nothing; each migration is named as it starts (a slow or failing one is the last
        # line) and the whole once done, with the version the warehouse was at.
        log.log(logging.INFO if done else logging.DEBUG,  # a new warehouse: the summary line only
                "warehouse schema: applying migration %04d_%s", migration.version, migration.name)
        for statement in migration.statements:
            runner.command(statement)
        runner.command(
            "INSERT INTO schema_migrations (version, name) VALUES ({version:UInt32}, {name:String})",
            {"version": migration.version, "name": migration.name},
        )
        applied.append(migration.version)
        names.append(f"{migration.version:04d}_{migration.name}")
    if applied and done:
        log.info("warehouse schema: applied %s (from version %04d) in %.1f s, now at version %04d", ", ".join(names),
                 max(done), time.monotonic() - started, max(applied))
    elif applied:
        log.info("warehouse schema: created at version %04d (%d migrations) in %.1f s", max(applied), len(applied),
                 time.monotonic() - started)
    return applied
