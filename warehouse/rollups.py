"""The rollups kept by materialized views on `priced_events`, and how to rebuild them for some hours.

Hourly rollups are rebuilt from the raw table with the views' aggregations (migrations 0002, 0006) over a WHERE
on the hour; daily rollups (0007) are then re-summed from the rebuilt hourly ones for the days of those hours
(the hourly rollups keep history after raw rows expire; an hour without raw rows is never rebuilt, so expired
history is not wiped). A re-price (warehouse.reprice) and the backfill of a new rollup rebuild pending hours
with them. tests/warehouse/test_warehouse_schema.py checks each rebuild gives exactly what its view wrote.
"""

from __future__ import annotations

SPEND_KEYS = ("org", "team", "project", "user", "api_key", "feature", "provider", "model", "pricing_status")
TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
_HOUR = "toDateTime(toStartOfHour(ts), 'UTC')"
_SPEND_MEASURES = (
    "toInt64(count()) AS events, toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events, "
    + ", ".join(f"sum(toInt128({t})) AS {t}" for t in TOKENS)  # Int128 columns since migration 0010
    + ", toDecimal128(sum(cost_usd), 12) AS cost_usd"
)
_SPEND_COLUMNS = "events, unpriced_events, " + ", ".join(TOKENS) + ", cost_usd"
_MODEL_KEYS = ("org", "team", "provider", "model", "price_entry", "price_effective_from")
_ROLLUP_KEYS = frozenset(("hour", "day", "tag_key", "tag_value", *SPEND_KEYS, *_MODEL_KEYS))
# Every INSERT ... SELECT into a rollup here writes one row per key (its GROUP BY), so SummingMergeTree's merge of
# each inserted block (`optimize_on_insert`, on by default) finds nothing to fold; off, the parts are the same rows
# without that pass, ~half the CPU of writing a rollup at user granularity (issue 14, reprice7: 4.0 -> 2.1 CPU-s for
# spend_hourly's ~790,000 rows of 1M events). Readers sum() the rollups anyway. As the loader's insert
# (warehouse.store.PRICED_INSERT_SETTINGS).
INSERT_SETTINGS = " SETTINGS optimize_on_insert = 0"


def _spend_hourly(where: str) -> tuple[str, str]:
    keys = ", ".join(SPEND_KEYS)
    return (f"hour, {keys}, {_SPEND_COLUMNS}",
            f"SELECT {_HOUR} AS hour, {keys}, {_SPEND_MEASURES} FROM priced_events WHERE {where} GROUP BY hour, {keys}")


def _spend_hourly_tags(where: str) -> tuple[str, str]:
    keys = ", ".join(SPEND_KEYS)
    return (f"hour, tag_key, tag_value, {keys}, {_SPEND_COLUMNS}",
            f"SELECT {_HOUR} AS hour, tag_key, tag_value, {keys}, {_SPEND_MEASURES}"
            " FROM priced_events ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value"
            f" WHERE {where} GROUP BY hour, tag_key, tag_value, {keys}")


_MODEL_MEASURES = ("requests", "errors", *TOKENS, "cost_usd", "latency_ms_sum", "latency_count", "ttft_ms_sum",
                   "ttft_count")


def _model_hourly(where: str) -> tuple[str, str]:
    keys = ", ".join(_MODEL_KEYS)
    return (
        f"hour, {keys}, {', '.join(_MODEL_MEASURES)}",
        f"SELECT {_HOUR} AS hour, {keys}, toInt64(count()) AS requests,"
        " toInt64(countIf(status = 'error')) AS errors, "
        + ", ".join(f"sum(toInt128({t})) AS {t}" for t in TOKENS)
        + ", toDecimal128(sum(cost_usd), 12) AS cost_usd,"
        " sum(ifNull(latency_ms, 0)) AS latency_ms_sum, toInt64(count(latency_ms)) AS latency_count,"
        " sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum, toInt64(count(ttft_ms)) AS ttft_count"
        f" FROM priced_events WHERE {where} GROUP BY hour, {keys}"
    )


def _daily_aggregation(hourly: str, keys: tuple[str, ...], days: str) -> tuple[str, str]:
    names = ", ".join(keys)
    return (
        f"day, {names}, {_SPEND_COLUMNS}",
        f"SELECT toDateTime(toStartOfDay(hour), 'UTC') AS day, {names}, "
        + ", ".join(f"sum({c}) AS {c}" for c in _SPEND_COLUMNS.split(", "))
        + f" FROM {hourly} WHERE toDateTime(toStartOfDay(hour), 'UTC') IN {days} GROUP BY day, {names}"
    )


def _insert(table: str, built: tuple[str, str]) -> str:
    columns, select = built
    return f"INSERT INTO {table} ({columns}) {select}{INSERT_SETTINGS}"


def _daily(table: str, hourly: str, keys: tuple[str, ...], days: str) -> str:
    return _insert(table, _daily_aggregation(hourly, keys, days))


def _corrected(table: str, built: tuple[str, str], where: str) -> str:
    """INSERT of what `table`'s rows matching `where` lack to equal the aggregation `built`: per key, the fresh
    measures minus the stored ones (keys whose difference is all zero are not written). Readers sum() and the
    tables are SummingMergeTree, so after it the rows of those keys add up to exactly `built`, as a DELETE of the rows
    plus an INSERT of `built` would leave them, without the DELETE's mutation (see correction_statements)."""
    columns, select = built
    names = [name.strip() for name in columns.split(",")]
    keys = [name for name in names if name in _ROLLUP_KEYS]
    measures = [name for name in names if name not in _ROLLUP_KEYS]
    stored = (f"SELECT {', '.join(keys)}, " + ", ".join(f"-{m} AS {m}" for m in measures)
              + f" FROM {table} WHERE {where}")
    return (f"INSERT INTO {table} ({columns}) SELECT {', '.join(keys)}, "
            + ", ".join(f"sum({m}) AS {m}" for m in measures)
            + f" FROM ({select} UNION ALL {stored}) GROUP BY {', '.join(keys)}"
            + " HAVING " + " OR ".join(f"{m} != 0" for m in measures) + INSERT_SETTINGS)


# table -> builder of "SELECT <the view's aggregation> FROM priced_events WHERE <where>" (with the table's columns)
_AGGREGATIONS = {
    "spend_hourly": _spend_hourly,
    "spend_hourly_tags": _spend_hourly_tags,
    "model_hourly": _model_hourly,
}
# table -> builder of "INSERT INTO table SELECT <the view's aggregation> FROM priced_events WHERE <where>"
ROLLUPS = {table: (lambda where, table=table, build=build: _insert(table, build(where)))
           for table, build in _AGGREGATIONS.items()}
# daily table -> (hourly table it is summed from, its keys besides the time)
DAILY_ROLLUPS = {
    "spend_daily": ("spend_hourly", SPEND_KEYS),
    "spend_daily_tags": ("spend_hourly_tags", ("tag_key", "tag_value", *SPEND_KEYS)),
}


def _rebuilt_hours(pending_table: str) -> tuple[str, str]:
    """(hours, days) of `pending_table`'s hours to rebuild: only hours that still have raw rows (rebuilding an
    expired hour would replace its history by nothing), and the days of every pending hour."""
    pending = f"(SELECT hour FROM {pending_table})"
    hours = f"(SELECT DISTINCT {_HOUR} FROM priced_events WHERE {_HOUR} IN {pending})"
    days = f"(SELECT DISTINCT toDateTime(toStartOfDay(hour), 'UTC') FROM {pending_table})"
    return hours, days


def rebuild_statements(pending_table: str = "rollup_rebuild_pending") -> list[str]:
    """Statements that replace every rollup's rows of the hours listed in `pending_table` (and of their days)
    by the aggregation of the raw rows. Idempotent; the caller holds the insert lock."""
    hours, days = _rebuilt_hours(pending_table)
    where = f"{_HOUR} IN {hours}"
    statements = [f"DELETE FROM {table} WHERE hour IN {hours}" for table in ROLLUPS]
    statements += [build(where) for build in ROLLUPS.values()]
    statements += [f"DELETE FROM {table} WHERE day IN {days}" for table in DAILY_ROLLUPS]
    return statements + [_daily(table, hourly, keys, days) for table, (hourly, keys) in DAILY_ROLLUPS.items()]


def correction_statements(pending_table: str = "rollup_rebuild_pending") -> list[str]:
    """`rebuild_statements` without DELETEs (issue 14, reprice8): each rollup gets, per key of the hours (days), the
    raw aggregation minus its stored rows, so it sums to the same as a rebuild (Float64 latency sums up to float
    rounding, as with deltas; money and counts exact). A lightweight DELETE is a mutation that rewrites the row mask
    of every part holding a touched hour, run by chDB's background pool while the query waits: a 10M-event re-price
    ran 150 of them (5 per apply call), 107.6 s wall for 42.3 CPU-s, ~80% of it with no thread of the process
    running (`python -m app.bench_reprice --statements`). Idempotent (a second run finds nothing to correct); the
    caller holds the insert lock."""
    hours, days = _rebuilt_hours(pending_table)
    where = f"{_HOUR} IN {hours}"
    statements = [_corrected(table, build(where), f"hour IN {hours}") for table, build in _AGGREGATIONS.items()]
    return statements + [_corrected(table, _daily_aggregation(hourly, keys, days), f"day IN {days}")
                         for table, (hourly, keys) in DAILY_ROLLUPS.items()]


# Signed deltas (a re-price's apply, the removal of demoted copies) -----------------------------------------------
# `source` holds priced_events rows with a `sign` column: -1 for a copy leaving the raw table, +1 for one entering
# it. Each rollup gets, per key, the sum of the signed measures of those rows (rows whose measures all cancel are
# not written); the rollups are SummingMergeTree and readers sum(), so adding them gives exactly what a rebuild of
# the affected hours gives, without reading the hours' other rows or deleting rollup rows. Latency sums are
# Float64: moving an event between model_hourly keys (a new price entry) adds -x and +x, equal to a rebuild's sum up
# to float rounding; money and counts are exact.

# What a delta table keeps of a priced_events row: what finds the row again (event_id, source, ts, loaded_at) and
# every key and measure of the rollups.
DELTA_COLUMNS = (
    "event_id", "source", "ts", "loaded_at", "tags", "org", "team", "project", "user", "api_key", "feature",
    "provider", "model", "status", "pricing_status", "price_entry", "price_effective_from", *TOKENS, "cost_usd",
    "latency_ms", "ttft_ms")
_DELTA_LIST = ", ".join(f"`{name}`" for name in DELTA_COLUMNS)


def signed_rows(source: str, where: str, sign: int, extra: str = "") -> str:
    """SELECT of `source`'s rows matching `where` as delta rows (DELTA_COLUMNS, `extra` columns, then `sign`)."""
    return f"SELECT {_DELTA_LIST}{extra}, toInt8({int(sign)}) AS sign FROM {source} WHERE {where}"


def delete_subtracted(delta: str, hours: str) -> str:
    """The lightweight DELETE of exactly the priced_events rows that `delta` holds with sign -1 (`hours`: a WHERE on
    the rows' hours, which prunes by the sorting key)."""
    return (f"DELETE FROM priced_events WHERE {hours} AND (event_id, source, ts, loaded_at) IN"
            f" (SELECT event_id, source, ts, loaded_at FROM {delta} WHERE sign < 0)")


def _signed(expr: str) -> str:
    return f"if(sign > 0, {expr}, -{expr})"


_SIGNED_SPEND = (
    "toInt64(sum(sign)) AS events, toInt64(sumIf(sign, pricing_status = 'unpriced')) AS unpriced_events, "
    + ", ".join(f"sum({_signed(f'toInt128({t})')}) AS {t}" for t in TOKENS)
    + f", toDecimal128(sum({_signed('cost_usd')}), 12) AS cost_usd"
)
_SPEND_NONZERO = " OR ".join(f"{c} != 0" for c in _SPEND_COLUMNS.split(", "))


def _spend_delta(table: str, time: str, tagged: bool, source: str) -> str:
    keys = ", ".join(SPEND_KEYS)
    tag = "tag_key, tag_value, " if tagged else ""
    join = " ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value" if tagged else ""
    column = "hour" if time == _HOUR else "day"
    return (
        f"INSERT INTO {table} ({column}, {tag}{keys}, {_SPEND_COLUMNS})"
        f" SELECT {time} AS {column}, {tag}{keys}, {_SIGNED_SPEND}"
        f" FROM {source}{join} GROUP BY {column}, {tag}{keys} HAVING {_SPEND_NONZERO}{INSERT_SETTINGS}"
    )


def _model_delta(source: str) -> str:
    keys = ", ".join(_MODEL_KEYS)
    measures = _MODEL_MEASURES
    return (
        f"INSERT INTO model_hourly (hour, {keys}, {', '.join(measures)})"
        f" SELECT {_HOUR} AS hour, {keys}, toInt64(sum(sign)) AS requests,"
        " toInt64(sumIf(sign, status = 'error')) AS errors, "
        + ", ".join(f"sum({_signed(f'toInt128({t})')}) AS {t}" for t in TOKENS)
        + f", toDecimal128(sum({_signed('cost_usd')}), 12) AS cost_usd,"
        " sum(sign * ifNull(latency_ms, 0)) AS latency_ms_sum, toInt64(sumIf(sign, latency_ms IS NOT NULL))"
        " AS latency_count, sum(sign * ifNull(ttft_ms, 0)) AS ttft_ms_sum,"
        " toInt64(sumIf(sign, ttft_ms IS NOT NULL)) AS ttft_count"
        f" FROM {source} GROUP BY hour, {keys} HAVING " + " OR ".join(f"{m} != 0" for m in measures)
        + INSERT_SETTINGS
    )


def delta_statements(source: str) -> list[str]:
    """Statements adding to every rollup of priced_events the signed rows of `source` (see above)."""
    day = "toDateTime(toStartOfDay(ts), 'UTC')"
    return [
        _spend_delta("spend_hourly", _HOUR, False, source),
        _spend_delta("spend_hourly_tags", _HOUR, True, source),
        _model_delta(source),
        _spend_delta("spend_daily", day, False, source),
        _spend_delta("spend_daily_tags", day, True, source),
    ]
