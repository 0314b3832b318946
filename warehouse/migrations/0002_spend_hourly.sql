-- Hourly rollup for dashboards, kept by a materialized view on inserts into priced_events.
-- SummingMergeTree folds rows with the same key on merge; readers always use sum() ... GROUP BY,
-- so unmerged parts give the same answer. The loader inserts each event once, so the view only
-- ever sees new rows and the rollup equals the raw table.
CREATE TABLE IF NOT EXISTS spend_hourly
(
    hour DateTime('UTC'),
    org String,
    team String,
    project String,
    user String,
    api_key String,
    feature String,
    provider LowCardinality(String),
    model LowCardinality(String),
    pricing_status LowCardinality(String),
    events UInt64,
    unpriced_events UInt64,
    input_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64,
    cost_usd Decimal(38, 12)
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (hour, org, team, project, user, api_key, feature, provider, model, pricing_status);

CREATE MATERIALIZED VIEW IF NOT EXISTS spend_hourly_mv TO spend_hourly AS
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    count() AS events,
    countIf(pricing_status = 'unpriced') AS unpriced_events,
    sum(input_tokens) AS input_tokens,
    sum(cached_input_tokens) AS cached_input_tokens,
    sum(cache_write_tokens) AS cache_write_tokens,
    sum(output_tokens) AS output_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
GROUP BY hour, org, team, project, user, api_key, feature, provider, model, pricing_status;
