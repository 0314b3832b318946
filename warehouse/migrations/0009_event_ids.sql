-- Dedupe keys: every stored event_id, whatever its ts, in a key-value table (EmbeddedRocksDB: point lookups by
-- key, so checking a batch costs the same at 1M or 100M stored events). Kept by a view on priced_events, so a
-- row and its key are written by the same INSERT. The loader stores only staged rows whose event_id is not here
-- (warehouse/store.py); before this table it looked only inside the batch's [min ts, max ts], so an id re-sent
-- with another ts was stored and counted twice. `ts` is the stored row's, for pruning keys of expired rows.
-- The view is created before the backfill, so nothing inserted meanwhile is missed (a key written twice is one).
CREATE TABLE IF NOT EXISTS priced_event_ids
(
    event_id String,
    ts DateTime64(3, 'UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY event_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS priced_event_ids_mv TO priced_event_ids AS
SELECT event_id, ts FROM priced_events;

INSERT INTO priced_event_ids (event_id, ts) SELECT event_id, ts FROM priced_events;
