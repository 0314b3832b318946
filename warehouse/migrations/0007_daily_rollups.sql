-- Daily rollups for whole-day windows (the dashboard's date ranges): the hourly rollups keep a row per user,
-- key and hour, which at 10M events a month is about half the raw table; a day folds 24 of them.
-- Same dimensions and signed measures as spend_hourly / spend_hourly_tags, kept by views on priced_events.
-- A rebuild (re-price, backfill) recomputes the days of the pending hours from the rebuilt hourly rollups
-- (warehouse/rollups.py), which keep history after the raw rows expire.
CREATE TABLE IF NOT EXISTS spend_daily
(
    day DateTime('UTC'),
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
PARTITION BY toYYYYMM(day)
ORDER BY (day, org, team, project, user, api_key, feature, provider, model, pricing_status);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_daily_mv TO spend_daily AS
SELECT
    toDateTime(toStartOfDay(ts), 'UTC') AS day,
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
GROUP BY day, org, team, project, user, api_key, feature, provider, model, pricing_status;

CREATE TABLE IF NOT EXISTS spend_daily_tags
(
    day DateTime('UTC'),
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
PARTITION BY toYYYYMM(day)
ORDER BY (tag_key, day, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_daily_tags_mv TO spend_daily_tags AS
SELECT
    toDateTime(toStartOfDay(ts), 'UTC') AS day,
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
GROUP BY day, tag_key, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status;

-- Backfill every day of the hourly history (hours whose raw rows expired are not rebuilt, only summed up).
INSERT INTO rollup_rebuild_pending (hour)
SELECT DISTINCT hour FROM spend_hourly;
