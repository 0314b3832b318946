"""The owner's re-price applies once (issue 14, reprice9): every apply call only checks and stages its new copies,
and the end of the re-price puts them all in: a month whose every stored row was re-priced is swapped whole by
REPLACE PARTITION (no DELETE mutation of the raw table; before, each apply call deleted its old copies, a mutation of
every part holding a touched hour), other months get their copies attached and ONE DELETE of their old copies.
Stored rows and rollups are as before: one copy per event at the new price, every rollup equal to a rebuild from raw,
a crash anywhere heals, and copies staged by a killed re-price are never applied."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from app.reprice_cli import columnar_reprice_columns
from crash_support import SimulatedCrash, crash_after_statement, write_rebuilt_rollups
from streams import price_event
from test_warehouse_reprice import books, module_warehouse, rollups, wh  # noqa: F401 (fixtures)
from tokenmeter.events import Attribution, Usage, UsageEvent

pytestmark = pytest.mark.slow(seconds=70)  # rough seconds: longest files first (tests/suite_order.py)

DAY = datetime(2021, 6, 1, tzinfo=timezone.utc)  # the new book's price rise starts at noon of this day
UNTIL = datetime(2021, 7, 3, tzinfo=timezone.utc)
# (name, ts, model): every event of June changes (meter-test after the rise, meter-new unpriced -> priced); July
# holds one event outside the window, so its partition is re-priced only in part.
EVENTS = [
    ("jun-1", DAY + timedelta(hours=13), "meter-test"), ("jun-2", DAY + timedelta(days=1, hours=9), "meter-new"),
    ("jun-3", DAY + timedelta(days=2, hours=15), "meter-test"), ("jun-30", DAY + timedelta(days=29, hours=23.5),
                                                                  "meter-test"),
    ("jul-1", datetime(2021, 7, 1, 10, tzinfo=timezone.utc), "meter-test"),
    ("jul-2", datetime(2021, 7, 2, 11, tzinfo=timezone.utc), "meter-new"),
    ("jul-5", datetime(2021, 7, 5, 8, tzinfo=timezone.utc), "meter-test"),  # outside the window: untouched
]
NEW_COST = {"meter-test": D("0.0055"), "meter-new": D("0.01")}  # input 1000, output 500 at 3/5 and 10/0 per 1M


def stored_events(org: str, book) -> list[dict]:
    return [price_event(UsageEvent(
        event_id=f"{org}-{name}", ts=ts, source="test", provider="acme", model=model,
        attribution=Attribution(org=org, team="search", user=f"u{i % 2}", tags={"env": "test"} if i % 2 else {}),
        usage=Usage(input_tokens=1000, output_tokens=500), latency_ms=100.0 + i), book).to_json()
        for i, (name, ts, model) in enumerate(EVENTS)]


def reprice(wh, book, since=DAY, until=UNTIL):
    """`tokenmeter reprice`'s path (columns), one apply call per day of stored rows."""
    priced_at = datetime(2021, 8, 1, tzinfo=timezone.utc)
    return wh.reprice(since, until, reprice_fn=lambda event: price_event(event, book, priced_at),
                      reprice_columns=columnar_reprice_columns(book, priced_at))


@pytest.fixture
def per_day(monkeypatch):
    monkeypatch.setattr("warehouse.reprice_columnar.CHUNK_ROWS", 1)  # a chunk per day ...
    monkeypatch.setattr("warehouse.store.OWNER_APPLY_BATCH", 1)  # ... and an apply call per chunk


def stored(wh, org: str) -> dict[str, tuple[D, int]]:
    return {row["event_id"].removeprefix(f"{org}-"): (row["cost"], row["copies"]) for row in wh.query(
        "SELECT event_id, sum(cost_usd) AS cost, count() AS copies FROM priced_events WHERE org = {org:String}"
        " GROUP BY event_id", {"org": org}).to_dicts()}


def as_rebuilt(wh, org: str) -> bool:
    """Every rollup of `org` equals a rebuild of its hours from the raw table (written beside the rollups, which stay
    as the re-price and its heal left them)."""
    return rollups(wh, org) == rollups(wh, org, write_rebuilt_rollups(wh, org))


def expected(org: str, repriced: set[str] | None = None) -> dict[str, tuple[D, int]]:
    repriced = {name for name, _, _ in EVENTS if name != "jul-5"} if repriced is None else repriced
    return {name: (NEW_COST[model] if name in repriced else (D("0.002") if model == "meter-test" else D(0)), 1)
            for name, _, model in EVENTS}


@pytest.mark.parametrize("kind", ["chdb", "clickhouse"])
def test_a_wholly_repriced_month_is_swapped_and_the_rest_deleted_once(wh, org, tmp_path, monkeypatch, per_day, kind):
    """June (every row changes) is replaced whole on chDB; July (one row outside the window) gets its copies attached
    and one DELETE. On a ClickHouse server (another process may insert meanwhile) nothing is replaced: both months
    are attached and deleted from, still once per re-price, not once per apply call."""
    old_book, new_book = books(tmp_path, DAY)
    assert wh.insert_priced(stored_events(org, old_book)) == len(EVENTS)
    monkeypatch.setattr(wh.backend, "kind", kind)
    statements: list[str] = []
    real_command = wh.backend.command
    monkeypatch.setattr(wh.backend, "command", lambda sql, *a, **k: statements.append(sql) or real_command(sql, *a, **k))
    report = reprice(wh, new_book)
    monkeypatch.undo()
    assert report.events == report.changed == report.applied == 6
    staged = [sql for sql in statements if sql.startswith("INSERT INTO priced_events_staging_reprice_session ")]
    assert len(staged) == 6  # an apply call per day of stored rows
    swaps = [sql.split(" FROM ")[0] for sql in statements if sql.startswith("ALTER TABLE priced_events ")]
    deletes = [sql for sql in statements if sql.startswith("DELETE FROM priced_events ")]
    if kind == "chdb":
        assert swaps == ["ALTER TABLE priced_events REPLACE PARTITION ID '202106'",
                         "ALTER TABLE priced_events ATTACH PARTITION ID '202107'"]
    else:
        assert swaps == ["ALTER TABLE priced_events ATTACH PARTITION ID '202106'",
                         "ALTER TABLE priced_events ATTACH PARTITION ID '202107'"]
    assert len(deletes) == 1 and ("'202107'" in deletes[0]) and (("'202106'" in deletes[0]) == (kind != "chdb"))

    assert stored(wh, org) == expected(org)
    raw, rollup = (wh.query(f"SELECT sum(cost_usd) AS c, toInt64(sum({n})) AS n FROM {t} WHERE org = {{org:String}}",
                            {"org": org}).to_dicts()[0] for t, n in (("priced_events", "1"), ("spend_hourly", "events")))
    assert raw["c"] == rollup["c"] == report.new_total + D("0.002") and raw["n"] == rollup["n"] == len(EVENTS)
    assert as_rebuilt(wh, org)
    assert wh.query("SELECT count() AS n FROM system.tables WHERE name = 'priced_events_staging_reprice_session'"
                    ).to_dicts()[0]["n"] == 0
    again = reprice(wh, new_book)
    assert (again.changed, again.applied) == (0, 0)


def test_rows_that_arrive_or_go_between_two_apply_calls_are_kept_or_stay_gone(wh, org, tmp_path, monkeypatch, per_day):
    """Between two apply calls the owner's loader may store an event in the month being re-priced, and a staged
    event's stored row may go (a copy demoted by a preferred source): the month is then not swapped whole (the new
    event would be lost), and the gone event's staged copy is not brought back."""
    old_book, new_book = books(tmp_path, DAY)
    assert wh.insert_priced(stored_events(org, old_book)) == len(EVENTS)
    late = stored_events(f"{org}-late", old_book)[0]  # a June event stored after the plan read its day
    late["attribution"]["org"] = org
    real_stage = wh.stage_repriced_table
    calls = []

    def stage(table):
        staged = real_stage(table)
        calls.append(staged)
        if len(calls) == 1:
            assert wh.insert_priced([late]) == 1
            # jun-1's stored row goes as a demoted copy would: raw row deleted, its hour marked for a rebuild
            wh.backend.command("DELETE FROM priced_events WHERE event_id = {id:String}", {"id": f"{org}-jun-1"})
            wh.backend.command("INSERT INTO rollup_rebuild_pending (hour) VALUES (toDateTime({h:DateTime64(3, 'UTC')}, 'UTC'))",
                               {"h": DAY + timedelta(hours=13)})
        return staged

    monkeypatch.setattr(wh, "stage_repriced_table", stage)
    statements: list[str] = []
    real_command = wh.backend.command
    monkeypatch.setattr(wh.backend, "command", lambda sql, *a, **k: statements.append(sql) or real_command(sql, *a, **k))
    report = reprice(wh, new_book)
    monkeypatch.undo()
    assert calls[0] == 1 and report.changed == 6 and report.applied == 5
    assert not [sql for sql in statements if sql.startswith("ALTER TABLE priced_events REPLACE")]
    found = stored(wh, org)
    assert found.pop("late-jun-1") == (D("0.002"), 1)  # stored at its old price, as the loader stored it
    want = expected(org)
    del want["jun-1"]
    assert found == want
    assert as_rebuilt(wh, org)


# Every write of a re-price that swaps June whole and attaches July, in order; the crash test stops after each.
SESSION_STATEMENTS = (
    "INSERT INTO priced_events_staging_reprice_session",  # the first apply call's copies: nothing visible yet
    "INSERT INTO rollup_rebuild_pending", "ALTER TABLE priced_events REPLACE PARTITION",
    "ALTER TABLE priced_events ATTACH PARTITION", "DELETE FROM priced_events", "INSERT INTO spend_hourly ",
    "INSERT INTO spend_daily_tags", "TRUNCATE TABLE rollup_rebuild_pending",
)


# Healed on open after every write; healed by the next re-price after the first staged copies (which must not come
# back with it) and after the swap (the other writes heal the same way: test_warehouse_reprice's crash tests).
CRASHES = [(statement, "reopen") for statement in SESSION_STATEMENTS] + [
    (SESSION_STATEMENTS[0], "rerun"), (SESSION_STATEMENTS[2], "rerun")]


@pytest.mark.parametrize("crash_after, heal", CRASHES)
def test_a_reprice_killed_anywhere_heals(wh, org, tmp_path, monkeypatch, per_day, crash_after, heal):
    from warehouse.reprice import heal_pending_hours

    old_book, new_book = books(tmp_path, DAY)
    assert wh.insert_priced(stored_events(org, old_book)) == len(EVENTS)
    crash_after_statement(monkeypatch, wh.backend, crash_after)
    with pytest.raises(SimulatedCrash):
        reprice(wh, new_book)
    monkeypatch.undo()
    applied = crash_after not in SESSION_STATEMENTS[:2]
    if heal == "reopen":
        heal_pending_hours(wh.backend)  # what the owner runs on open, before serving or loading
        repriced = ({"jun-1", "jun-2", "jun-3", "jun-30"} if crash_after == SESSION_STATEMENTS[2] else
                    {name for name, _, _ in EVENTS if name != "jul-5"} if applied else set())
    else:
        # Re-pricing with the OLD book: copies the killed run staged must not come back with it.
        again = reprice(wh, old_book)
        assert again.events == len(EVENTS) - 1
        repriced = set()
    assert stored(wh, org) == expected(org, repriced)
    assert as_rebuilt(wh, org)
    raw, rollup = (wh.query(f"SELECT sum(cost_usd) AS c, toInt64(sum({n})) AS n FROM {t} WHERE org = {{org:String}}",
                            {"org": org}).to_dicts()[0] for t, n in (("priced_events", "1"), ("spend_hourly", "events")))
    assert raw == rollup
    assert wh.query("SELECT count() AS n FROM rollup_rebuild_pending").to_dicts()[0]["n"] == 0
