-- Cross-source dedup (warehouse/dedup.py). One LLM call seen by a gateway log, an OTel span and an SDK event
-- arrives as three events with three event_ids. Events carry correlation ids (tokenmeter.events.Correlation);
-- the loader turns them into call keys (`response:<provider>:<id>`, `request:<id>`, `span:<trace>:<span>`),
-- stored with the row. `call_keys` maps each key to the event stored for the call, written by a view on
-- priced_events, so a row and its keys are written by the same INSERT (like priced_event_ids, 0009). The loader
-- stores an event only if none of its keys belongs to another stored event; a skipped one is recorded in
-- `cross_source_duplicates` (keyed by its event_id and source: a redelivery is one row) with the event that won.
ALTER TABLE priced_events ADD COLUMN IF NOT EXISTS correlation Map(String, String);

ALTER TABLE priced_events ADD COLUMN IF NOT EXISTS call_keys Array(String);

CREATE TABLE IF NOT EXISTS call_keys
(
    key String,
    event_id String,
    source String,
    ts DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY key;

CREATE MATERIALIZED VIEW IF NOT EXISTS call_keys_mv TO call_keys AS
SELECT key, event_id, source, ts FROM priced_events ARRAY JOIN call_keys AS key;

CREATE TABLE IF NOT EXISTS cross_source_duplicates
(
    ts DateTime64(3, 'UTC'),
    duplicate_event_id String,
    duplicate_source LowCardinality(String),
    winner_event_id String,
    winner_source LowCardinality(String),
    matched_key String,
    provider LowCardinality(String),
    model LowCardinality(String),
    duplicate_cost_usd Decimal(38, 12),
    recorded_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(recorded_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (duplicate_event_id, duplicate_source);
