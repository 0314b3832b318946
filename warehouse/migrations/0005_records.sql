-- Tables filled by the loader from the record topics (contracts in tokenmeter/records.py and
-- collectors/provider_usage/common.py). Records are redelivered at least once: the Replacing engines
-- fold copies with the same key on merge, and readers pick the latest version explicitly (argMax or
-- LIMIT 1 BY), so an unmerged duplicate never shows twice. Money and amounts are Decimal, never Float.

-- Alert outbox, one row per alert id (a re-fired alert has the same id).
CREATE TABLE IF NOT EXISTS alerts
(
    id String,
    source LowCardinality(String),
    kind LowCardinality(String),
    action LowCardinality(String),
    severity LowCardinality(String),
    dedup_key String,
    title String,
    summary String,
    at DateTime64(3, 'UTC'),
    scope Map(String, String),
    budget String,
    details String,
    dashboard_url String,
    inserted_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(inserted_at)
ORDER BY id;

-- Delivery state per alert and route; the newest `at` wins.
CREATE TABLE IF NOT EXISTS alert_deliveries
(
    alert_id String,
    route LowCardinality(String),
    target String,
    status LowCardinality(String),
    attempts UInt32,
    last_error String,
    http_status UInt16,
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (alert_id, route);

-- Every enforcement record is kept: together they are the budget's history. Token budgets store token
-- counts in spend/limit_amount. Identical redelivered rows are deduplicated on read (LIMIT 1 BY).
CREATE TABLE IF NOT EXISTS budget_status
(
    budget String,
    scope Map(String, String),
    action LowCardinality(String),
    reason String,
    until Nullable(DateTime64(3, 'UTC')),
    metric LowCardinality(String),
    spend Decimal(38, 12),
    limit_amount Decimal(38, 12),
    percent Decimal(18, 2),
    period_key String,
    period_start DateTime64(3, 'UTC'),
    period_end DateTime64(3, 'UTC'),
    projected Nullable(Decimal(38, 12)),
    expected_breach_at Nullable(DateTime64(3, 'UTC')),
    updated_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(updated_at)
ORDER BY (budget, updated_at);

-- Anomalies: an ongoing one is re-published with a later end/status; the latest detected_at wins.
CREATE TABLE IF NOT EXISTS anomalies
(
    id String,
    kind LowCardinality(String),
    scope_dim LowCardinality(String),
    scope_value String,
    severity LowCardinality(String),
    observed Decimal(38, 12),
    expected Decimal(38, 12),
    expected_low Decimal(38, 12),
    expected_high Decimal(38, 12),
    unit String,
    start_at DateTime64(3, 'UTC'),
    end_at DateTime64(3, 'UTC'),
    status LowCardinality(String),
    explanation String,
    detected_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(detected_at)
ORDER BY id;

CREATE TABLE IF NOT EXISTS anomaly_acks
(
    anomaly_id String,
    kind String,
    scope_dim String,
    scope_value String,
    action LowCardinality(String),
    by String,
    note String,
    mute_until Nullable(DateTime64(3, 'UTC')),
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY anomaly_id;

-- Provider-reported usage and cost buckets (tokenmeter collect openai-usage / anthropic-usage). `id` is
-- stable per bucket and group, so a re-fetched bucket replaces the earlier fetch (newest fetched_at wins).
-- `model` is the provider's, or for OpenAI cost rows the model part of `line_item`.
CREATE TABLE IF NOT EXISTS provider_usage
(
    id String,
    provider LowCardinality(String),
    kind LowCardinality(String),
    bucket_start DateTime64(3, 'UTC'),
    bucket_end DateTime64(3, 'UTC'),
    bucket_width LowCardinality(String),
    model String,
    project_id String,
    workspace_id String,
    api_key_id String,
    user_id String,
    service_tier String,
    batch String,
    context_window String,
    input_tokens UInt64,
    cached_input_tokens UInt64,
    cache_write_tokens UInt64,
    cache_write_1h_tokens UInt64,
    output_tokens UInt64,
    requests UInt64,
    cost_usd Decimal(38, 12),
    line_item String,
    token_type String,
    cost_type String,
    description String,
    group_fields String,
    fetched_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(fetched_at)
ORDER BY id;

-- One row per catalog entry version and catalog version, written when the owner opens the warehouse with a
-- price book. Per-1M-token USD prices; NULL = the catalog does not state that price (defaults apply).
CREATE TABLE IF NOT EXISTS price_catalog_history
(
    entry String,
    provider LowCardinality(String),
    model String,
    effective_from String,
    input Nullable(Decimal(18, 9)),
    cached_input Nullable(Decimal(18, 9)),
    cache_write Nullable(Decimal(18, 9)),
    cache_write_1h Nullable(Decimal(18, 9)),
    output Nullable(Decimal(18, 9)),
    reasoning Nullable(Decimal(18, 9)),
    other_prices Map(String, Decimal(18, 9)),
    source String,
    catalog_version String,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
ORDER BY (entry, effective_from, catalog_version);
