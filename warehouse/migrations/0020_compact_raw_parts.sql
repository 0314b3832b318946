-- The loader's raw parts as one file each (issue 14, fast20). An insert of a 100,000-row window writes ~28 MB
-- (uncompressed) into priced_events, over the 10 MiB default at which MergeTree writes a Wide part: one .bin and
-- one marks file per column and subcolumn, ~100 files created per insert. A Compact part keeps all columns in one
-- data file. Measured on chDB (docs/warehouse.md, fast20): the store of a 100,000-row window 7.3 -> 5.5 us of CPU
-- per row, the kernel's file creation half of it. Parts merged past 128 MiB (~450,000 rows) are Wide as before,
-- so large parts read column by column as they did. A standard MergeTree setting (not ClickHouse Cloud's packed
-- parts, loader8); it changes how parts are laid out, never which rows are stored.
ALTER TABLE priced_events MODIFY SETTING min_bytes_for_wide_part = 134217728;
