"""A process death right after a chosen warehouse write, for the crash-and-heal tests of re-price and dedup, the
emptying of their module's one warehouse between tests, and the rebuild from raw they compare the rollups with."""
from __future__ import annotations

from decimal import Decimal


class SimulatedCrash(RuntimeError):
    pass


def crash_after_statement(monkeypatch, backend, prefix: str) -> None:
    """From now on `backend.command` raises SimulatedCrash right after running a statement that starts with `prefix`
    (the write itself is done, as when the process dies between two statements); `monkeypatch.undo()` ends it."""
    real_command = backend.command

    def crashing_command(sql, *args, **kwargs):
        result = real_command(sql, *args, **kwargs)
        if sql.startswith(prefix):
            raise SimulatedCrash(prefix)
        return result

    monkeypatch.setattr(backend, "command", crashing_command)


def empty_every_table(warehouse) -> None:
    """Every table of `warehouse` emptied, as a freshly opened one is (the applied migrations kept): staging tables a
    crash left behind included, so no test sees another's rows or parts."""
    tables = warehouse.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine NOT LIKE '%View'"
        " AND name != 'schema_migrations'").to_dicts()
    for table in tables:
        warehouse.backend.command(f"TRUNCATE TABLE {table['name']}")


def raw_and_rollup_totals(wh, org: str) -> tuple[tuple, tuple]:
    """(events, cost) of `org` in the raw table and in the hourly rollup: equal unless a crash or a second writer
    left the rollup short or counted an insert twice."""
    raw = wh.query("SELECT count() AS n, toDecimal128(sum(cost_usd), 12) AS cost FROM priced_events "
                   "WHERE org = {org:String}", {"org": org}).to_dicts()[0]
    rollup = wh.query("SELECT sum(events) AS n, toDecimal128(sum(cost_usd), 12) AS cost FROM spend_hourly "
                      "WHERE org = {org:String}", {"org": org}).to_dicts()[0]
    return (raw["n"], Decimal(raw["cost"])), (rollup["n"] or 0, Decimal(rollup["cost"] or 0))


ROLLUP_TABLES = ("spend_hourly", "spend_hourly_tags", "model_hourly", "spend_daily", "spend_daily_tags")


def write_rebuilt_rollups(wh, org: str) -> str:
    """What a rebuild of every rollup from raw writes for `org` (the statements of `warehouse.rollups.
    rebuild_statements`), written into empty `rebuilt_<rollup>` copies instead of over the rollups: no lightweight
    DELETE of raw or rollup rows to wait for (a heal of every hour of `org` as the check cost ~0.6 CPU-s a test in
    test_reprice_swap.py, suite26). Returns the table prefix to read them with."""
    from warehouse.rollups import DAILY_ROLLUPS, ROLLUPS, _daily

    for table in ROLLUP_TABLES:
        wh.backend.command(f"CREATE TABLE IF NOT EXISTS rebuilt_{table} AS {table}")
        wh.backend.command(f"TRUNCATE TABLE rebuilt_{table}")
    for table, build in ROLLUPS.items():
        statement = build("org = {org:String}")
        assert statement.startswith(f"INSERT INTO {table} ")
        wh.backend.command(f"INSERT INTO rebuilt_{statement[len('INSERT INTO '):]}", {"org": org})
    days = "(SELECT DISTINCT toDateTime(toStartOfDay(hour), 'UTC') FROM rebuilt_spend_hourly)"
    for table, (hourly, keys) in DAILY_ROLLUPS.items():
        wh.backend.command("INSERT INTO rebuilt_" + _daily(table, f"rebuilt_{hourly}", keys, days)[len("INSERT INTO "):])
    return "rebuilt_"
