-- Dead letters as the loader reads them from tokenmeter.deadletter: when, which stage, which source (a collector's
-- dialect, else the stage), why, and the payload's SHA-256 (the payload itself stays on the topic). Source
-- completeness (warehouse/completeness.py) counts them per source and hour. A letter read twice (at-least-once)
-- is one row: the key is (stage, topic, partition, offset, payload hash, at).
CREATE TABLE IF NOT EXISTS dead_letters
(
    at DateTime64(3, 'UTC'),
    stage LowCardinality(String),
    source LowCardinality(String),
    reason String,
    topic String,
    partition Int64,
    offset Int64,
    payload_sha256 String,
    loaded_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYYYYMM(at)
ORDER BY (source, at, stage, topic, partition, offset, payload_sha256)
TTL toDateTime(at) + INTERVAL 400 DAY;
