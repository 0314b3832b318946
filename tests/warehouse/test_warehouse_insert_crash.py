"""A loader killed inside the raw INSERT (SIGKILL from a crash or `up`) can leave raw rows whose rollup rows were
never written; the replay skips them (their event ids are stored), so the rollup, which reports read, stays short
(the soak saw 2-3 events per team). The hours being written are marked first and rebuilt on the next open."""

from __future__ import annotations

from decimal import Decimal

from warehouse.reprice import heal_pending_hours

from crash_support import raw_and_rollup_totals


class KilledInsideInsert(Exception):
    pass


def _insert_killed_inside(wh, monkeypatch, events, leave_out: str) -> None:
    """`wh.insert_priced(events)` as a SIGKILL inside the raw INSERT leaves it: the raw insert ran, then
    `leave_out` (a DELETE of what that statement's views wrote but the kill lost) runs, and the insert stops there
    with its hour marker still set. The raw insert is `insert_arrow("priced_events", ...)` (the rows go straight
    from Arrow into priced_events since issue 14, loader5; before, an `INSERT INTO priced_events (...) SELECT`)."""
    real_command, real_insert = wh.backend.command, wh.backend.insert_arrow

    def killed_inside_insert(sql, *args, **kwargs):
        result = real_command(sql, *args, **kwargs)
        if sql.startswith("INSERT INTO priced_events ("):  # the raw insert, not the staging tables
            real_command(leave_out)
            raise KilledInsideInsert()
        return result

    def killed_inside_arrow_insert(table_name, table, **settings):
        real_insert(table_name, table, **settings)
        if table_name == "priced_events":
            real_command(leave_out)
            raise KilledInsideInsert()

    monkeypatch.setattr(wh.backend, "command", killed_inside_insert)
    monkeypatch.setattr(wh.backend, "insert_arrow", killed_inside_arrow_insert)
    try:
        wh.insert_priced(events)
    except KilledInsideInsert:
        pass
    finally:
        monkeypatch.setattr(wh.backend, "command", real_command)
        monkeypatch.setattr(wh.backend, "insert_arrow", real_insert)


def test_rollup_heals_after_a_kill_inside_the_raw_insert(wh, org, make_event, monkeypatch):
    events = [make_event(f"{org}-{i}", org, cost="0.000100000000") for i in range(6)]
    assert wh.insert_priced(events[:2]) == 2
    # the state a SIGKILL inside the statement leaves: raw rows stored, their rollup rows not
    _insert_killed_inside(wh, monkeypatch, events[2:], f"DELETE FROM spend_hourly WHERE org = '{org}'")
    # the marker the kill left (0017: the loader's own key-value marker table)
    assert wh.query("SELECT count() AS n FROM rollup_insert_pending").to_dicts()[0]["n"] == 1
    heal_pending_hours(wh.backend)  # what the owner runs on open, before serving or loading
    assert wh.insert_priced(events) == 0  # the replay of the batch: every id is stored already
    raw, rollup = raw_and_rollup_totals(wh, org)
    assert raw == (6, Decimal("0.0006")) and rollup == raw
    assert wh.query("SELECT count() AS n FROM rollup_rebuild_pending").to_dicts()[0]["n"] == 0
    assert wh.query("SELECT count() AS n FROM rollup_insert_pending").to_dicts()[0]["n"] == 0


def test_event_ids_heal_after_a_kill_inside_the_raw_insert(wh, org, make_event, monkeypatch):
    """The soak (04:31 UTC CI run): a loader SIGKILL inside the raw INSERT left 26 raw rows (and their rollup rows)
    whose ids never reached `priced_event_ids`, the anti-join's key table (a view of the same INSERT). The heal on
    open rebuilt the rollups but not the ids, so a redelivered copy (exact, or ts-shifted within the hour) passed
    the anti-join and was stored a second time; a merge of the ReplacingMergeTree (same hour, org, team, event_id)
    then folded the two raw rows into one while the rollup kept both: soak-b and soak-c each one event over raw."""
    events = [make_event(f"{org}-{i}", org, cost="0.000100000000") for i in range(6)]
    assert wh.insert_priced(events[:2]) == 2
    # the state a SIGKILL inside the statement leaves: raw and rollup rows stored, their ids not
    killed = ", ".join(f"'{event['event_id']}'" for event in events[2:])
    _insert_killed_inside(wh, monkeypatch, events[2:], f"DELETE FROM priced_event_ids WHERE event_id IN ({killed})")
    assert wh.query("SELECT count() AS n FROM rollup_insert_pending").to_dicts()[0]["n"] == 1
    heal_pending_hours(wh.backend)  # what the owner runs on open, before serving or loading
    shifted = dict(events[3], ts="2025-03-01T10:17:00.250Z")  # the soak's copy logged again 90 s later
    stored_again = wh.insert_priced([*events, shifted])  # the replay of the batch, and the shifted copy
    wh.backend.command("OPTIMIZE TABLE priced_events FINAL")  # what a background merge does, at any time
    raw, rollup = raw_and_rollup_totals(wh, org)
    assert raw == (6, Decimal("0.0006")) and rollup == raw
    assert stored_again == 0  # every id is stored already
    stored = wh.query("SELECT count() AS n FROM priced_event_ids WHERE event_id LIKE {p:String}", {"p": f"{org}-%"})
    assert stored.to_dicts()[0]["n"] == 6


def test_call_keys_heal_after_a_kill_inside_the_raw_insert(wh, org, make_event, monkeypatch):
    """`call_keys` (cross-source dedup: each correlation key -> the event stored for the call) is a view of the same
    raw INSERT, so the same kill can leave stored rows without their keys; the other source's copy of such a call
    (an OTel span of a gateway-logged call) then found no key and was stored too: the call counted twice."""
    events = [dict(make_event(f"{org}-gw-{i}", org, cost="0.000100000000"), source="gateway",
                   correlation={"response_id": f"resp-{org}-{i}"}) for i in range(3)]
    keys = ", ".join(f"'response:openai:resp-{org}-{i}'" for i in range(3))  # EmbeddedRocksDB: deleted by key
    _insert_killed_inside(wh, monkeypatch, events, f"DELETE FROM call_keys WHERE key IN ({keys})")
    heal_pending_hours(wh.backend)  # what the owner runs on open, before serving or loading
    spans = [dict(make_event(f"{org}-span-{i}", org, cost="0.000100000000"), source="otel",
                  correlation={"response_id": f"resp-{org}-{i}"}) for i in range(3)]
    assert wh.insert_priced(spans) == 0  # the same three calls, seen by the other source: counted once
    raw, rollup = raw_and_rollup_totals(wh, org)
    assert raw == (3, Decimal("0.0003")) and rollup == raw
