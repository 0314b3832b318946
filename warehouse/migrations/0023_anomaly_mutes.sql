-- The mute state per kind and scope, as the detector keeps it: a mute or unmute (tokenmeter.anomaly-acks) applies to
-- the (kind, scope) of the anomaly it was clicked on, and the newest of them by `at` wins. anomaly_acks keeps one row
-- per anomaly id (its newest record), so an ack after a mute removed the mute from the warehouse while the detector
-- kept the kind silent (walk31); this table keeps every mute and unmute, the newest per (kind, scope).
CREATE TABLE IF NOT EXISTS anomaly_mutes
(
    kind String,
    scope_dim String,
    scope_value String,
    action LowCardinality(String),
    by String,
    anomaly_id String,
    mute_until Nullable(DateTime64(3, 'UTC')),
    at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(at)
ORDER BY (kind, scope_dim, scope_value);

CREATE MATERIALIZED VIEW IF NOT EXISTS anomaly_mutes_mv TO anomaly_mutes AS
SELECT kind, scope_dim, scope_value, action, by, anomaly_id, mute_until, at
FROM anomaly_acks
WHERE action IN ('mute', 'unmute');

-- What the acks table still holds from before (an ack written after a mute has replaced that mute there: lost).
INSERT INTO anomaly_mutes (kind, scope_dim, scope_value, action, by, anomaly_id, mute_until, at)
SELECT kind, scope_dim, scope_value, action, by, anomaly_id, mute_until, at
FROM anomaly_acks FINAL
WHERE action IN ('mute', 'unmute');
