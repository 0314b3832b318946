-- One row per priced LLM call: every field of tokenmeter.events.PricedEvent, flattened.
-- Unset optional strings are stored as '' (not NULL) so they group and filter cheaply.
-- Money is Decimal(18,12): the pricing stage quantizes to 1e-12 dollars, so nothing is rounded here.
--
-- Engine: ReplacingMergeTree(loaded_at), partitioned by month of the event time. The sorting key is a
-- function of the event alone and ends in event_id, so two copies of one event land in the same part
-- range and a merge keeps one. That is only a safety net: the loader inserts each event_id once
-- (anti-join through a staging table), which keeps plain sum() queries and the rollup exact without FINAL.
CREATE TABLE IF NOT EXISTS priced_events
(
    event_id String,
    ts DateTime64(3, 'UTC'),
    source LowCardinality(String),
    provider LowCardinality(String),
    model LowCardinality(String),
    operation LowCardinality(String),
    status LowCardinality(String),
    org String,
    team String,
    project String,
    user String,
    api_key String,
    feature String,
    route String,
    tags Map(String, String),
    input_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,
    output_tokens UInt64,
    reasoning_tokens UInt64,
    latency_ms Nullable(Float64),
    ttft_ms Nullable(Float64),
    batch Bool,
    service_tier LowCardinality(String),
    tokens_source LowCardinality(String),
    cost_usd Decimal(18, 12),
    cost_breakdown Map(String, Decimal(18, 12)),
    pricing_status LowCardinality(String),
    unpriced_reason String,
    price_entry String,
    price_effective_from String,
    catalog_version String,
    price_override String,
    priced_at Nullable(DateTime64(3, 'UTC')),
    loaded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (toStartOfHour(ts), org, team, event_id);
