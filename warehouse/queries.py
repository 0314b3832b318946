"""SQL for the query layer, built from whitelisted dimension names and bound parameters only.

Dashboard queries read the daily rollup (`spend_daily`) when every dimension they group or filter by is in it
and the window falls on whole UTC days (and the bucket is not an hour), the hourly rollup (`spend_hourly`) when
it falls on whole hours; otherwise they read `priced_events`. Both give the same
numbers: the rollup is maintained from exactly the rows stored in the raw table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from warehouse.backends import WarehouseError

# Every dimension a caller may group or filter by (value = column in priced_events).
DIMENSIONS: tuple[str, ...] = (
    "org",
    "team",
    "project",
    "user",
    "api_key",
    "feature",
    "route",
    "provider",
    "model",
    "pricing_status",
    "source",
    "operation",
    "status",
    "service_tier",
    "tokens_source",
    "usage_assumption",  # why a collector's usage rests on an assumption ('' when it does not)
)
ROLLUP_DIMENSIONS = frozenset(
    {"org", "team", "project", "user", "api_key", "feature", "provider", "model", "pricing_status"}
)
BUCKETS = {"hour": "toStartOfHour", "day": "toStartOfDay"}
TOKEN_MEASURES = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens", "reasoning_tokens")


def token_sum(expression: str) -> str:
    """SQL summing token counts without wrap-around: ClickHouse's sum() of UInt64 is UInt64 and wraps silently
    (2^64-1 + 1000 gave 999); summed as Int128 it cannot (10^12 per field x 2^64 events < 2^127), and the result
    comes back as UInt64 through accurateCast, which raises instead of wrapping beyond 1.8e19."""
    return f"accurateCast(sum(toInt128({expression})), 'UInt64')"


def to_utc(value: datetime | date | str | None, name: str) -> datetime | None:
    """Accept an aware/naive (= UTC) datetime, a date, or an ISO 8601 string; return an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise WarehouseError(f"{name}: {value!r} is not an ISO 8601 date or time") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise WarehouseError(f"{name}: expected a datetime, date or ISO string, got {type(value).__name__}")
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def check_dimensions(names: list[str] | tuple[str, ...], what: str, tags: bool = False) -> list[str]:
    """`names` if every one is a dimension (or, with `tags`, `tag:<key>`) and none is repeated; otherwise one error
    naming every problem, each name shortened (it is the user's text, possibly hostile) with the closest dimension."""
    import difflib

    names = list(names)
    problems = []
    for name in dict.fromkeys(names):
        if tags and name.startswith("tag:"):
            if name == "tag:":
                problems.append(f"{name!r} needs a tag key, e.g. tag:env")
        elif name not in DIMENSIONS:
            close = difflib.get_close_matches(name[:64], DIMENSIONS, n=1, cutoff=0.75)
            problems.append(f"unknown dimension {_shown(name)}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    repeated = [name for name in dict.fromkeys(names) if names.count(name) > 1]
    if repeated:
        problems.append("dimension listed twice: " + ", ".join(_shown(name) for name in repeated[:5]))
    if problems:
        choices = ", ".join(DIMENSIONS) + (" or tag:<key>" if tags else "")
        shown = problems[:5] + ([f"and {len(problems) - 5} more"] if len(problems) > 5 else [])
        raise WarehouseError(f"{what}: {'; '.join(shown)}; choose from {choices}")
    return names


def _shown(name: str, limit: int = 40) -> str:
    return repr(name if len(name) <= limit else name[:limit] + "...")


def _on_the_hour(moment: datetime | None) -> bool:
    return moment is None or (moment.minute, moment.second, moment.microsecond) == (0, 0, 0)


@dataclass
class Where:
    """A WHERE clause and its parameters, built without ever putting a caller's value into the SQL."""

    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def sql(self) -> str:
        return ("WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


@dataclass(frozen=True)
class Source:
    table: str
    time_column: str
    time_type: str
    rollup: bool


RAW = Source("priced_events", "ts", "DateTime64(3, 'UTC')", rollup=False)
ROLLUP = Source("spend_hourly", "hour", "DateTime64(3, 'UTC')", rollup=True)
DAILY = Source("spend_daily", "day", "DateTime64(3, 'UTC')", rollup=True)  # same dims, one row per day


def _on_the_day(moment: datetime | None) -> bool:
    return moment is None or (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


def choose_source(dims: list[str], since: datetime | None, until: datetime | None, bucket: str | None = None) -> Source:
    if set(dims) <= ROLLUP_DIMENSIONS and _on_the_hour(since) and _on_the_hour(until):
        if bucket != "hour" and _on_the_day(since) and _on_the_day(until):
            return DAILY  # whole days (the dashboard's date ranges): ~24x fewer rows than the hourly rollup
        return ROLLUP
    return RAW


def build_where(
    source: Source, since: datetime | None, until: datetime | None, filters: dict[str, list[str]] | None
) -> Where:
    where = Where()
    if since is not None:
        where.clauses.append(f"{source.time_column} >= {{since:{source.time_type}}}")
        where.params["since"] = since
    if until is not None:
        where.clauses.append(f"{source.time_column} < {{until:{source.time_type}}}")
        where.params["until"] = until
    for dim, values in (filters or {}).items():
        check_dimensions([dim], "filters")
        if isinstance(values, str):
            values = [values]
        values = [str(v) for v in values]
        if not values:
            continue  # an empty selection means "no filter", as in a dashboard multi-select
        names = [f"f_{dim}_{i}" for i in range(len(values))]
        where.clauses.append(f"{dim} IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        where.params.update(zip(names, values))
    return where


def measures(source: Source) -> list[str]:
    """Aggregates with the same names and types on both sources (UInt64 counts, Decimal(38,12) cost)."""
    if source.rollup:
        # The rollup's counters are Int64 since migration 0003 (they are never negative now): cast back.
        counts = ["toUInt64(sum(events)) AS events", "toUInt64(sum(unpriced_events)) AS unpriced_events"]
    else:
        counts = ["count() AS events", "countIf(pricing_status = 'unpriced') AS unpriced_events"]
    tokens = [f"{token_sum(name)} AS {name}" for name in TOKEN_MEASURES]
    return counts + tokens + ["toDecimal128(sum(cost_usd), 12) AS cost_usd"]


def spend_sql(
    group_by: list[str], since: datetime | None, until: datetime | None, filters: dict[str, list[str]] | None
) -> tuple[str, dict[str, Any]]:
    dims = check_dimensions(group_by, "group_by")
    source = choose_source(dims + list((filters or {}).keys()), since, until)
    where = build_where(source, since, until, filters)
    select = ", ".join(dims + measures(source))
    group = f"GROUP BY {', '.join(dims)}" if dims else ""
    order = "ORDER BY cost_usd DESC, events DESC" + (f", {', '.join(dims)}" if dims else "")
    return f"SELECT {select} FROM {source.table} {where.sql()} {group} {order}", where.params


def cost_lines_sql(
    group_by: list[str], since: datetime | None, until: datetime | None, filters: dict[str, list[str]] | None
) -> tuple[str, dict[str, Any]]:
    """Cost per breakdown line (input, cached_input, ..., request, and one line per tool fee kind such as
    web_search) per group, from the raw table: events having the line, tool requests of that kind, cost."""
    dims = check_dimensions(group_by, "group_by")
    where = build_where(RAW, since, until, filters)
    select = ", ".join(dims + [
        "line AS cost_line", "count() AS events", "sum(tool_requests[line]) AS requests",
        "toDecimal128(sum(amount), 12) AS cost_usd"])
    keys = ", ".join(dims + ["cost_line"])
    return (f"SELECT {select} FROM priced_events ARRAY JOIN mapKeys(cost_breakdown) AS line, "
            f"mapValues(cost_breakdown) AS amount {where.sql()} GROUP BY {keys} ORDER BY {keys}", where.params)


def spend_over_time_sql(
    bucket: str,
    group_by: str | None,
    since: datetime | None,
    until: datetime | None,
    filters: dict[str, list[str]] | None,
) -> tuple[str, dict[str, Any]]:
    if bucket not in BUCKETS:
        raise WarehouseError(f"bucket: {bucket!r} is not one of {', '.join(BUCKETS)}")
    dims = check_dimensions([group_by] if group_by else [], "group_by")
    source = choose_source(dims + list((filters or {}).keys()), since, until, bucket)
    where = build_where(source, since, until, filters)
    # DateTime64, not DateTime: chDB hands a DateTime to Arrow as a bare UInt32.
    bucket_expr = f"toDateTime64({BUCKETS[bucket]}({source.time_column}), 0, 'UTC') AS bucket"
    select = ", ".join([bucket_expr] + dims + measures(source))
    keys = ", ".join(["bucket"] + dims)
    return f"SELECT {select} FROM {source.table} {where.sql()} GROUP BY {keys} ORDER BY {keys}", where.params


def distinct_values_sql(dim: str, since: datetime | None, until: datetime | None) -> tuple[str, dict[str, Any]]:
    check_dimensions([dim], "dim")
    source = choose_source([dim], since, until)
    where = build_where(source, since, until, None)
    return f"SELECT DISTINCT {dim} AS value FROM {source.table} {where.sql()} ORDER BY value", where.params


FRESHNESS_SQL = (
    "SELECT max(ts) AS last_event_ts, max(loaded_at) AS last_loaded_at, count() AS events FROM priced_events"
)
