"""Routing priced events to budgets, the owner's exact dedupe, alert records, resolves, and decisions."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from streams.budgets import parse_budget
from streams.budgets.decisions import EnforcementView, attributes_from_request, http_status
from streams.budgets.owner import BudgetOwner
from streams.budgets.routing import BudgetRouter, spend_messages

UTC = timezone.utc
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def priced(event_id, cost, team="search", model="gpt-4o", status="ok", pricing_status="priced", ts=NOW, tags=None):
    return {"event_id": event_id, "ts": ts.isoformat(), "model": model, "provider": "openai", "status": status,
            "attribution": {"team": team, "user": "u1", "tags": tags or {}},
            "usage": {"input_tokens": 100, "output_tokens": 50}, "cost_usd": str(cost), "pricing_status": pricing_status}


def budgets(**extra):
    data = {"name": "search", "scope": {"team": "search"}, "limit": "10", "action": "block",
            "notify": ["slack=https://hooks.slack.com/services/T/B/x"]}
    data.update(extra)
    return {data["name"]: parse_budget(data)}


def owner_with(defs, state=None):
    owner = BudgetOwner(defs, dashboard_url="http://dash:8050/")
    for name in defs:
        owner.restore(name, state)
    return owner


def messages(router, origins):
    return [orjson.loads(v) for _, v in spend_messages(router.route(origins))]


def test_router_matches_scopes_and_keeps_record_entries_together():
    defs = budgets() | budgets(name="gpt", scope={"model": "gpt-4o"}) | budgets(name="prod", scope={"tag:env": "prod"})
    router = BudgetRouter(defs.values())
    routed = router.route([(0, 5, priced("a", "1")), (0, 5, priced("b", "2", team="ads", tags={"env": "prod"})),
                           (1, 7, priced("c", "3", status="error"))])
    assert [e[2] for e in routed["search"]] == ["a", "c"]  # a failed call counts what it cost
    assert [e[2] for e in routed["gpt"]] == ["a", "b", "c"]
    assert [e[2] for e in routed["prod"]] == ["b"]
    many = {"search": [[0, i // 3, f"e{i}", NOW.isoformat(), "1", 0] for i in range(12000)]}
    chunks = [orjson.loads(v)["entries"] for _, v in spend_messages(many)]
    assert sum(map(len, chunks)) == 12000
    for left, right in zip(chunks, chunks[1:]):
        assert left[-1][1] != right[0][1]  # a usage record never spans two messages


def test_a_small_budgets_alert_keeps_the_digits_that_tell_spend_from_limit():
    """A $0.10 daily budget crossed at $0.1044 read "reached 100%: 0.10 of 0.10 USD" (the demo's growth-agent-daily);
    amounts below a dollar keep 4 decimals, as on the dashboard. From a dollar up they stay cents (asserted below)."""
    defs = budgets(limit="0.10")
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    [alert] = [a for a in owner.process(messages(router, [(0, 1, priced("a", "0.1044"))]), now=NOW).alerts
               if a["details"]["threshold"] == 100]
    assert "reached 100%: 0.1044 of 0.1000 USD" in alert["title"]
    assert "is 0.1044 USD, 104.40% of the limit 0.1000 USD" in alert["summary"]
    assert alert["details"]["spend"] == "0.1044"  # the record keeps the exact amount


def test_owner_counts_redelivered_entries_once_and_alerts_once():
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    batch = messages(router, [(0, 1, priced("a", "6")), (0, 2, priced("b", "1"))])
    first = owner.process(batch, now=NOW)
    assert [a["details"]["threshold"] for a in first.alerts] == [50]
    alert = first.alerts[0]
    assert alert["source"] == "budget" and alert["severity"] == "warning" and alert["action"] == "trigger"
    assert alert["dedup_key"] == "tokenmeter:budget:search:month:2026-11@UTC"
    assert alert["dashboard_url"] == "http://dash:8050/budgets?budget=search"
    assert "7.00 of 10.00 USD" in alert["title"]
    again = owner.process(batch, now=NOW)  # the worker re-priced the same records after a crash
    assert again.alerts == [] and owner.stats["skipped_redelivered"] == 2
    replay = owner.process(messages(router, [(0, 9, priced("a", "6"))]), now=NOW)  # same id, new record
    assert replay.alerts == []
    state = dict(first.states)["search"]
    restarted = owner_with(defs, orjson.loads(orjson.dumps(state)))
    assert restarted.process(batch, now=NOW).alerts == []  # restored high marks: still once
    over = restarted.process(messages(router, [(0, 10, priced("c", "3.5"))]), now=NOW)
    assert [a["details"]["threshold"] for a in over.alerts] == [80, 100]
    assert over.alerts[-1]["severity"] == "critical"
    record = dict(over.enforcement)["search"]
    assert record["action"] == "block" and Decimal(record["spend"]) == Decimal("10.5")
    assert record["until"] == "2026-12-01T00:00:00Z" and record["percent"] == "105.00"


def test_a_resend_in_the_same_batch_does_not_hide_its_first_copy():
    """The router re-sends a batch after a rebalance: both copies can reach the owner in one batch. The first copy
    counts; the second is skipped (found with two workers: spend stayed 0 and the 50% alert never fired)."""
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    once = messages(router, [(3, 0, priced("a", "3.5")), (3, 0, priced("b", "3.5"))])
    out = owner.process(once + once, now=NOW)
    assert [a["details"]["threshold"] for a in out.alerts] == [50]
    assert Decimal(dict(out.enforcement)["search"]["spend"]) == Decimal("7")
    assert owner.stats["skipped_redelivered"] == 2
    assert owner.process(messages(router, [(3, 4, priced("a", "3.5"))]), now=NOW).alerts == []  # id replayed
    # a re-send skipped by its offset, then the same id in a new usage record, in one batch: neither counts
    both = owner.process(once + messages(router, [(3, 7, priced("b", "3.5"))]), now=NOW)
    assert both.alerts == [] and Decimal(owner.runtimes["search"].ledger.snapshot()["spend"]["search"]
                                        ["month:2026-11@UTC"]) == Decimal("7")


def test_unpriced_events_are_reported_in_alerts_and_decisions():
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    out = owner.process(messages(router, [(0, 1, priced("a", "0", pricing_status="unpriced", model="x")),
                                          (0, 2, priced("b", "9"))]), now=NOW)
    assert "1 event in this scope could not be priced (unknown model) and is not in spend." in out.alerts[-1]["summary"]
    assert out.alerts[-1]["details"]["unpriced_events"] == 1
    assert dict(out.enforcement)["search"]["unpriced_events"] == 1


def test_new_period_and_raised_limit_resolve_the_incident():
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    owner.process(messages(router, [(0, 1, priced("a", "12"))]), now=NOW)
    resolved = owner.tick(now=datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    assert [a["action"] for a in resolved.alerts] == ["resolve"]
    assert resolved.alerts[0]["dedup_key"] == "tokenmeter:budget:search:month:2026-11@UTC"
    assert dict(resolved.enforcement)["search"]["action"] == "allow"  # new period starts clean
    assert owner.tick(now=datetime(2026, 12, 1, 0, 2, tzinfo=UTC)).alerts == []

    owner2 = owner_with(defs)
    owner2.process(messages(router, [(0, 1, priced("a", "12"))]), now=NOW)
    raised = owner2.set_definitions(budgets(limit="50"), now=NOW)
    assert [a["action"] for a in raised.alerts] == ["resolve"]
    assert dict(raised.enforcement)["search"]["action"] == "allow"


def test_enforcement_view_decides_most_severe_unexpired_match():
    view = EnforcementView()
    later = (NOW + timedelta(days=3)).isoformat().replace("+00:00", "Z")
    view.update("a", {"budget": "a", "scope": {"team": "search"}, "action": "throttle", "until": later,
                      "updated_at": "1"})
    view.update("b", {"budget": "b", "scope": {"team": "search", "model": "gpt-4o"}, "action": "block",
                      "until": later, "updated_at": "1"})
    view.update("c", {"budget": "c", "scope": {"team": "ads"}, "action": "block",
                      "until": (NOW - timedelta(seconds=1)).isoformat(), "updated_at": "1"})
    assert view.decide({"team": "search"}, now=NOW)["action"] == "throttle"
    assert view.decide({"team": "search", "model": "gpt-4o"}, now=NOW)["budget"] == "b"
    assert view.decide({"team": "ads"}, now=NOW) == {"action": "allow"}  # expired
    view.update("b", None)
    assert view.decide({"team": "search", "model": "gpt-4o"}, now=NOW)["action"] == "throttle"
    assert http_status("block") == 403 and http_status("throttle") == 429


def test_request_attributes_from_query_and_headers():
    attrs = attributes_from_request({"team": "search", "tag:env": "prod", "bogus": "x"},
                                    {"X-Tokenmeter-User": "bob", "X-Tokenmeter-Tag-Tier": "gold",
                                     "X-Tokenmeter-Team": "ignored-query-wins", "Host": "h"}, "x-tokenmeter-")
    assert attrs == {"team": "search", "tag:env": "prod", "user": "bob", "tag:tier": "gold"}


def test_restore_under_a_changed_definition_follows_the_ledgers_rule():
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    out = owner.process(messages(router, [(0, 1, priced("a", "9"))]), now=NOW)  # 90%: 50 and 80 fired
    state = orjson.loads(orjson.dumps(dict(out.states)["search"]))

    raised = owner_with(budgets(limit="20"), state)  # limit changed while the owner was away: spend kept,
    rt = raised.runtimes["search"]                    # thresholds re-armed against the new limit
    assert rt.ledger.current_spend(rt.budget, NOW)[0] == Decimal(9) and rt.applied == {"0": 1}
    again = raised.process(messages(router, [(0, 2, priced("b", "2"))]), now=NOW)
    assert [a["details"]["threshold"] for a in again.alerts] == [50]  # 11 of 20

    moved = owner_with(budgets(scope={"team": "ads"}), state)  # what is counted changed: spend starts over
    rt = moved.runtimes["search"]
    assert rt.ledger.current_spend(rt.budget, NOW)[0] == 0


def test_malformed_spend_messages_are_skipped_and_counted_never_crash_the_owner():
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    good = messages(router, [(0, 1, priced("a", "11"))])
    hostile = [{"budget": "search", "entries": "nope"}, {"budget": "search", "entries": [[0, "x", "b", 1, "1", 0]]},
               {"budget": "search", "entries": [[0, 2, "c", "not a time", "1", 0]]},
               {"budget": "search", "entries": [[0, 3, "d", NOW.isoformat(), "NaN", 0]]},
               {"budget": "search", "entries": [[0, 4, "e", NOW.isoformat(), [1], 0]]},
               {"budget": "search", "entries": [[0, 5]]}, {"budget": ["search"]}]
    out = owner.process(hostile + good, now=NOW)
    assert owner.stats["malformed"] == 6  # the unhashable budget name is no budget of ours: ignored
    (_, record), = out.enforcement
    assert record["action"] == "block" and Decimal(record["spend"]) == Decimal(11)


def test_alert_texts_and_reasons_name_the_period_in_words_and_keep_the_key_in_the_fields():
    """The texts read "Spend in month:2026-11@UTC is ..." and "... for day:2026-12-05@UTC: block until ..."."""
    defs = budgets() | budgets(name="daily", period="day", limit="1")
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    out = owner.process(messages(router, [(0, 1, priced("a", "12"))]), now=NOW)
    summaries = {a["details"]["budget"]: a["summary"] for a in out.alerts if a["details"]["threshold"] == 100}
    assert summaries["search"].startswith("Spend in this month (November 2026, UTC) is 12.00 USD")
    assert summaries["daily"].startswith("Spend in today (2026-11-20, UTC) is 12.00 USD")
    assert {a["details"]["period_key"] for a in out.alerts} == {"month:2026-11@UTC", "day:2026-11-20@UTC"}
    reason = dict(out.enforcement)["daily"]["reason"]
    assert "of 1.00 USD for today (2026-11-20, UTC): block until" in reason, reason
    assert dict(out.enforcement)["daily"]["period_key"] == "day:2026-11-20@UTC"
    resolved = owner.tick(now=datetime(2026, 12, 1, 0, 1, tzinfo=UTC))
    texts = {a["details"]["budget"]: a["summary"] for a in resolved.alerts}
    assert texts["search"].startswith("The alerts of last month (November 2026, UTC) for budget search are resolved")
    assert texts["daily"].startswith("The alerts of 2026-11-20 (UTC) for budget daily are resolved"), texts


def test_a_rolling_budgets_breach_is_one_incident_resolved_when_its_window_has_slid_past_the_spend():
    """walk23: a rolling budget's alerts carried the key of the window each threshold fired in (PagerDuty opened one
    incident per hour a threshold was crossed) and none was ever resolved (resolves were for calendar periods)."""
    defs = budgets(period="rolling:24h")
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    first = owner.process(messages(router, [(0, 1, priced("a", "6"))]), now=NOW)  # 50 % at 12:00
    later = NOW + timedelta(hours=3)
    second = owner.process(messages(router, [(0, 2, priced("b", "5", ts=later))]), now=later)  # 80, 100 % at 15:00
    triggers = first.alerts + second.alerts
    assert [a["details"]["threshold"] for a in triggers] == [50, 80, 100]
    assert len({a["dedup_key"] for a in triggers}) == 1  # one incident, updated by each threshold
    assert owner.tick(now=NOW + timedelta(hours=20)).alerts == []  # both calls still in the window
    assert owner.tick(now=NOW + timedelta(hours=25)).alerts == []  # 5 of 10 left: still above 50 %
    resolved = owner.tick(now=NOW + timedelta(hours=28)).alerts  # the window has slid past both calls
    assert [a["action"] for a in resolved] == ["resolve"] and resolved[0]["dedup_key"] == triggers[0]["dedup_key"]
    assert owner.tick(now=NOW + timedelta(hours=29)).alerts == []  # once
    again = NOW + timedelta(hours=30)
    fresh = owner.process(messages(router, [(0, 3, priced("c", "11", ts=again))]), now=again).alerts
    assert [a["details"]["threshold"] for a in fresh] == [50, 80, 100]  # a new breach, a new incident
    assert fresh[0]["dedup_key"] != triggers[0]["dedup_key"] and len({a["dedup_key"] for a in fresh}) == 1


def test_deleting_a_budget_with_an_open_incident_resolves_it():
    """walk23: a budget deleted while over its limit dropped its state; its PagerDuty incident stayed open."""
    defs = budgets()
    router, owner = BudgetRouter(defs.values()), owner_with(defs)
    trigger = owner.process(messages(router, [(0, 1, priced("a", "12"))]), now=NOW).alerts[-1]
    out = owner.set_definitions({}, now=NOW)
    assert [a["action"] for a in out.alerts] == ["resolve"] and out.alerts[0]["dedup_key"] == trigger["dedup_key"]
    assert out.states == [("search", None)]
    quiet = owner_with(defs)  # no incident: nothing to resolve
    assert quiet.set_definitions({}, now=NOW).alerts == []
