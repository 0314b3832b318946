-- Re-pricing history corrects the rollup with signed rows: for each re-priced event it inserts the
-- negation of the stored row's contribution, and the materialized view adds the new row. Counters must
-- therefore be signed (cost is already a signed Decimal). Readers cast the sums back to UInt64: a correct
-- rollup never sums below zero. MODIFY COLUMN to the same type is a no-op, so this re-applies safely.
ALTER TABLE spend_hourly
    MODIFY COLUMN events Int64,
    MODIFY COLUMN unpriced_events Int64,
    MODIFY COLUMN input_tokens Int64,
    MODIFY COLUMN cached_input_tokens Int64,
    MODIFY COLUMN cache_write_tokens Int64,
    MODIFY COLUMN output_tokens Int64,
    MODIFY COLUMN reasoning_tokens Int64;
