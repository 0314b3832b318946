-- Token counters of the rollups become Int128: a rollup row sums every event of its hour or day and key, and
-- SummingMergeTree adds rows on merge, so an Int64 wrapped after 9.2e18 tokens in one row (9.2M events at the
-- contract's maximum of 10^12 tokens per field, tokenmeter/events.py MAX_TOKENS). Int128 cannot wrap: 10^12 x
-- 2^64 events < 2^127. The views sum in Int128 too (MODIFY QUERY: no moment without a view; their sums of
-- UInt64 wrapped on a stored 2^64-1). Readers sum Int128 and return UInt64 through accurateCast (an error,
-- never a wrapped number, beyond 1.8e19). A mutation rewrites the rollups once; MODIFY COLUMN to the same type
-- and MODIFY QUERY to the same query are no-ops, so this re-applies safely. warehouse/rollups.py rebuilds
-- with the same aggregations.
ALTER TABLE spend_hourly
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN cached_input_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128;

ALTER TABLE spend_hourly_tags
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN cached_input_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128;

ALTER TABLE model_hourly
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN cached_input_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128;

ALTER TABLE spend_daily
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN cached_input_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128;

ALTER TABLE spend_daily_tags
    MODIFY COLUMN input_tokens Int128,
    MODIFY COLUMN cached_input_tokens Int128,
    MODIFY COLUMN cache_write_tokens Int128,
    MODIFY COLUMN output_tokens Int128,
    MODIFY COLUMN reasoning_tokens Int128;

ALTER TABLE spend_hourly_mv MODIFY QUERY
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    toInt64(count()) AS events,
    toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events,
    sum(toInt128(input_tokens)) AS input_tokens,
    sum(toInt128(cached_input_tokens)) AS cached_input_tokens,
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
GROUP BY hour, org, team, project, user, api_key, feature, provider, model, pricing_status;

ALTER TABLE spend_hourly_tags_mv MODIFY QUERY
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    tag_key, tag_value,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    toInt64(count()) AS events,
    toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events,
    sum(toInt128(input_tokens)) AS input_tokens,
    sum(toInt128(cached_input_tokens)) AS cached_input_tokens,
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value
GROUP BY hour, tag_key, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status;

ALTER TABLE model_hourly_mv MODIFY QUERY
SELECT
    toDateTime(toStartOfHour(ts), 'UTC') AS hour,
    org, team, provider, model, price_entry, price_effective_from,
    toInt64(count()) AS requests,
    toInt64(countIf(status = 'error')) AS errors,
    sum(toInt128(input_tokens)) AS input_tokens,
    sum(toInt128(cached_input_tokens)) AS cached_input_tokens,
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd,
    sum(ifNull(latency_ms, 0)) AS latency_ms_sum,
    toInt64(count(latency_ms)) AS latency_count,
    sum(ifNull(ttft_ms, 0)) AS ttft_ms_sum,
    toInt64(count(ttft_ms)) AS ttft_count
FROM priced_events
GROUP BY hour, org, team, provider, model, price_entry, price_effective_from;

ALTER TABLE spend_daily_mv MODIFY QUERY
SELECT
    toDateTime(toStartOfDay(ts), 'UTC') AS day,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    toInt64(count()) AS events,
    toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events,
    sum(toInt128(input_tokens)) AS input_tokens,
    sum(toInt128(cached_input_tokens)) AS cached_input_tokens,
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
GROUP BY day, org, team, project, user, api_key, feature, provider, model, pricing_status;

ALTER TABLE spend_daily_tags_mv MODIFY QUERY
SELECT
    toDateTime(toStartOfDay(ts), 'UTC') AS day,
    tag_key, tag_value,
    org, team, project, user, api_key, feature, provider, model, pricing_status,
    toInt64(count()) AS events,
    toInt64(countIf(pricing_status = 'unpriced')) AS unpriced_events,
    sum(toInt128(input_tokens)) AS input_tokens,
    sum(toInt128(cached_input_tokens)) AS cached_input_tokens,
    sum(toInt128(cache_write_tokens)) AS cache_write_tokens,
    sum(toInt128(output_tokens)) AS output_tokens,
    sum(toInt128(reasoning_tokens)) AS reasoning_tokens,
    toDecimal128(sum(cost_usd), 12) AS cost_usd
FROM priced_events
ARRAY JOIN mapKeys(tags) AS tag_key, mapValues(tags) AS tag_value
GROUP BY day, tag_key, tag_value, org, team, project, user, api_key, feature, provider, model, pricing_status;
