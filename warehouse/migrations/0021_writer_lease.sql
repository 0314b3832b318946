-- One writer per ClickHouse server (left23, warehouse/writer_lease.py): a writer (the loader, `dedup reapply`,
-- `reprice`) claims the warehouse with a row here and renews it; another is refused while a claim is live. Times are
-- the server's clock (now64), so writers on hosts with skewed clocks agree. The claim's first row decides between
-- two that overlap (earliest claimed_at, then owner), so every renewal repeats it; ReplacingMergeTree keeps each
-- owner's latest heartbeat, and the TTL drops owners a day after their last one.
CREATE TABLE IF NOT EXISTS writer_lease
(
    owner String,
    claimed_at DateTime64(6, 'UTC'),
    heartbeat DateTime64(6, 'UTC'),
    released UInt8
)
ENGINE = ReplacingMergeTree(heartbeat)
ORDER BY owner
TTL toDateTime(heartbeat) + INTERVAL 1 DAY;
