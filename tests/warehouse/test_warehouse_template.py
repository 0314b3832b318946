"""The copied empty warehouse the test fixtures use (tests/warehouse_template.py) is what the migrations create, and
each copy is a warehouse of its own."""

from __future__ import annotations

from tokenmeter.settings import Settings
from warehouse import open_warehouse
from warehouse_template import empty_warehouse_in

TABLES = ("SELECT name, engine, create_table_query FROM system.tables WHERE database = currentDatabase() "
          "ORDER BY name")


def _schema(settings: Settings) -> tuple[list, list]:
    with open_warehouse(settings, writer=True, serve=False) as wh:
        tables = wh.query(TABLES).rows()
        versions = wh.query("SELECT version, name FROM schema_migrations ORDER BY version").rows()
    return tables, versions


def test_a_copy_has_the_schema_the_migrations_create_and_is_independent(tmp_path, tmp_path_factory, make_event):
    fresh = _schema(Settings(data_dir=tmp_path / "fresh", raw_retention_days=3650))  # migrated here
    first = Settings(data_dir=empty_warehouse_in(tmp_path / "first", tmp_path_factory), raw_retention_days=3650)
    assert _schema(first) == fresh  # every table and view with its statement (and TTL), every migration recorded
    assert len(fresh[0]) > 30

    with open_warehouse(first, writer=True, serve=False) as wh:
        assert wh.insert_priced([make_event("t-1", "template-org")]) == 1
    second = Settings(data_dir=empty_warehouse_in(tmp_path / "second", tmp_path_factory), raw_retention_days=3650)
    with open_warehouse(second, writer=True, serve=False) as wh:
        assert wh.query("SELECT count() AS n FROM priced_events").rows() == [(0,)]  # the first copy's row is not here
        assert wh.insert_priced([make_event("t-1", "template-org")]) == 1  # nor its dedupe key
    with open_warehouse(first, writer=True, serve=False) as wh:
        assert wh.query("SELECT count() AS n FROM priced_events").rows() == [(1,)]
        assert wh.query("SELECT toInt64(sum(events)) AS n FROM spend_hourly").rows() == [(1,)]  # its views work
