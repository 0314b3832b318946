"""Query functions on small known data: exact Decimal results, rollup and raw paths agree, team scoping."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from tokenmeter import topics
from warehouse import analytics, providers
from warehouse.backends import WarehouseError
from warehouse.records_load import record_to_row
from warehouse.showback import showback

D = Decimal


def _event(make_event, event_id, org, *, team="search", cost="0.100000000000", ts="2025-03-01T10:15:00Z",
           tags=None, model="gpt-4o", feature="chat", status="ok", cached=40, priced=True):
    event = make_event(event_id, org, team=team, cost=cost, ts=ts, model=model, priced=priced)
    event["attribution"]["tags"] = tags or {}
    event["attribution"]["feature"] = feature
    event["status"] = status
    event["usage"]["cached_input_tokens"] = cached
    event["ttft_ms"] = 50.0
    return event


@pytest.fixture
def data(wh, org, make_event):
    events = [
        _event(make_event, f"{org}-1", org, tags={"env": "prod"}, cost="0.100000000001"),
        _event(make_event, f"{org}-2", org, tags={"env": "dev", "x": "1"}, cost="0.200000000000", status="error"),
        _event(make_event, f"{org}-3", org, team="ads", cost="0.300000000000", feature="rank"),
        _event(make_event, f"{org}-4", org, team="ads", tags={"env": "prod"}, cost="0.400000000000",
               ts="2025-03-02T08:30:00Z"),
        _event(make_event, f"{org}-5", org, team="ads", model="mystery-1", priced=False, ts="2025-03-02T09:00:00Z"),
    ]
    assert wh.insert_priced(events) == 5
    return events


def _by(frame, key):
    return {row[key]: row for row in frame.iter_rows(named=True)}


def test_showback_rollup_and_raw_agree_including_tags(wh, org, data):
    f = {"org": [org]}
    whole = showback(wh, ["team"], filters=f)  # rollup
    raw = showback(wh, ["team"], filters=f, since="2025-03-01T00:00:00.001")  # not on the hour: raw table
    assert _by(whole, "team")["search"]["cost_usd"] == D("0.300000000001")
    assert _by(whole, "team")["ads"]["cost_usd"] == D("0.7") and _by(whole, "team")["ads"]["unpriced_events"] == 1
    assert whole.sort("team").rows() == raw.sort("team").rows()
    tags = showback(wh, ["tag:env"], filters=f)  # spend_hourly_tags + untagged remainder
    tags_raw = showback(wh, ["tag:env"], filters=f, until="2025-03-03T00:00:00.5")
    assert {r["tag:env"]: r["cost_usd"] for r in tags.iter_rows(named=True)} == {
        "prod": D("0.500000000001"), "dev": D("0.2"), "": D("0.3")}
    assert tags.sort("tag:env").rows() == tags_raw.sort("tag:env").rows()
    assert sum(tags["events"]) == 5
    daily = showback(wh, ["tag:env", "team"], bucket="day", filters={**f, "tag:env": ["prod"]})
    assert [(r["bucket"].day, r["team"], r["cost_usd"]) for r in daily.iter_rows(named=True)] == [
        (1, "search", D("0.100000000001")), (2, "ads", D("0.4"))]


def test_showback_team_scoping_and_validation(wh, org, data):
    f = {"org": [org]}
    scoped = showback(wh, ["team"], filters=f, team="ads")
    assert scoped["team"].to_list() == ["ads"]
    assert showback(wh, ["team"], filters={**f, "team": ["search"]}, team="ads").height == 0
    with pytest.raises(WarehouseError, match="unknown dimension"):
        showback(wh, ["nope"])
    with pytest.raises(WarehouseError, match="bucket"):
        showback(wh, bucket="year")
    # a hostile value is just a value
    assert showback(wh, ["team"], filters={"team": ["x') OR 1=1 --"], "tag:a'b": ["c"]}).height == 0


def test_top_movers_today_and_unpriced(wh, org, data):
    f = {"org": [org]}
    movers = analytics.top_movers(wh, "team", current_start="2025-03-02", current_end="2025-03-03", filters=f)
    rows = _by(movers, "team")
    assert rows["search"]["change_usd"] == D("-0.300000000001") and rows["search"]["change_pct"] == D("-100.00")
    assert rows["ads"]["current_cost_usd"] == D("0.4") and rows["ads"]["change_pct"] == D("33.33")
    assert movers["team"].to_list() == ["search", "ads"]  # by |change|
    today = analytics.spend_today_mtd(wh, now=datetime(2025, 3, 2, 12, tzinfo=timezone.utc), filters=f).row(0, named=True)
    assert (today["today_cost_usd"], today["today_events"]) == (D("0.4"), 2)
    assert (today["month_cost_usd"], today["month_events"]) == (D("1.000000000001"), 5)
    unpriced = analytics.unpriced_by_model(wh, filters=f)
    assert unpriced.select("provider", "model", "events").rows() == [("openai", "mystery-1", 1)]
    reasons = analytics.unpriced_reasons(wh, since="2025-03-02", until="2025-03-03", team="ads")
    assert "no price for openai/mystery-1" in reasons["unpriced_reason"].to_list()


def test_budget_spend_is_exact_and_counts_each_event_once(wh, org, data, make_event):
    scope = {"org": org, "team": "search"}
    assert analytics.budget_spend(wh, scope, "cost_usd", "2025-03-01", "2025-04-01") == D("0.300000000001")
    assert analytics.budget_spend(wh, scope, "tokens", "2025-03-01", "2025-04-01") == 240
    assert analytics.budget_spend(wh, {"org": org, "tag:env": "prod"}, "cost_usd", "2025-03-01", "2025-04-01") == \
        D("0.500000000001")
    assert analytics.budget_spend(wh, {"org": org, "tag:x": ""}, "tokens", "2025-03-01", "2025-04-01") == 0
    # A second stored copy of an event (what a race or a half-done re-price leaves): the newest copy counts once.
    copy = _event(make_event, f"{org}-1", org, tags={"env": "prod"}, cost="0.150000000000")
    from warehouse.schema import event_to_row, rows_to_arrow
    wh.backend.insert_arrow("priced_events", rows_to_arrow([event_to_row(copy)]))
    assert analytics.budget_spend(wh, scope, "cost_usd", "2025-03-01", "2025-04-01") == D("0.35")
    with pytest.raises(WarehouseError, match="metric"):
        analytics.budget_spend(wh, scope, "euros", "2025-03-01", "2025-04-01")


def test_budget_spend_by_hour_and_of_named_events_and_newest_ids(wh, org, data):
    """A seed's queries (streams/budgets/seed.py): spend per UTC hour, of every event or of named ones only, and the
    most recently loaded ids; the same through the owner's endpoint (what a worker reads)."""
    from datetime import datetime, timezone

    scope = {"org": org, "team": "ads"}
    hours = analytics.budget_spend_by_hour(wh, scope, "cost_usd", "2025-03-01", "2025-04-01")
    assert hours == {datetime(2025, 3, 1, 10, tzinfo=timezone.utc): D("0.3"),
                     datetime(2025, 3, 2, 8, tzinfo=timezone.utc): D("0.4"),
                     datetime(2025, 3, 2, 9, tzinfo=timezone.utc): D("0")}  # the unpriced event: no dollars
    named = analytics.budget_spend_by_hour(wh, scope, "cost_usd", "2025-03-01", "2025-04-01", [f"{org}-4", "nope"])
    assert named == {datetime(2025, 3, 2, 8, tzinfo=timezone.utc): D("0.4")}
    assert analytics.budget_spend_by_hour(wh, scope, "tokens", "2025-03-02", "2025-04-01", [f"{org}-4"]) == {
        datetime(2025, 3, 2, 8, tzinfo=timezone.utc): 120}
    assert sorted(analytics.budget_newest_ids(wh, scope, "2025-03-01", "2025-04-01", 10)) == [
        f"{org}-3", f"{org}-4", f"{org}-5"]
    assert len(analytics.budget_newest_ids(wh, scope, "2025-03-01", "2025-04-01", 2)) == 2


def test_the_seed_queries_cut_at_a_load_time_see_one_set_of_rows(wh, org, data, make_event):
    """Rows loaded after `budget_loaded_until` are in none of the seed's queries (the loader goes on meanwhile)."""
    from datetime import datetime, timezone

    scope = {"org": org, "team": "ads"}
    until = analytics.budget_loaded_until(wh, scope, "2025-03-01", "2025-04-01")
    assert analytics.budget_loaded_until(wh, {"org": org, "team": "nobody"}, "2025-03-01", "2025-04-01") is None
    wh.insert_priced([_event(make_event, f"{org}-later", org, team="ads", cost="5", ts="2025-03-02T08:45:00Z")])
    assert analytics.budget_loaded_until(wh, scope, "2025-03-01", "2025-04-01") > until
    at_eight = datetime(2025, 3, 2, 8, tzinfo=timezone.utc)
    assert analytics.budget_spend_by_hour(wh, scope, "cost_usd", "2025-03-01", "2025-04-01", None, until)[at_eight] \
        == D("0.4")
    assert analytics.budget_spend_by_hour(wh, scope, "cost_usd", "2025-03-01", "2025-04-01")[at_eight] == D("5.4")
    assert analytics.budget_spend_by_hour(wh, scope, "cost_usd", "2025-03-01", "2025-04-01", [f"{org}-later"],
                                          until) == {}
    assert f"{org}-later" not in analytics.budget_newest_ids(wh, scope, "2025-03-01", "2025-04-01", 10, until)
    assert analytics.budget_newest_ids(wh, scope, "2025-03-01", "2025-04-01", 1) == [f"{org}-later"]


def _store(wh, topic, records):
    wh.insert_records(topic, [record_to_row(topic, r)[1] for r in records])


def _enforcement(budget, org, spend, updated, limit="1"):
    return {"budget": budget, "scope": {"org": org, "team": "search"}, "action": "allow", "reason": "",
            "until": None, "metric": "cost_usd", "spend": spend, "limit": limit, "percent": "12.345",
            "period_key": "2025-03", "period_start": "2025-03-01T00:00:00Z", "period_end": "2025-04-01T00:00:00Z",
            "projected": "0.9", "expected_breach_at": None, "updated_at": updated}


def test_budget_status_and_burndown(wh, org, data):
    budget = f"b-{org}"
    first = _enforcement(budget, org, "0.1", "2025-03-01T10:20:00Z")
    _store(wh, topics.ENFORCEMENT, [first, first, _enforcement(budget, org, "0.300000000001", "2025-03-01T11:00:00Z")])
    status = analytics.budget_status(wh, budgets=[budget])
    assert status.height == 1
    row = status.row(0, named=True)
    assert row["spend"] == D("0.300000000001") and row["percent"] == D("12.35")
    assert row["scope_label"] == f"org={org},team=search"
    assert analytics.budget_status(wh, budgets=[budget], team="ads").height == 0
    burn = analytics.budget_burndown(wh, budget, now=datetime(2025, 3, 5, tzinfo=timezone.utc))
    assert burn["cumulative"].to_list() == [D("0.300000000001")]
    assert burn["percent"].to_list() == [D("30.00")]
    assert analytics.budget_burndown(wh, "no-such-budget").height == 0


def test_alerts_history_with_delivery_state(wh, org):
    alert = {"id": f"a-{org}", "source": "budget", "kind": "threshold", "action": "trigger", "severity": "warning",
             "dedup_key": "k", "title": "Budget at 80%", "summary": "s", "at": "2025-03-01T11:00:00Z",
             "scope": {"team": "search", "org": org}, "notify": ["slack=x"], "details": {"budget": "b1", "spend": "1.5"},
             "dashboard_url": ""}
    _store(wh, topics.ALERTS, [alert, alert])
    delivery = {"alert_id": alert["id"], "route": "slack", "target": "https://hooks.slack.com/***", "status": "retrying",
                "attempts": 1, "last_error": "HTTP 500", "http_status": 500, "at": "2025-03-01T11:00:01Z"}
    _store(wh, topics.ALERT_DELIVERIES, [delivery, {**delivery, "status": "delivered", "attempts": 2, "last_error": "",
                                                     "http_status": 200, "at": "2025-03-01T11:00:05Z"},
                                         {**delivery, "route": "pagerduty", "status": "failed", "last_error": "400 bad key",
                                          "http_status": 400}])
    rows = analytics.alerts_history(wh, since="2025-03-01", until="2025-03-02", team="search")
    row = _by(rows, "id")[alert["id"]]
    assert row["budget"] == "b1" and row["scope_label"] == f"org={org},team=search"
    assert row["deliveries"] == "pagerduty:failed(1), slack:delivered(2)"
    assert row["delivery_state"] == "failed" and row["last_error"] == "400 bad key"
    assert rows.filter(rows["id"] == alert["id"]).height == 1
    assert analytics.alerts_history(wh, team="nobody").height == 0


def test_anomalies_with_acks_and_series(wh, org, data):
    anomaly = {"id": f"an-{org}", "kind": "spend_spike", "scope_dim": "org", "scope_value": org,
               "severity": "warning", "observed": "0.5", "expected": "0.1", "expected_low": "0.05",
               "expected_high": "0.2", "unit": "usd_per_hour", "start": "2025-03-01T10:00:00Z",
               "end": "2025-03-01T11:00:00Z", "status": "open", "explanation": "x", "detected_at": "2025-03-01T11:00:00Z"}
    _store(wh, topics.ANOMALIES, [anomaly, {**anomaly, "status": "closed", "end": "2025-03-01T12:00:00Z",
                                            "detected_at": "2025-03-01T12:00:00Z"}])
    found = analytics.anomalies(wh, since="2025-03-01", until="2025-03-02")
    row = _by(found, "id")[anomaly["id"]]
    assert row["status"] == "closed" and row["ack_action"] is None and row["observed"] == D("0.5")
    _store(wh, topics.ANOMALY_ACKS, [{"anomaly_id": anomaly["id"], "kind": "spend_spike", "scope_dim": "org",
                                      "scope_value": org, "action": "mute", "by": "ann", "note": "known",
                                      "mute_until": "2025-03-08T00:00:00Z", "at": "2025-03-01T13:00:00Z"}])
    row = _by(analytics.anomalies(wh, status="closed"), "id")[anomaly["id"]]
    assert (row["ack_action"], row["ack_by"], row["ack_mute_until"].day) == ("mute", "ann", 8)
    series = analytics.anomaly_series(wh, "org", org, since="2025-03-01", until="2025-03-03")
    assert series.select("cost_usd", "tokens", "requests").rows() == [
        (D("0.600000000001"), 360, 3), (D("0.4"), 120, 1), (D("0"), 120, 1)]


def test_reconciliation_and_model_stats(wh, org, data):
    records = [
        {"id": f"pu-{org}-1", "provider": "openai", "kind": "cost", "bucket_start": "2025-03-01T00:00:00Z",
         "bucket_end": "2025-03-02T00:00:00Z", "line_item": "gpt-4o, input", "cost_usd": "0.5",
         "group": {"line_item": "gpt-4o, input"}, "fetched_at": "2025-03-02T00:00:00Z"},
        {"id": f"pu-{org}-2", "provider": "openai", "kind": "usage", "bucket_start": "2025-03-01T00:00:00Z",
         "bucket_end": "2025-03-02T00:00:00Z", "model": "gpt-4o", "input_tokens": 250, "output_tokens": 50,
         "requests": 3, "fetched_at": "2025-03-02T00:00:00Z"},
    ]
    # A later fetch of the same cost bucket replaces the first.
    _store(wh, topics.PROVIDER_USAGE, records + [{**records[0], "cost_usd": "0.6", "fetched_at": "2025-03-02T06:00:00Z"}])
    recon = providers.reconciliation(wh, since="2025-03-01", until="2025-03-02", provider="openai")
    row = _by(recon, "model")["gpt-4o"]
    assert row["provider_cost_usd"] == D("0.6") and row["provider_input_tokens"] == 250
    assert row["metered_cost_usd"] - row["provider_cost_usd"] == row["difference_usd"]
    metered = showback(wh, filters={"provider": ["openai"], "model": ["gpt-4o"]}, since="2025-03-01",
                       until="2025-03-02")["cost_usd"][0]
    assert row["metered_cost_usd"] == metered

    wh.record_price_catalog([{"entry": "openai/gpt-4o", "provider": "openai", "model": "gpt-4o",
                              "effective_from": "2024-08-06", "input": D("2.50"), "cached_input": D("1.25"),
                              "output": D("10"), "source": "test", "catalog_version": "t1"}])
    stats = providers.model_stats(wh, filters={"org": [org]})
    gpt = _by(stats, "model")["gpt-4o"]
    assert (gpt["requests"], gpt["errors"], gpt["input_tokens"], gpt["output_tokens"]) == (4, 1, 400, 80)
    assert gpt["cost_usd"] == D("1.000000000001")
    assert gpt["cost_per_1k_tokens"] == D("2.083333333335")  # 1.000000000001 * 1000 / 480, truncated
    assert gpt["cache_savings_usd"] == D("0.0002")  # 160 cached tokens x (2.50 - 1.25) / 1M
    assert gpt["avg_latency_ms"] == 812.5 and gpt["avg_ttft_ms"] == 50.0 and gpt["tokens_per_request"] == 120
    assert gpt["top_features"] == "chat (60), rank (20)"
    assert _by(stats, "model")["mystery-1"]["cache_savings_usd"] is None
    raw = providers.model_stats(wh, filters={"org": [org]}, since="2025-03-01T00:00:00.5")
    assert raw.drop("top_features").sort("model").rows() == stats.drop("top_features").sort("model").rows()
    assert providers.model_stats(wh, filters={"org": [org]}, team="nobody").height == 0


def test_every_query_runs_through_the_owner_endpoint(wh, org, data, warehouse_settings):
    """The dashboard reads through the loader's endpoint (single SELECTs, readonly): same answers as direct."""
    import orjson

    from warehouse.backends import RemoteBackend
    from warehouse.endpoint import endpoint_path, read_endpoint_secret
    from warehouse.store import Warehouse

    url = orjson.loads(endpoint_path(warehouse_settings.data_dir).read_bytes())["url"]
    remote = Warehouse(RemoteBackend(url, secret=read_endpoint_secret(warehouse_settings.data_dir)))
    f = {"org": [org]}
    calls = [
        lambda w: showback(w, ["tag:env", "team"], bucket="week", filters=f),
        lambda w: analytics.top_movers(w, "model", current_start="2025-03-02", current_end="2025-03-03", filters=f),
        lambda w: analytics.unpriced_reasons(w, since="2025-03-01", until="2025-03-03"),
        lambda w: analytics.budget_spend(w, {"org": org, "tag:env": "prod"}, "cost_usd", "2025-03-01", "2025-04-01"),
        lambda w: analytics.budget_status(w),
        lambda w: analytics.budget_spend_by_hour(w, {"org": org}, "cost_usd", "2025-03-01", "2025-04-01", [f"{org}-1"]),
        lambda w: sorted(analytics.budget_newest_ids(w, {"org": org}, "2025-03-01", "2025-04-01", 10)),
        lambda w: analytics.alerts_history(w, since="2025-03-01"),
        lambda w: analytics.anomalies(w, since="2025-03-01"),
        lambda w: providers.reconciliation(w, since="2025-03-01", until="2025-03-03"),
        lambda w: providers.model_stats(w, filters=f),
    ]
    try:
        for call in calls:
            local, far = call(wh), call(remote)
            assert (far.rows() if hasattr(far, "rows") else far) == (local.rows() if hasattr(local, "rows") else local)
    finally:
        remote.close()


def test_reconciliation_day_without_a_cost_report_is_not_reported_not_zero(wh, org, make_event):
    """walk25: the dashboard said "not reported" for a day and model with provider usage buckets but no cost bucket
    yet (left24), while this query summed it as provider_cost_usd 0 and difference_usd = all of our cost, so any
    total over the query's rows counted an unbilled day as a $0 bill. NULL now, as the page; tokens likewise NULL
    when the provider sent no usage bucket (a cost-only report carries no token counts)."""
    july = [_event(make_event, f"{org}-j1", org, cost="0.300000000000", ts="2025-07-01T10:00:00Z"),
            _event(make_event, f"{org}-j2", org, cost="0.400000000000", ts="2025-07-02T10:00:00Z")]
    assert wh.insert_priced(july) == 2
    usage = {"id": f"pu-{org}-u", "provider": "openai", "kind": "usage", "bucket_start": "2025-07-02T00:00:00Z",
             "bucket_end": "2025-07-03T00:00:00Z", "model": "gpt-4o", "input_tokens": 100, "output_tokens": 20,
             "requests": 1, "fetched_at": "2025-07-03T00:00:00Z"}
    cost = {"id": f"pu-{org}-c", "provider": "openai", "kind": "cost", "bucket_start": "2025-07-01T00:00:00Z",
            "bucket_end": "2025-07-02T00:00:00Z", "line_item": "gpt-4o, input", "cost_usd": "0.25",
            "group": {"line_item": "gpt-4o, input"}, "fetched_at": "2025-07-02T00:00:00Z"}
    _store(wh, topics.PROVIDER_USAGE, [usage, cost])
    recon = providers.reconciliation(wh, since="2025-07-01", until="2025-07-03", provider="openai")
    rows = {(str(r["day"]), r["model"]): r for r in recon.iter_rows(named=True)}
    unbilled = rows[("2025-07-02", "gpt-4o")]  # our 0.4 and the provider's usage, no cost bucket yet
    assert unbilled["metered_cost_usd"] == D("0.4") and unbilled["provider_input_tokens"] == 100
    assert (unbilled["provider_cost_usd"], unbilled["difference_usd"], unbilled["difference_pct"]) == (None,) * 3
    billed = rows[("2025-07-01", "gpt-4o")]  # a cost bucket, no usage bucket: a cost, tokens not reported
    assert billed["provider_cost_usd"] == D("0.25") and billed["difference_usd"] == D("0.05")
    assert (billed["provider_input_tokens"], billed["provider_output_tokens"]) == (None, None)
    assert recon["provider_cost_usd"].sum() == D("0.25")  # a total over the rows: the billed day only
