"""Schema, exact dedupe on insert, rollup vs raw, unpriced visibility, parameterized filters (real chDB)."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from decimal import Decimal

import polars as pl
import pytest

from warehouse import DIMENSIONS, WarehouseError
from warehouse.schema import apply_migrations, load_migrations

pytestmark = pytest.mark.slow(seconds=15)  # rough seconds: longest files first (tests/suite_order.py)


def test_migrations_are_recorded_once_and_idempotent(wh):
    versions = [m.version for m in load_migrations()]
    assert versions == sorted(versions) and versions[:2] == [1, 2]
    assert apply_migrations(wh.backend) == []  # already applied on open
    assert apply_migrations(wh.backend) == []
    recorded = wh.query("SELECT version, count() AS n FROM schema_migrations GROUP BY version ORDER BY version")
    assert recorded["version"].to_list() == versions
    assert set(recorded["n"].to_list()) == {1}
    types = dict(wh.query("SELECT name, type FROM system.columns WHERE table = 'priced_events'").rows())
    assert types["cost_usd"] == "Decimal(18, 12)"
    assert types["ts"] == "DateTime64(3, 'UTC')"
    assert types["cost_breakdown"] == "Map(String, Decimal(18, 12))"
    assert types["ttft_ms"] == "Nullable(Float64)"


def test_exact_decimal_totals_with_duplicates_in_and_across_batches(wh, org, make_event):
    rng = random.Random(7)
    events = []
    for i in range(3000):
        cost = Decimal(rng.randrange(0, 10**9)) / Decimal(10**12) + Decimal("0.1")  # 12 decimal places
        events.append(make_event(f"{org}-{i}", org, team=f"t{i % 7}", cost=cost, input_tokens=i, output_tokens=i % 50))
    expected_cost = sum(Decimal(e["cost_usd"]) for e in events)
    expected_input = sum(e["usage"]["input_tokens"] for e in events)

    first = events[:2000] + events[:300]  # duplicates inside one batch
    assert wh.insert_priced(first) == 2000
    second = events[1500:] + events[1500:1600]  # overlaps the first batch, and repeats inside itself
    assert wh.insert_priced(second) == 1000
    assert wh.insert_priced(events[:10]) == 0  # pure redelivery

    total = wh.spend([], filters={"org": [org]})
    assert total["events"].to_list() == [3000]
    assert total["cost_usd"].to_list() == [expected_cost]
    assert isinstance(total["cost_usd"][0], Decimal)
    assert total["input_tokens"].to_list() == [expected_input]

    by_team = wh.spend(["team"], filters={"org": [org]})
    assert sorted(by_team["team"].to_list()) == [f"t{i}" for i in range(7)]
    assert sum(by_team["cost_usd"].to_list()) == expected_cost
    assert by_team["cost_usd"].to_list() == sorted(by_team["cost_usd"].to_list(), reverse=True)


def test_rollup_equals_raw(wh, org, make_event):
    events = [
        make_event(f"{org}-{i}", org, team=f"t{i % 3}", model=["gpt-4o", "gpt-4o-mini"][i % 2],
                   ts=f"2025-04-0{1 + i % 3}T{i % 24:02d}:{i % 60:02d}:00Z", cost=f"0.{i:012d}",
                   route=f"/r{i % 2}")
        for i in range(500)
    ]
    wh.insert_priced(events)
    measures = "count() AS events, sum(input_tokens) AS input_tokens, sum(cost_usd) AS cost_usd"
    raw = wh.query(
        f"SELECT toStartOfHour(ts) AS hour, team, model, {measures} FROM priced_events WHERE org = {{o:String}}"
        " GROUP BY hour, team, model ORDER BY hour, team, model", {"o": org})
    rolled = wh.query(
        "SELECT hour, team, model, sum(events) AS events, toInt64(sum(input_tokens)) AS input_tokens,"
        " sum(cost_usd) AS cost_usd FROM spend_hourly WHERE org = {o:String}"
        " GROUP BY hour, team, model ORDER BY hour, team, model", {"o": org})
    assert raw["events"].to_list() == rolled["events"].to_list()
    assert raw["cost_usd"].to_list() == rolled["cost_usd"].to_list()
    assert raw["input_tokens"].to_list() == rolled["input_tokens"].to_list()

    # The query layer picks the rollup for whole hours and the raw table otherwise: same answers.
    since, until = datetime(2025, 4, 1, tzinfo=timezone.utc), datetime(2025, 4, 3, tzinfo=timezone.utc)
    from_rollup = wh.spend(["team"], since=since, until=until, filters={"org": [org]})
    from_raw = wh.spend(["team"], since=since, until=until, filters={"org": [org], "route": []})
    with_route = wh.spend(["team", "route"], since=since, until=until, filters={"org": [org]})
    assert from_rollup.sort("team").equals(from_raw.sort("team"))
    assert with_route["cost_usd"].sum() == from_rollup["cost_usd"].sum()
    inside = [e for e in events if e["ts"] < "2025-04-03"]
    assert from_rollup["events"].sum() == len(inside)

    daily = wh.spend_over_time("day", "team", filters={"org": [org]})
    hourly_raw = wh.spend_over_time("hour", None, since="2025-04-01T00:00:00.001Z", filters={"org": [org]})
    assert daily["bucket"].dtype == pl.Datetime("ms", "UTC") or daily["bucket"].dtype.time_zone == "UTC"
    assert daily["events"].sum() == 500
    assert daily["bucket"].dt.hour().unique().to_list() == [0]
    assert hourly_raw["cost_usd"].sum() == sum(Decimal(e["cost_usd"]) for e in events if e["ts"] >= "2025-04-01T00:01")


def test_unpriced_usage_is_visible(wh, org, make_event):
    events = [make_event(f"{org}-p{i}", org, cost="0.5") for i in range(4)]
    events += [make_event(f"{org}-u{i}", org, model="brand-new-model", priced=False) for i in range(3)]
    wh.insert_priced(events)
    result = wh.spend(["pricing_status", "model"], filters={"org": [org]})
    rows = {r["pricing_status"]: r for r in result.to_dicts()}
    assert rows["unpriced"]["events"] == 3 and rows["unpriced"]["unpriced_events"] == 3
    assert rows["unpriced"]["model"] == "brand-new-model"
    assert rows["unpriced"]["cost_usd"] == Decimal(0)
    assert rows["unpriced"]["input_tokens"] == 300
    assert rows["priced"]["cost_usd"] == Decimal("2")
    total = wh.spend([], filters={"org": [org]}).to_dicts()[0]
    assert total["unpriced_events"] == 3 and total["events"] == 7
    stored = wh.query(
        "SELECT unpriced_reason FROM priced_events WHERE org = {o:String} AND pricing_status = 'unpriced'", {"o": org})
    assert set(stored["unpriced_reason"].to_list()) == {"no price for openai/brand-new-model"}


@pytest.mark.parametrize("team", ["x'); DROP TABLE priced_events; --", "back\\slash\ttab\nline", "\\N", "é漢"])
def test_filter_values_are_parameters_not_sql(wh, org, make_event, team):
    wh.insert_priced([make_event(f"{org}-evil", org, team=team), make_event(f"{org}-ok", org, team="plain")])
    result = wh.spend(["team"], filters={"org": [org], "team": [team]})
    assert result["team"].to_list() == [team]
    assert result["events"].to_list() == [1]
    assert team in wh.distinct_values("team")
    assert wh.query("SELECT count() AS n FROM priced_events WHERE org = {o:String}", {"o": org})["n"][0] == 2


def test_dimension_names_are_whitelisted(wh):
    for bad in (["team; DROP TABLE priced_events"], ["cost_usd"], ["team", "team"]):
        with pytest.raises(WarehouseError, match="dimension"):
            wh.spend(bad)
    with pytest.raises(WarehouseError, match="unknown dimension"):
        wh.spend(["team"], filters={"1=1 OR team": ["x"]})
    with pytest.raises(WarehouseError, match="unknown dimension"):
        wh.distinct_values("event_id")
    with pytest.raises(WarehouseError, match="bucket"):
        wh.spend_over_time("minute; DROP")
    with pytest.raises(WarehouseError, match="since"):
        wh.spend(["team"], since="yesterday-ish")
    assert "pricing_status" in DIMENSIONS and "team" in DIMENSIONS


def test_invalid_events_are_refused_with_the_field_named(wh, org, make_event):
    bad_tokens = make_event(f"{org}-bad", org)
    bad_tokens["usage"]["input_tokens"] = -5
    with pytest.raises(WarehouseError, match=r"event 1 .*usage.input_tokens"):
        wh.insert_priced([make_event(f"{org}-good", org), bad_tokens])
    too_precise = make_event(f"{org}-precise", org, cost="0.0000000000001")
    with pytest.raises(WarehouseError, match="cost_usd.*decimal places"):
        wh.insert_priced([too_precise])
    too_big = make_event(f"{org}-big", org, cost="1000000")
    with pytest.raises(WarehouseError, match="cost_usd.*Decimal\\(18,12\\)"):
        wh.insert_priced([too_big])
    assert wh.spend([], filters={"org": [org]})["events"].to_list() == [0]  # all-or-nothing


def test_freshness_and_distinct_values(wh, org, make_event):
    from datetime import timedelta

    # The latest event time the contract accepts (a day ahead at most), so it is the newest in the table.
    soon = (datetime.now(timezone.utc) + timedelta(hours=20)).replace(minute=4, second=5, microsecond=678000)
    hour = soon.replace(minute=0, second=0, microsecond=0)
    wh.insert_priced([make_event(f"{org}-f", org, ts=soon.isoformat(), team="fresh-team")])
    fresh = wh.freshness()
    assert fresh["last_event_ts"] == soon
    assert fresh["last_loaded_at"] is not None and fresh["events"] >= 1
    assert wh.distinct_values("team", since=hour) == ["fresh-team"]
    assert wh.distinct_values("org", since=hour, until=hour + timedelta(hours=1)) == [org]


def test_an_id_re_sent_with_another_ts_is_stored_and_counted_once(wh, org, make_event):
    """event_id alone decides, whatever the ts: the anti-join used to look only inside the batch's [min ts, max ts],
    so the same id re-sent the next day (or next month: another partition) was stored and reported twice."""
    first = make_event(f"{org}-1", org, ts="2025-05-10T10:00:00Z", input_tokens=100)
    assert wh.insert_priced([first, make_event(f"{org}-2", org, ts="2025-05-10T11:00:00Z")]) == 2
    next_day = make_event(f"{org}-1", org, ts="2025-05-11T10:00:00Z", input_tokens=100)
    next_month = make_event(f"{org}-1", org, ts="2025-06-20T08:00:00Z", input_tokens=100)
    assert wh.insert_priced([next_day]) == 0
    assert wh.insert_priced([next_month, make_event(f"{org}-3", org, ts="2025-06-20T09:00:00Z")]) == 1
    # Raw table, hourly and daily rollups (the dashboard's date ranges read spend_daily) all count it once.
    raw = wh.query("SELECT count() AS n, uniqExact(event_id) AS ids FROM priced_events WHERE org = {o:String}",
                   {"o": org})
    assert raw.row(0) == (3, 3)
    for since, until in (("2025-05-01", "2025-07-01"), ("2025-05-10T00:00:00Z", "2025-06-21T00:00:00Z"),
                         ("2025-05-10T09:30:00Z", "2025-06-21T00:00:00Z")):  # daily, hourly, raw
        total = wh.spend([], since=since, until=until, filters={"org": [org]})
        assert total["events"].to_list() == [3] and total["input_tokens"].to_list() == [300]
    stored = wh.query("SELECT ts FROM priced_events WHERE event_id = {e:String}", {"e": f"{org}-1"})
    assert stored["ts"].to_list() == [datetime(2025, 5, 10, 10, tzinfo=timezone.utc)]  # the first copy wins


def test_token_sums_never_wrap(wh, org, make_event):
    """input_tokens 2^64-1 plus 1,000 reported 999 (UInt64 sum). The contract now refuses counts above 10^12;
    a row stored before that (built here past the validation) must still never be summed with wrap-around: the
    rollups hold Int128 sums, and readers either return the exact UInt64 total or fail loudly."""
    from warehouse.schema import event_to_row
    from warehouse.showback import showback

    big = event_to_row(make_event(f"{org}-big", org, ts="2025-07-01T10:00:00Z"))
    big["input_tokens"], big["cached_input_tokens"] = 2**64 - 1, 0
    small = event_to_row(make_event(f"{org}-small", org, ts="2025-07-01T10:30:00Z", input_tokens=1000))
    assert wh.insert_rows([big]) == 1 and wh.insert_rows([small]) == 1
    for table in ("spend_hourly", "spend_daily", "spend_hourly_tags", "spend_daily_tags", "model_hourly"):
        total = wh.query(f"SELECT toString(sum(input_tokens)) AS n FROM {table} WHERE org = {{o:String}}", {"o": org})
        assert total["n"].to_list() == [str(2**64 - 1 + 1000)], table
    windows = [("2025-07-01", "2025-07-02"), ("2025-07-01T10:00:00Z", "2025-07-01T11:00:00Z"),  # daily, hourly
               ("2025-07-01T09:59:00Z", "2025-07-01T11:00:00Z")]  # raw
    for since, until in windows:
        with pytest.raises(WarehouseError, match="UInt64"):
            wh.spend([], since=since, until=until, filters={"org": [org]})
        with pytest.raises(WarehouseError, match="UInt64"):
            showback(wh, ["team"], since=since, until=until, filters={"org": [org]})
        with pytest.raises(WarehouseError, match="UInt64"):
            showback(wh, ["tag:env"], since=since, until=until, filters={"org": [org]})
    # Below 2^64 the total is exact, whatever the rollup row sums (> 2^63 wrapped the Int64 rollups).
    wh.backend.command("DELETE FROM priced_events WHERE event_id = {e:String}", {"e": f"{org}-small"})
    for since, until in windows[2:]:
        assert wh.spend([], since=since, until=until, filters={"org": [org]})["input_tokens"].to_list() == [2**64 - 1]


def test_one_batch_spanning_more_than_100_months_is_stored(wh, org, make_event, monkeypatch):
    """ClickHouse refuses an INSERT touching more than 100 partitions (months); such a batch used to fail on every
    retry, and nothing later landed. The contract allows at most ~7 years today; an earlier
    TOKENMETER_EARLIEST_EVENT_TS (a backfill) allows more, so inserts are split by month.

    Last in this file on purpose: its 119 monthly partitions stay in the module's warehouse, and every later
    lightweight DELETE there visits them (test_token_sums_never_wrap's one DELETE took 19.5 s after it, ~0.1 s
    before)."""
    import tokenmeter.events

    monkeypatch.setattr(tokenmeter.events, "EARLIEST_EVENT_TS", datetime(2010, 1, 1, tzinfo=timezone.utc))
    months = [(2017 + i // 12, 1 + i % 12) for i in range(119)]  # 2017-01 .. 2026-11 (the module keeps 3650 days)
    events = [make_event(f"{org}-{y}-{m}", org, ts=f"{y}-{m:02d}-15T12:00:00Z", cost="0.000001000000")
              for y, m in months]
    assert wh.insert_priced(events) == 119
    assert wh.insert_priced(events) == 0  # and redelivered: still once
    raw = wh.query("SELECT count() AS n FROM priced_events WHERE org = {o:String}", {"o": org})["n"][0]
    daily = wh.query("SELECT sum(events) AS n FROM spend_daily WHERE org = {o:String}", {"o": org})["n"][0]
    hourly = wh.query("SELECT sum(events) AS n FROM spend_hourly WHERE org = {o:String}", {"o": org})["n"][0]
    assert raw == daily == hourly == 119
