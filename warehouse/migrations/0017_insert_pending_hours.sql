-- The loader's crash marker (warehouse/store.py `_insert_new`): the hours of an INSERT into priced_events are
-- written here before it and deleted after it, so a kill inside it (raw rows stored, rollup rows not) is healed
-- on the next open like a half-done re-price (warehouse/reprice.py `heal_pending_hours` reads this table and
-- rollup_rebuild_pending). It is written and deleted on every insert: as a key-value table a delete is a key
-- delete (~5 ms CPU), where rollup_rebuild_pending's lightweight MergeTree delete cost ~80 ms per 20,000-row
-- insert and grows with its parts (issue 14). Re-price keeps using rollup_rebuild_pending.
CREATE TABLE IF NOT EXISTS rollup_insert_pending
(
    hour DateTime('UTC')
)
ENGINE = EmbeddedRocksDB
PRIMARY KEY hour;
