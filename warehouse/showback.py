"""Showback: cost, tokens and events per time bucket and any dimensions (incl. `tag:<key>`), from the
cheapest exact source. Values from callers are always bound parameters; tag keys never become SQL text
(tag columns are aliased `tag_<i>` in SQL and renamed in the returned DataFrame).

Sources, all exact and equal for the same question:
- `spend_daily` when every dimension is a rollup dimension, the window is on whole UTC days and the bucket is
  not "hour"; `spend_hourly` when the window is on whole hours;
- `spend_daily_tags` / `spend_hourly_tags` when, in addition, ONE tag key is used: grouping by it adds the
  events without that tag (value '') as the total of the untagged rollup minus the tagged total, so the groups
  still add up to the total;
- `priced_events` otherwise (tags read as `tags[key]`, '' when absent).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from warehouse.backends import WarehouseError
from warehouse.queries import ROLLUP_DIMENSIONS, TOKEN_MEASURES, check_dimensions, to_utc, token_sum

TAG_PREFIX = "tag:"
BUCKETS = {"hour": "toStartOfHour", "day": "toStartOfDay", "week": "toMonday", "month": "toStartOfMonth"}
EMPTY = "''"  # the SQL literal for an empty string
COUNTS = ("events", "unpriced_events") + TOKEN_MEASURES
TimeArg = Any


def is_tag(dim: str) -> bool:
    return dim.startswith(TAG_PREFIX)


def check_dims(names: list[str], what: str) -> list[str]:
    """check_dimensions with `tag:<key>` names allowed."""
    return check_dimensions(names, what, tags=True)


def scoped_filters(filters: dict[str, Any] | None, team: str | None) -> tuple[dict[str, list[str]], bool]:
    """Normalize filters ({dim: value or [values]}; empty list = no filter) and force `team` for a team-scoped
    user. Returns (filters, possible): possible=False when the asked teams exclude the forced one."""
    clean: dict[str, list[str]] = {}
    for dim, values in (filters or {}).items():
        values = [values] if isinstance(values, str) else [str(v) for v in values]
        if values:
            clean[dim] = values
    check_dims(list(clean), "filters")
    if team is None:
        return clean, True
    asked = clean.get("team")
    clean["team"] = [team]
    return clean, asked is None or team in asked


def on_the_hour(moment: datetime | None) -> bool:
    return moment is None or (moment.minute, moment.second, moment.microsecond) == (0, 0, 0)


@dataclass
class Plan:
    """SQL pieces for one source: FROM table, time column, dimension expressions, WHERE clauses, params."""

    table: str
    time_column: str
    rollup: bool
    dims: dict[str, str] = field(default_factory=dict)  # requested name -> SQL expression
    clauses: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        return ("WHERE " + " AND ".join(self.clauses)) if self.clauses else ""


def on_the_day(moment: datetime | None) -> bool:
    return moment is None or (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)


TAG_TABLES = {"spend_hourly_tags": "spend_hourly", "spend_daily_tags": "spend_daily"}  # -> untagged totals
TIME_COLUMNS = {"priced_events": "ts", "spend_hourly": "hour", "spend_hourly_tags": "hour", "spend_daily": "day",
                "spend_daily_tags": "day"}


def choose_table(dims: list[str], filters: dict[str, list[str]], since, until, bucket: str | None = None) -> str:
    """The smallest table that answers exactly: daily rollups for whole-day windows (unless bucketed by hour),
    hourly rollups for whole-hour windows, the raw table otherwise."""
    names = set(dims) | set(filters)
    tags = {n for n in names if is_tag(n)}
    plain = names - tags
    if not (plain <= ROLLUP_DIMENSIONS and on_the_hour(since) and on_the_hour(until)):
        return "priced_events"
    if len(tags) > 1 or any("" in filters.get(t, ()) for t in tags):
        return "priced_events"
    daily = bucket != "hour" and on_the_day(since) and on_the_day(until)
    base = "spend_daily" if daily else "spend_hourly"
    return f"{base}_tags" if tags else base


def make_plan(table: str, dims: list[str], filters: dict[str, list[str]], since, until, possible: bool) -> Plan:
    plan = Plan(table, TIME_COLUMNS[table], table != "priced_events")
    if not possible:
        plan.clauses.append("0")
    if since is not None:
        plan.clauses.append(f"{plan.time_column} >= {{since:DateTime64(3, 'UTC')}}")
        plan.params["since"] = since
    if until is not None:
        plan.clauses.append(f"{plan.time_column} < {{until:DateTime64(3, 'UTC')}}")
        plan.params["until"] = until
    tag_keys: dict[str, str] = {}

    def expression(name: str) -> str:
        if not is_tag(name):
            return name
        if table in TAG_TABLES:
            return "tag_value"
        param = tag_keys.setdefault(name, f"tag_key_{len(tag_keys)}")
        plan.params[param] = name[len(TAG_PREFIX):]
        return f"tags[{{{param}:String}}]"

    if table in TAG_TABLES:
        key = next(n for n in list(dims) + list(filters) if is_tag(n))
        plan.clauses.append("tag_key = {tag_key:String}")
        plan.params["tag_key"] = key[len(TAG_PREFIX):]
    for name in dims:
        plan.dims[name] = expression(name)
    for index, (name, values) in enumerate(filters.items()):
        names = [f"f{index}_{i}" for i in range(len(values))]
        plan.clauses.append(f"{expression(name)} IN (" + ", ".join(f"{{{n}:String}}" for n in names) + ")")
        plan.params.update(zip(names, values))
    return plan


def _raw_measures() -> list[str]:
    return (["count() AS events", "countIf(pricing_status = 'unpriced') AS unpriced_events"]
            + [f"{token_sum(t)} AS {t}" for t in TOKEN_MEASURES] + ["toDecimal128(sum(cost_usd), 12) AS cost_usd"])


def _signed_measures(sign: str = "") -> list[str]:
    # Prefixed names: the outer query's `sum(events) AS events` must not see its own alias.
    # Int128 sums (token counters are Int128 since migration 0010): no wrap-around, even negated.
    return [f"{sign}sum(toInt128({c})) AS s_{c}" for c in COUNTS] + [f"{sign}sum(cost_usd) AS s_cost_usd"]


def showback_sql(group_by: list[str], bucket: str | None, since, until, filters, possible) -> tuple[str, dict, list]:
    """(sql, params, output names) for showback; see `showback`."""
    dims = check_dims(group_by, "group_by")
    if bucket is not None and bucket not in BUCKETS:
        raise WarehouseError(f"bucket: {bucket!r} is not one of {', '.join(BUCKETS)}")
    table = choose_table(dims, filters, since, until, bucket)
    plan = make_plan(table, dims, filters, since, until, possible)
    aliases = [f"d{i}" for i in range(len(dims))]
    keys = (["bucket"] if bucket else []) + aliases
    bucket_expr = [f"toDateTime64({BUCKETS[bucket]}({plan.time_column}), 0, 'UTC') AS bucket"] if bucket else []
    select_keys = bucket_expr + [f"{expr} AS {alias}" for expr, alias in zip(plan.dims.values(), aliases)]
    group = f"GROUP BY {', '.join(keys)}" if keys else ""
    order = f"ORDER BY {', '.join(keys)}" if bucket else "ORDER BY cost_usd DESC, events DESC" + "".join(
        f", {a}" for a in aliases)
    if table == "priced_events":
        sql = f"SELECT {', '.join(select_keys + _raw_measures())} FROM priced_events {plan.where()} {group} {order}"
        return sql, plan.params, keys
    parts = [f"SELECT {', '.join(select_keys + _signed_measures())} FROM {table} {plan.where()} {group}"]
    tag_dims = [n for n in dims if is_tag(n)]
    if table in TAG_TABLES and tag_dims and tag_dims[0] not in filters:
        # Untagged events: everything (spend_hourly/daily) minus the tagged rows, under the value ''.
        base = TAG_TABLES[table]
        untagged = make_plan(base, [n for n in dims if not is_tag(n)], filters, since, until, possible)
        columns = bucket_expr + [f"{EMPTY if is_tag(n) else n} AS {a}" for n, a in zip(dims, aliases)]
        parts.append(f"SELECT {', '.join(columns + _signed_measures())} FROM {base} {untagged.where()} {group}")
        parts.append(f"SELECT {', '.join(columns + _signed_measures('-'))} FROM {table} {plan.where()} {group}")
    outer = [f"accurateCast(sum(s_{c}), 'UInt64') AS {c}" for c in COUNTS] + ["toDecimal128(sum(s_cost_usd), 12) AS cost_usd"]
    sql = (f"SELECT {', '.join(keys + outer)} FROM ({' UNION ALL '.join(parts)}) {group}"
           f" HAVING sum(s_events) != 0 {order}")
    return sql, plan.params, keys


def showback(wh, group_by: list[str] | tuple[str, ...] = (), *, bucket: str | None = None, since: TimeArg = None,
             until: TimeArg = None, filters: dict[str, Any] | None = None, team: str | None = None) -> pl.DataFrame:
    """Cost/tokens/events per `bucket` ("hour", "day", "week" (Monday), "month"; None = whole window) and
    per `group_by` dimensions (any of DIMENSIONS or `tag:<key>`), over [since, until), filtered by
    `filters` ({dim or tag:<key>: [values]}) and, for a team-scoped user, forced to `team`.
    Columns: [bucket (UTC Datetime)], the dimensions by their names, events, unpriced_events, input_tokens,
    output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens (UInt64), cost_usd Decimal(38,12)."""
    dims = list(group_by)
    clean, possible = scoped_filters(filters, team)
    sql, params, _ = showback_sql(dims, bucket, to_utc(since, "since"), to_utc(until, "until"), clean, possible)
    frame = wh.query(sql, params)
    return frame.rename({f"d{i}": name for i, name in enumerate(dims)})


def report_spend(wh, group_by: list[str], *, since: TimeArg = None, until: TimeArg = None) -> pl.DataFrame:
    """`tokenmeter report`'s rows: the warehouse's spend per report dimensions; with a `tag:<key>` among them,
    showback's grouping (the export's and the Showback page's), events without the tag under ''. Same columns."""
    dims = check_dims(list(group_by), "group_by")
    if any(is_tag(dim) for dim in dims):
        return showback(wh, dims, since=since, until=until)
    return wh.spend(dims, since=since, until=until)
