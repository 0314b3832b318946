"""Migrations (applied, idempotent), rollup rebuilds equal their materialized views, retention TTL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tokenmeter.settings import Settings
from warehouse.backends import WarehouseError
from warehouse.retention import apply_retention, current_retention_days
from warehouse.rollups import DAILY_ROLLUPS, ROLLUPS, rebuild_statements
from warehouse.schema import apply_migrations, load_migrations

TABLES = ("priced_events", "spend_hourly", "spend_hourly_tags", "model_hourly", "spend_daily", "spend_daily_tags", "alerts", "alert_deliveries",
          "budget_status", "anomalies", "anomaly_acks", "provider_usage", "price_catalog_history",
          "rollup_rebuild_pending", "schema_migrations", "priced_event_ids")


@pytest.fixture(scope="module")
def warehouse_settings(tmp_path_factory) -> Settings:
    """A warehouse the migrations create here (not the run's copied one, tests/warehouse_template.py): this file
    tests them."""
    return Settings(data_dir=tmp_path_factory.mktemp("schema-data"), load_flush_seconds=0.2, raw_retention_days=3650)


def test_migrations_applied_once_and_idempotent(wh):
    names = set(wh.query("SELECT name FROM system.tables WHERE database = currentDatabase()")["name"].to_list())
    assert set(TABLES) <= names
    assert {"spend_hourly_mv", "spend_hourly_tags_mv", "model_hourly_mv", "spend_daily_mv", "spend_daily_tags_mv"} <= names
    versions = wh.query("SELECT version FROM schema_migrations ORDER BY version")["version"].to_list()
    assert versions == [m.version for m in load_migrations()]
    assert apply_migrations(wh.backend) == []  # nothing left to apply
    for migration in load_migrations():  # every statement can run twice (a crash before recording the version)
        for statement in migration.statements:
            if not statement.lstrip().upper().startswith("INSERT"):
                wh.backend.command(statement)

KEYS = ("tag_key", "tag_value", "org", "team", "project", "user", "api_key", "feature", "provider", "model",
        "pricing_status", "price_entry", "price_effective_from")


def _rollup_rows(wh, table, org):
    time = "day" if table in DAILY_ROLLUPS else "hour"
    columns = [c for c in wh.query(f"SELECT * FROM {table} LIMIT 0").columns if c != time]
    keys = [c for c in columns if c in KEYS]
    measures = [c for c in columns if c not in keys]
    select = ", ".join([time] + keys + [f"sum({m}) AS {m}" for m in measures])
    group = ", ".join([time] + keys)
    return wh.query(f"SELECT {select} FROM {table} WHERE org = {{org:String}} GROUP BY {group} ORDER BY {group}",
                    {"org": org}).rows()


def test_rebuild_of_every_rollup_equals_its_view(wh, org, make_event):
    events = []
    for i in range(12):
        event = make_event(f"{org}-{i}", org, team=f"t{i % 3}", cost=f"0.00{i + 1}", model=("gpt-4o", "o3")[i % 2],
                           ts=f"2025-03-01T{10 + i % 2}:{i:02d}:00Z", priced=i != 5)
        event["attribution"]["tags"] = {"env": ("prod", "dev")[i % 2], **({"pr": str(i)} if i % 4 == 0 else {})}
        event["status"] = "error" if i == 7 else "ok"
        event["ttft_ms"] = None if i % 3 else 20.0 + i
        events.append(event)
    wh.insert_priced(events)
    by_view = {table: _rollup_rows(wh, table, org) for table in [*ROLLUPS, *DAILY_ROLLUPS]}
    assert all(by_view.values())
    wh.backend.command("INSERT INTO rollup_rebuild_pending (hour) VALUES ('2025-03-01 10:00:00'), ('2025-03-01 11:00:00')")
    from warehouse.reprice import heal_pending_hours

    with wh._insert_lock:
        assert heal_pending_hours(wh.backend) == 2
    for table in by_view:
        assert _rollup_rows(wh, table, org) == by_view[table], table
    # An hour whose raw rows expired keeps its rollups (nothing to rebuild from), and its day is re-summed.
    wh.backend.command("INSERT INTO spend_hourly (hour, org, team, events, cost_usd)"
                       " VALUES ('2020-01-01 05:00:00', {o:String}, 'gone', 3, 1.5)", {"o": org})
    wh.backend.command("INSERT INTO rollup_rebuild_pending (hour) VALUES ('2020-01-01 05:00:00')")
    with wh._insert_lock:
        heal_pending_hours(wh.backend)
    kept = wh.spend(["team"], since="2020-01-01", until="2020-01-02", filters={"org": [org]})  # from spend_daily
    assert kept.rows() == [("gone", 3, 0, 0, 0, 0, 0, 0, Decimal("1.5"))]
    assert len(rebuild_statements()) == 2 * (len(ROLLUPS) + len(DAILY_ROLLUPS))


def test_retention_ttl_is_set_idempotently_and_rollups_keep_history(wh, org, make_event):
    assert current_retention_days(wh.backend) == 3650  # from the module's settings, applied on open
    engine = wh.query("SELECT engine_full FROM system.tables WHERE name = 'priced_events'")["engine_full"][0]
    assert "TTL toDateTime(ts) + toIntervalDay(3650)" in engine
    assert apply_retention(wh.backend, 3650) is False  # unchanged: no ALTER
    with pytest.raises(WarehouseError, match="RAW_RETENTION_DAYS"):
        apply_retention(wh.backend, 40000)
    # Older than the horizon: not stored at all, in the raw table or the rollups.
    # (the contract refuses events before 2020, so the row is built from a valid event and then aged)
    from warehouse.schema import event_to_row

    row = event_to_row(make_event(f"{org}-old", org))
    row["ts"] = datetime.now(timezone.utc) - timedelta(days=3651)
    assert wh.insert_rows([row]) == 0
    assert wh.spend([], filters={"org": [org]})["events"][0] == 0
    try:  # a changed setting is applied (a shorter one would expire this module's 2025 rows)
        assert apply_retention(wh.backend, 3651) is True
        assert current_retention_days(wh.backend) == 3651
    finally:
        apply_retention(wh.backend, 3650)


def test_the_stored_money_columns_hold_what_the_shared_limit_says(wh):
    """cap33: the worker letters a call at or above MAX_STORED_COST_USD (tokenmeter/stored_money.py) because the
    warehouse's money columns cannot hold it: the migrations' column types and that limit are one fact."""
    from warehouse.schema import COST_TYPE
    from tokenmeter.stored_money import COST_PRECISION, COST_SCALE, MAX_STORED_COST_PICO, MAX_STORED_COST_USD

    types = dict(wh.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = "
                          "'priced_events' AND name IN ('cost_usd', 'cost_breakdown')").rows())
    money = f"Decimal({COST_PRECISION}, {COST_SCALE})"
    assert types == {"cost_usd": money, "cost_breakdown": f"Map(String, {money})"}
    assert (COST_TYPE.precision, COST_TYPE.scale) == (COST_PRECISION, COST_SCALE)
    assert MAX_STORED_COST_USD == Decimal(10) ** (COST_PRECISION - COST_SCALE) == MAX_STORED_COST_PICO / 10**12
    largest = Decimal(MAX_STORED_COST_PICO - 1).scaleb(-COST_SCALE)  # 999999.999999999999: the largest it holds
    assert wh.query(f"SELECT toString(toDecimal128('{largest}', {COST_SCALE})::{money}) AS v").rows() == [(str(largest),)]


def test_an_upgrade_logs_the_migrations_it_applies(wh, caplog):
    """ops34: the current loader started on a warehouse of an older release (migrations up to 0019) applied 0020-0025
    without a word in its log: an operator upgrading could not tell whether, when or which schema changes ran. The
    newest migration's record is removed here, so the open applies it again (every statement runs twice safely:
    test_migrations_applied_once_and_idempotent)."""
    newest = load_migrations()[-1]
    wh.backend.command("DELETE FROM schema_migrations WHERE version = {v:UInt32}", {"v": newest.version})
    with caplog.at_level("INFO", logger="warehouse.schema"):
        assert apply_migrations(wh.backend) == [newest.version]
    said = [r.getMessage() for r in caplog.records if r.name == "warehouse.schema"]
    assert any(f"{newest.version:04d}_{newest.name}" in line and "applied" in line for line in said), said
    caplog.clear()
    with caplog.at_level("INFO", logger="warehouse.schema"):
        assert apply_migrations(wh.backend) == []
    assert not [r for r in caplog.records if r.name == "warehouse.schema" and r.levelno >= 20]  # quiet when current
