-- Two more hourly rollups kept by materialized views on inserts into priced_events:
--   spend_hourly_tags: one row per tag key/value of an event (ARRAY JOIN over the tags map), with the same
--     dimensions and measures as spend_hourly, so "group by tag:<key>" reads a rollup too;
--   model_hourly: per model, price entry/version, org and team: requests, errors, tokens, cost, and
--     latency/ttft sums and counts for the models page.
-- Counters are signed (as spend_hourly since 0003) and both are rebuilt with spend_hourly for the hours a
-- re-price touches (warehouse/reprice.py holds the same aggregations). Existing history is backfilled by
-- marking every stored hour pending: the owner rebuilds pending hours on open, idempotently.
CREATE TABLE IF NOT EXISTS spend_hourly_tags
(
    hour DateTime('UTC'),
    tag_key String,
    tag_value String,
    org String,
    team String,
    project String,
    user String,
    api_key String,
    feature String,
    provider LowCardinality(String),
    model LowCardinality(String),
    pricing_status LowCardinality(String),
    events Int64,
    unpriced_events Int64,
    input_tokens Int64,
    cached_input_tokens Int64,
    cache_write_tokens Int64,
    output_tokens Int64,
    reasoning_tokens Int64,
    cost_usd Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (tag_key, hour, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_hourly_tags_mv TO spend_hourly_tags AS
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    tag_key, tag_value,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    toInt64(count()) AS events,
    toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events,
    toInt64(sum(input_tokens)) AS input_tokens,
    toInt64(sum(cached_input_tokens)) AS cached_input_tokens,
    toInt64(sum(cache_write_tokens)) AS cache_write_tokens,
    toInt64(sum(output_tokens)) AS output_tokens,
    toInt64(sum(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value
GROUP BY hour, tag_key, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status;

CREATE TABLE IF NOT EXISTS model_hourly
(
    hour DateTime('UTC'),
    org String,
    team String,
    provider LowCardinality(String),
    model LowCardinality(String),
    price_entry String,
    price_effective_from String,
    requests Int64,
    errors Int64,
    input_tokens Int64,
    cached_input_tokens Int64,
    cache_write_tokens Int64,
    output_tokens Int64,
    reasoning_tokens Int64,
    cost_usd Decimal(38, 12),
    latency_ms_sum Float64,
    latency_count Int64,
    ttft_ms_sum Float64,
    ttft_count Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, provider, model, org, team, price_entry, price_effective_from);

CREATE MATERIALIZED VIEW IF NOT EXISTS model_hourly_mv TO model_hourly AS
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    org, team, provider, model, price_entry, price_effective_from,
    toInt64(count()) AS requests,
    toInt64(countIf(status = 'error')) AS errors,
    toInt64(sum(input_tokens)) AS input_tokens,
    toInt64(sum(cached_input_tokens)) AS cached_input_tokens,
    toInt64(sum(cache_write_tokens)) AS cache_write_tokens,
    toInt64(sum(output_tokens)) AS output_tokens,
    toInt64(sum(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd,
    sum(ifNull(latency_ms, 0)) AS latency_ms_sum,
    toInt64(count(latency_ms)) AS latency_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    toInt64(count(ttft_ms)) AS ttft_count
FROM priced_events
GROUP BY hour, org, team, provider, model, price_entry, price_effective_from;

INSERT INTO rollup_rebuild_pending (hour)
SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC') FROM priced_events;
