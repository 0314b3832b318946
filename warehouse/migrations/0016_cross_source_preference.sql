-- Cross-source dedup by source preference (warehouse/dedup.py). A copy of a call that ranks higher than the
-- stored one (TOKENMETER_DEDUP_SOURCE_PREFERENCE), or a copy that links two stored events, replaces the stored
-- loser: the loser's raw row is deleted and the rollups of its hours rebuilt, like a re-price.
-- `cross_source_demotions_pending` is the intent log of that replacement: a loser is written here (and its
-- `cross_source_duplicates` record, with replaced = 1) before the winner is stored, and removed once its raw row
-- is gone and its hours rebuilt. A writer that opens the warehouse finishes what is left here, so a crash between
-- the two never leaves a call counted twice. (Numbered 0016: 0015 is left to a parallel branch.)
CREATE TABLE IF NOT EXISTS cross_source_demotions_pending
(
    event_id String,
    source String,
    ts DateTime64(3, 'UTC')
)
ENGINE = MergeTree
ORDER BY (event_id, source);

ALTER TABLE cross_source_duplicates ADD COLUMN IF NOT EXISTS replaced UInt8 DEFAULT 0;
