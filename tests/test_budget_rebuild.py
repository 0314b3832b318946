"""`tokenmeter budget rebuild`: after the embedded broker lost the budgets' state, the current periods' spend is
rebuilt exactly from the warehouse, and thresholds already alerted (recorded in the warehouse) stay quiet."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from streams.budgets import parse_budget
from tokenmeter import topics
from streams.budgets.rebuild import rebuild_states
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

def clear_of_month_start(now: datetime) -> datetime:
    """The tests place events up to 6 hours before NOW and expect them in NOW's monthly period: in the first hours
    of a UTC month they would fall in the previous one. Then NOW moves into the month (still within the one day
    ahead the contract accepts)."""
    return max(now, now.replace(day=1, hour=6, minute=0, second=0))


NOW = clear_of_month_start(datetime.now(timezone.utc).replace(microsecond=0))


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("rebuild"), tmp_path_factory)
    warehouse = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    yield warehouse
    warehouse.close()


def priced(event_id: str, team: str, cost: str, ts: datetime, status: str = "ok") -> dict:
    return {"event_id": event_id, "ts": ts.isoformat(), "source": "test", "provider": "openai", "model": "gpt-4o",
            "status": status, "attribution": {"org": "acme", "team": team, "tags": {}},
            "usage": {"input_tokens": 1000, "output_tokens": 100}, "tokens_source": "provider", "cost_usd": cost,
            "cost_breakdown": {"input": cost}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "t"},
            "priced_at": ts.isoformat()}


def test_rebuild_restores_exact_spend_and_does_not_realert(wh):
    from warehouse.records_load import record_to_row

    team = f"t-{uuid.uuid4().hex[:6]}"
    budget = parse_budget({"name": f"b-{team}", "scope": {"team": team}, "period": "month", "limit": "10",
                           "action": "block"})
    events = [priced(f"{team}-{i}", team, "3.000000000001", NOW - timedelta(minutes=i)) for i in range(4)]
    assert wh.insert_priced(events + [events[0]]) == 4  # a replayed copy is stored once
    from streams.budgets.periods import period_window

    key = period_window(budget, NOW)[2]
    already = [{"id": f"a{t}", "source": "budget", "kind": "threshold", "action": "trigger", "severity": "warning",
                "dedup_key": "d", "title": "t", "summary": "s", "at": NOW.isoformat(), "scope": {"team": team},
                "notify": [], "details": {"budget": budget.name, "period_key": key, "threshold": t},
                "dashboard_url": ""} for t in (50, 80)]
    wh.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, a)[1] for a in already])

    states, alerts = rebuild_states(wh, [budget], now=NOW)
    (name, state), = states
    assert name == budget.name
    assert Decimal(state["ledger"]["spend"][budget.name][key]) == Decimal("12.000000000004")
    assert sorted(state["ledger"]["fired"][budget.name][key]) == ["100", "50", "80"]
    assert [a["details"]["threshold"] for a in alerts] == [100]  # reached but never alerted: alerted now, once
    assert state["incident"] == key

    again, alerts_again = rebuild_states(wh, [budget], now=NOW)
    assert alerts_again[0]["id"] == alerts[0]["id"]  # same crossing id: the dispatcher delivers it once


def test_rebuild_rolling_window_by_hour(wh):
    team = f"t-{uuid.uuid4().hex[:6]}"
    budget = parse_budget({"name": f"r-{team}", "scope": {"team": team}, "period": "rolling:3h", "limit": "100"})
    wh.insert_priced([priced(f"{team}-old", team, "5", NOW - timedelta(hours=6)),
                      priced(f"{team}-1", team, "1.5", NOW - timedelta(hours=1)),
                      priced(f"{team}-2", team, "2.5", NOW)])
    (_, state), = rebuild_states(wh, [budget], now=NOW)[0]
    spend = state["ledger"]["spend"][budget.name]
    assert sum(Decimal(v) for v in spend.values()) == Decimal(4)  # the 6-hour-old event is outside the window


def test_alerts_not_delivered_on_every_route_go_back_to_the_outbox_with_known_states(wh):
    """The broker died with an alert in the outbox (already loaded into the warehouse) not yet delivered: the
    rebuild must not only keep the threshold quiet but put the alert back, with what went out already."""
    from streams.alerts.routes import parse_routes
    from streams.budgets.rebuild import replay_alerts
    from warehouse.records_load import record_to_row

    # two kinds of route: a webhook and Slack
    notify = ["webhook=http://127.0.0.1:9/hook-one/x", "slack=https://hooks.slack.com/services/T0/B0/secret"]
    budget, alerts = _budget_with_alerts(wh, notify)
    routes, _ = parse_routes(notify)
    assert len(routes) == 2 and routes[0].masked != routes[1].masked

    def delivery(alert_id: str, route, status: str, seconds_ago: int = 0) -> dict:
        return {"alert_id": alert_id, "route": route.kind, "target": route.masked, "status": status,
                "attempts": 1, "last_error": "", "http_status": 200,
                "at": (NOW - timedelta(seconds=seconds_ago)).isoformat()}

    rows = [delivery(alerts[80]["id"], r, "delivered") for r in routes]  # 80 %: out on both routes
    rows += [delivery(alerts[50]["id"], routes[0], "retrying", 5), delivery(alerts[50]["id"], routes[0], "delivered")]
    wh.insert_records(topics.ALERT_DELIVERIES, [record_to_row(topics.ALERT_DELIVERIES, d)[1] for d in rows])

    replayed, states = replay_alerts(wh, [budget], now=NOW)
    assert [a["id"] for a in replayed] == [alerts[50]["id"]]  # 50 % reached only the first route
    assert replayed[0]["notify"] == notify and replayed[0]["details"]["threshold"] == 50
    assert [(k, s["status"]) for k, s in states] == [(f"{alerts[50]['id']}|{routes[0].route_id}", "delivered")]


def test_two_routes_of_one_kind_delivered_are_not_replayed(wh):
    """Issue 16 follow-up: two webhooks (same masked look) both delivered must not go back to the outbox on every
    restart (the 30-minute soak saw 86 same-id repeats); one delivered, one not: only the missing one is open."""
    from streams.alerts.delivery import DeliveryState
    from streams.alerts.routes import parse_routes
    from streams.budgets.rebuild import replay_alerts
    from warehouse.records_load import record_to_row

    notify = ["webhook=http://127.0.0.1:9/hooks/one", "webhook=http://127.0.0.1:9/hooks/two"]
    budget, alerts = _budget_with_alerts(wh, notify)
    routes, _ = parse_routes(notify)
    assert len(routes) == 2 and routes[0].masked == routes[1].masked  # indistinguishable by kind and mask

    def delivery(alert_id: str, route, status: str, seconds_ago: int = 0) -> dict:
        at = (NOW - timedelta(seconds=seconds_ago)).isoformat()
        return DeliveryState(alert_id, route, status, 1, "", 200, at).record()  # what the dispatcher publishes

    rows = [delivery(alerts[80]["id"], r, "delivered") for r in routes]  # 80 %: out on both webhooks
    rows += [delivery(alerts[50]["id"], routes[1], "delivered", 5),  # 50 %: only the second one
             delivery(alerts[50]["id"], routes[0], "retrying")]
    wh.insert_records(topics.ALERT_DELIVERIES, [record_to_row(topics.ALERT_DELIVERIES, d)[1] for d in rows])
    for table in ("alert_deliveries", "alert_route_deliveries"):  # merged as the warehouse does in the background
        wh.backend.command(f"OPTIMIZE TABLE {table} FINAL")

    for _restart in range(3):  # every restart gives the same answer: nothing delivered goes out again
        replayed, states = replay_alerts(wh, [budget], now=NOW)
        assert [a["id"] for a in replayed] == [alerts[50]["id"]]
        assert [(k, s["status"]) for k, s in states] == [(f"{alerts[50]['id']}|{routes[1].route_id}", "delivered")]


def _budget_with_alerts(wh, notify: list[str]):
    """A month budget of a fresh team with `notify` routes, and its 50 % and 80 % threshold alerts stored in the
    warehouse (what the rebuild replays from)."""
    from streams.budgets.periods import period_window
    from warehouse.records_load import record_to_row

    team = f"t-{uuid.uuid4().hex[:6]}"
    budget = parse_budget({"name": f"b-{team}", "scope": {"team": team}, "period": "month", "limit": "10",
                           "action": "block", "notify": notify})
    key = period_window(budget, NOW)[2]
    alerts = {t: {"id": f"{team}-a{t}", "source": "budget", "kind": "threshold", "action": "trigger",
                  "severity": "warning", "dedup_key": f"tokenmeter:budget:{budget.name}:{key}", "title": f"{t}%",
                  "summary": "s", "at": (NOW - timedelta(minutes=t)).isoformat(), "scope": {"team": team},
                  "notify": [], "details": {"budget": budget.name, "period_key": key, "threshold": t},
                  "dashboard_url": ""} for t in (50, 80)}
    wh.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, a)[1] for a in alerts.values()])
    return budget, alerts


def test_rebuild_marks_fired_the_thresholds_a_seeded_alert_stands_for(wh):
    """A budget defined at 86 % alerted 50 % and 80 % in one alert (streams/budgets/seed.py): after a restart's rebuild
    neither alerts again."""
    from streams.budgets.periods import period_window
    from warehouse.records_load import record_to_row

    team = f"t-{uuid.uuid4().hex[:6]}"
    budget = parse_budget({"name": f"s-{team}", "scope": {"team": team}, "period": "month", "limit": "10"})
    wh.insert_priced([priced(f"{team}-0", team, "8.6", NOW - timedelta(minutes=1))])
    key = period_window(budget, NOW)[2]
    seeded = {"id": f"seeded-{team}", "source": "budget", "kind": "threshold", "action": "trigger",
              "severity": "error", "dedup_key": "d", "title": "t", "summary": "s", "at": NOW.isoformat(),
              "scope": {"team": team}, "notify": [], "dashboard_url": "",
              "details": {"budget": budget.name, "period_key": key, "threshold": 80, "passed_thresholds": [50, 80]}}
    wh.insert_records(topics.ALERTS, [record_to_row(topics.ALERTS, seeded)[1]])
    states, alerts = rebuild_states(wh, [budget], now=NOW)
    # no threshold again; the 8.6 USD of the last (otherwise quiet) hour projects a breach, never alerted: that one
    # goes out (a quiet hour is an hour of burn since walk36's runaway)
    assert [a["kind"] for a in alerts] == ["forecast"]
    assert sorted(states[0][1]["ledger"]["fired"][budget.name][key]) == ["50", "80", "forecast"]


def test_a_rebuilt_budget_keeps_the_last_hours_burn_rate_and_its_forecast(wh):
    """forecast36: a rebuild (every `up` start) took the period's total but no burn rate: the Budgets page said "not
    enough data yet" after each start although the forecast alert still stood. The warehouse's minutes of the hour
    before the rebuild are the burn the ledger would have seen; the forecast alerts once if it never did, and the
    record published from the rebuilt state gives the same projection."""
    from streams.budgets.owner import BudgetOwner

    team = f"t-{uuid.uuid4().hex[:6]}"
    offset = 12 - NOW.hour  # a zone where NOW is about noon: the month's end is half a day away or more
    budget = parse_budget({"name": f"f-{team}", "scope": {"team": team}, "period": "month", "limit": "20",
                           "tz": "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"})
    wh.insert_priced([priced(f"{team}-old", team, "8", NOW - timedelta(hours=3))]  # not the last hour's burn
                     + [priced(f"{team}-{i}", team, "0.035", NOW - timedelta(minutes=30 - i)) for i in range(30)])
    (name, state), = rebuild_states(wh, [budget], now=NOW)[0]
    owner = BudgetOwner({budget.name: budget})
    owner.restore(name, state)
    (_, record), = owner.republish(name, NOW).enforcement
    assert Decimal(record["spend"]) == Decimal("9.05")
    # 1.05 USD over the last 30 minutes: 2.1 USD an hour until the period end, not "not enough data yet"
    assert record["projected"] is not None and Decimal(record["projected"]) >= 20, record
    _, alerts = rebuild_states(wh, [budget], now=NOW)
    forecast, = [a for a in alerts if a["kind"] == "forecast"]  # never alerted before: alerted by the rebuild
    assert (forecast["details"]["projected"], forecast["details"]["expected_breach_at"]) == (
        record["projected"], record["expected_breach_at"])


def test_a_rebuild_knows_the_whole_quiet_hour_before_a_few_minutes_of_calls(wh):
    """The warehouse holds the whole hour before the rebuild, quiet minutes too: with the month's earlier spend, calls
    of its last 5 minutes are 5 minutes of spend in an hour (a ledger that ran through that hour had its older
    minutes, and projected), not "not enough data yet" because the first call of the hour was 5 minutes ago."""
    from streams.budgets.owner import BudgetOwner

    team = f"t-{uuid.uuid4().hex[:6]}"
    offset = 12 - NOW.hour
    budget = parse_budget({"name": f"q-{team}", "scope": {"team": team}, "period": "month", "limit": "20",
                           "tz": "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"})
    wh.insert_priced([priced(f"{team}-old", team, "8", NOW - timedelta(hours=3))]
                     + [priced(f"{team}-{i}", team, "0.01", NOW - timedelta(minutes=5 - i)) for i in range(5)])
    (name, state), = rebuild_states(wh, [budget], now=NOW)[0]
    owner = BudgetOwner({budget.name: budget})
    owner.restore(name, state)
    (_, record), = owner.republish(name, NOW).enforcement
    # 0.05 USD in the hour: 0.05 USD an hour until the period end
    assert record["projected"] is not None and Decimal(record["projected"]) > Decimal("8.05"), record


def test_a_quiet_budgets_runaway_is_forecast_from_its_first_minutes(wh):
    """walk36: `growth-agent-daily`, with no spend in its day when `up` started, read "not enough data yet" at 35 % and
    80 % while an agent loop took it from 0 to 102 % in ~4 minutes: no forecast alert went out before the 100 % one.
    The rebuild's warehouse had seen the whole quiet hour, but only a budget with earlier spend was marked observed
    from the hour's start, so the 10-minute guard ran from the loop's first call. An hour known quiet is an hour of
    burn: 3 minutes of the loop are 3 minutes of spend in that hour, and project the breach."""
    import orjson

    from streams.budgets.owner import BudgetOwner
    from streams.budgets.routing import BudgetRouter, spend_messages

    team = f"t-{uuid.uuid4().hex[:6]}"
    offset = 12 - NOW.hour  # a zone where NOW is about noon: half a day left in the budget's day
    budget = parse_budget({"name": f"r-{team}", "scope": {"team": team}, "period": "day", "limit": "0.10",
                           "thresholds": [50, 80, 100], "action": "block",
                           "tz": "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"})
    (name, state), = rebuild_states(wh, [budget], now=NOW)[0]  # nothing spent today
    owner = BudgetOwner({budget.name: budget})
    owner.restore(name, state)
    owner.runtimes[name].seed_since = None
    router = BudgetRouter()
    router.set_budgets({budget.name: budget})
    loop = [priced(f"{team}-{i}", team, "0.002", NOW + timedelta(seconds=10 * i)) for i in range(18)]  # 36 %
    messages = [orjson.loads(v) for _, v in spend_messages(router.route([(0, i, e) for i, e in enumerate(loop)]))]
    out = owner.process(messages, now=NOW + timedelta(minutes=3))
    forecast, = [a for a in out.alerts if a["kind"] == "forecast"]
    (_, record), = [(n, r) for n, r in out.enforcement if r is not None]
    assert record["projected"] is not None and Decimal(record["projected"]) > Decimal("0.10"), record
    assert (forecast["details"]["projected"], forecast["details"]["expected_breach_at"]) == (
        record["projected"], record["expected_breach_at"])
