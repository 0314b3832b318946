"""The hourly rollups kept by materialized views on `priced_events`, and how to rebuild an hour of each from
the raw table. The SELECTs here are the views' aggregations (migrations 0002 and 0006) over a WHERE on the
hour; a re-price (warehouse.reprice) and the backfill of a new rollup rebuild pending hours with them.
tests/warehouse/test_warehouse_rollups.py checks each rebuild gives exactly what its view wrote.
"""

from __future__ import annotations

SPEND_KEYS = ("org", "team", "project", "user", "api_key", "feature", "provider", "model", "pricing_status")
TOKENS = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")
_HOUR = "toDateTime(toStartOfHour(ts), 'UTC')"
_SPEND_MEASURES = (
    "toInt64(count()) AS events, toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events, "
    + ", ".join(f"toInt64(sum({t})) AS {t}" for t in TOKENS)
    + ", toDecimal128(sum(cost_usd), 12) AS cost_usd"
)
_SPEND_COLUMNS = "events, unpriced_events, " + ", ".join(TOKENS) + ", cost_usd"
_MODEL_KEYS = ("org", "team", "provider", "model", "price_entry", "price_effective_from")


def _spend_hourly(where: str) -> str:
    keys = ", ".join(SPEND_KEYS)
    return (
        f"INSERT INTO spend_hourly (hour, {keys}, {_SPEND_COLUMNS})"
        f" SELECT {_HOUR} AS hour, {keys}, {_SPEND_MEASURES}"
        f" FROM priced_events WHERE {where} GROUP BY hour, {keys}"
    )


def _spend_hourly_tags(where: str) -> str:
    keys = ", ".join(SPEND_KEYS)
    return (
        f"INSERT INTO spend_hourly_tags (hour, tag_key, tag_value, {keys}, {_SPEND_COLUMNS})"
        f" SELECT {_HOUR} AS hour, tag_key, tag_value, {keys}, {_SPEND_MEASURES}"
        " FROM priced_events ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value"
        f" WHERE {where} GROUP BY hour, tag_key, tag_value, {keys}"
    )


def _model_hourly(where: str) -> str:
    keys = ", ".join(_MODEL_KEYS)
    return (
        f"INSERT INTO model_hourly (hour, {keys}, requests, errors, {', '.join(TOKENS)}, cost_usd,"
        " latency_ms_sum, latency_count, ttft_ms_sum, ttft_count)"
        f" SELECT {_HOUR} AS hour, {keys}, toInt64(count()) AS requests,"
        " toInt64(countIf(status = 'error')) AS errors, "
        + ", ".join(f"toInt64(sum({t})) AS {t}" for t in TOKENS)
        + ", toDecimal128(sum(cost_usd), 12) AS cost_usd,"
        " sum(ifNull(latency_ms, 0)) AS latency_ms_sum, toInt64(count(latency_ms)) AS latency_count,"
        " sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum, toInt64(count(ttft_ms)) AS ttft_count"
        f" FROM priced_events WHERE {where} GROUP BY hour, {keys}"
    )


# table -> builder of "INSERT INTO table SELECT <the view's aggregation> FROM priced_events WHERE <where>"
ROLLUPS = {
    "spend_hourly": _spend_hourly,
    "spend_hourly_tags": _spend_hourly_tags,
    "model_hourly": _model_hourly,
}


def rebuild_statements(hours_subquery: str) -> list[str]:
    """Statements that replace every rollup's rows of the hours in `hours_subquery` (a SELECT of `hour`)
    by the aggregation of the raw rows of those hours. Idempotent; the caller holds the insert lock."""
    where = f"{_HOUR} IN {hours_subquery}"
    statements = [f"DELETE FROM {table} WHERE hour IN {hours_subquery}" for table in ROLLUPS]
    return statements + [build(where) for build in ROLLUPS.values()]
