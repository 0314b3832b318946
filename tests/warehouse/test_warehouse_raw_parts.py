"""The loader's window lands in priced_events as one Compact part (issue 14, fast20: migration 0020). A Wide part
is a file per column and subcolumn; creating ~100 files per insert was a quarter of the store's CPU on chDB."""

from __future__ import annotations

from datetime import datetime, timezone

from warehouse.bench import _generate_sql

WIDE_DEFAULT = 10 * 1024 * 1024  # MergeTree's min_bytes_for_wide_part


def test_a_window_above_the_wide_default_is_written_as_one_compact_part(wh):
    end = datetime(2025, 3, 20, tzinfo=timezone.utc)  # one month: one partition, so one part for the insert
    wh.backend.command("SYSTEM STOP MERGES priced_events")
    try:
        wh.backend.command(_generate_sql(0, 50_000, 50_000, end, 2).replace("'bench-'", "'raw-parts-'"))
        parts = wh.backend.query_arrow(
            "SELECT part_type, rows, data_uncompressed_bytes FROM system.parts WHERE database = currentDatabase()"
            " AND table = 'priced_events' AND active AND partition = '202503'").to_pylist()
    finally:
        wh.backend.command("SYSTEM START MERGES priced_events")
    assert [(p["part_type"], p["rows"]) for p in parts] == [("Compact", 50_000)]
    assert parts[0]["data_uncompressed_bytes"] > WIDE_DEFAULT  # a Wide part under MergeTree's default


def test_the_setting_is_on_the_table(wh):
    create = wh.backend.query_arrow("SELECT create_table_query FROM system.tables WHERE database = currentDatabase()"
                                    " AND name = 'priced_events'").column(0)[0].as_py()
    assert "min_bytes_for_wide_part = 134217728" in create
