-- Cross-source dedup under a changed source preference (warehouse/dedup.py). A copy of a call that is not counted
-- (a loser, or a stored copy replaced by a preferred one) was only recorded in `cross_source_duplicates` (ids,
-- cost), so a later preference could not count it: its row was gone. `cross_source_copies` keeps the full row
-- of every copy not counted (same columns as priced_events; one row per event_id and source), so a loser that
-- now ranks above its call's winner can be counted again: when it is delivered again, or by `tokenmeter dedup
-- reapply --from <date>`. Losers recorded before this migration have no row here and cannot be revived (the
-- command counts them). A migration that adds a column to priced_events must add it here too.
CREATE TABLE IF NOT EXISTS cross_source_copies AS priced_events
ENGINE = ReplacingMergeTree(loaded_at)
PARTITION BY toYYYYMM(ts)
ORDER BY (event_id, source);
