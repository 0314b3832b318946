-- Hours of `spend_hourly` a re-price is rebuilding from the raw table. A row is written before the raw
-- rows change and removed after the rollup of that hour is rebuilt, so a row still here on open means a
-- re-price stopped half-way: the owner rebuilds those hours before anything else (see warehouse.reprice).
CREATE TABLE IF NOT EXISTS rollup_rebuild_pending
(
    hour DateTime('UTC')
)
ENGINE = MergeTree
ORDER BY hour;
