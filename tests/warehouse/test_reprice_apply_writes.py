"""What the re-price apply writes (issue 14, reprice7): the new copies and every rollup row go in without the
engines' merge pass over the inserted block (`optimize_on_insert = 0`: each INSERT writes one row per key, so the
pass folds nothing and cost about half of writing a rollup), and the identity check hashes with two fast 64-bit
hashes instead of sipHash128. The stored result is unchanged: the rollups equal a rebuild from raw, the raw table
holds one copy per event at the new price, in both apply modes (rebuild, deltas)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from streams import price_event
from test_warehouse_reprice import MODES, books, module_warehouse, priced_events, rollups, wh  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow(seconds=19)

WRITTEN = re.compile(r"^INSERT INTO (spend_hourly|spend_hourly_tags|model_hourly|spend_daily|spend_daily_tags"
                     r"|priced_events_staging_reprice_copies) ")


@pytest.mark.parametrize("mode", MODES)
def test_the_apply_writes_without_the_merge_pass_and_stores_what_it_did(wh, org, tmp_path, monkeypatch, mode):
    from warehouse.reprice import heal_pending_hours

    day = datetime(2021, 6, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    events = priced_events(org, day, old_book)
    assert wh.insert_priced(events) == len(events)
    monkeypatch.setattr("warehouse.reprice_apply.DELTA_SHARE", MODES[mode])
    statements: list[str] = []
    queries: list[str] = []
    real_command, real_query = wh.backend.command, wh.backend.query_arrow
    monkeypatch.setattr(wh.backend, "command", lambda sql, *a, **k: statements.append(sql) or real_command(sql, *a, **k))
    monkeypatch.setattr(wh.backend, "query_arrow", lambda sql, *a, **k: queries.append(sql) or real_query(sql, *a, **k))
    report = wh.reprice(day, day + timedelta(days=1), reprice_fn=lambda event: price_event(event, new_book))
    monkeypatch.undo()
    assert report.changed == report.applied >= 3

    written = [sql for sql in statements if WRITTEN.match(sql)]
    assert {WRITTEN.match(sql).group(1) for sql in written} == {  # type: ignore[union-attr]
        "spend_hourly", "spend_hourly_tags", "model_hourly", "spend_daily", "spend_daily_tags",
        "priced_events_staging_reprice_copies"}
    slow = [sql[:80] for sql in written if not sql.endswith(" SETTINGS optimize_on_insert = 0")]
    assert not slow, f"written with the merge pass on insert: {slow}"
    assert not [sql for sql in statements + queries if "sipHash128" in sql]

    stored = wh.query("SELECT event_id, count() AS copies, toString(sum(cost_usd)) AS cost FROM priced_events"
                      " WHERE org = {org:String} GROUP BY event_id", {"org": org}).to_dicts()
    assert len(stored) == len(events) and {row["copies"] for row in stored} == {1}
    after = rollups(wh, org)
    wh.backend.command("INSERT INTO rollup_rebuild_pending (hour) SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC')"
                       " FROM priced_events WHERE org = {org:String}", {"org": org})
    assert heal_pending_hours(wh.backend) >= 2
    assert rollups(wh, org) == after  # what the apply left equals a rebuild from raw


def test_a_columnar_reprice_that_changes_every_row_of_its_window_stores_each_new_price(wh, org, tmp_path):
    """Every row of [noon, next day) changes (a price rise and a model the old book lacked): the plan hands all of
    them over without filtering (reprice7), and each stored row and the rollups hold the new prices."""
    from app.reprice_cli import columnar_reprice_columns
    from warehouse.reprice import heal_pending_hours

    day = datetime(2021, 6, 1, tzinfo=timezone.utc)
    old_book, new_book = books(tmp_path, day)
    events = priced_events(org, day, old_book)
    assert wh.insert_priced(events) == len(events)
    priced_at = datetime(2021, 7, 1, tzinfo=timezone.utc)
    report = wh.reprice(day + timedelta(hours=12), day + timedelta(days=1),
                        reprice_fn=lambda event: price_event(event, new_book, priced_at),
                        reprice_columns=columnar_reprice_columns(new_book, priced_at))
    assert report.events == report.changed == report.applied == 3
    stored = {row["event_id"].removeprefix(f"{org}-"): (row["cost"], row["copies"]) for row in wh.query(
        "SELECT event_id, toString(sum(cost_usd)) AS cost, count() AS copies FROM priced_events"
        " WHERE org = {org:String} GROUP BY event_id", {"org": org}).to_dicts()}
    assert stored == {"before-noon": ("0.002", 1), "after-noon": ("0.0055", 1), "late": ("0.006", 1),
                      "new-model": ("0.01", 1), "next-day": ("0.002", 1)}
    after = rollups(wh, org)
    wh.backend.command("INSERT INTO rollup_rebuild_pending (hour) SELECT DISTINCT toDateTime(toStartOfHour(ts), 'UTC')"
                       " FROM priced_events WHERE org = {org:String}", {"org": org})
    assert heal_pending_hours(wh.backend) >= 2
    assert rollups(wh, org) == after
