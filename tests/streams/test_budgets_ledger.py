"""Ledger: thresholds fire once per (budget, period, threshold) despite duplicates, redelivery and restore;
new periods start clean; forecasts fire before the breach; decisions follow current spend."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from streams.budgets import BudgetLedger, crossing_id, parse_budget

UTC = timezone.utc
T0 = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


def ev(event_id, cost, ts=T0, team="search", tokens=(100, 50), **attribution):
    return {"event_id": event_id, "ts": ts.isoformat(), "source": "sdk", "provider": "openai", "model": "gpt-4o",
            "attribution": {"team": team, **attribution}, "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]},
            "tokens_source": "provider", "cost_usd": str(cost), "pricing_status": "priced"}


def budget(name="search", **overrides):
    data = {"name": name, "scope": {"team": "search"}, "limit": "10", "period": "month", "tz": "Europe/Berlin",
            "action": "block"}
    data.update(overrides)
    return parse_budget(data)


def kinds(crossings):
    return [(c.kind, c.threshold) for c in crossings]


def test_thresholds_fire_once_each_aggregated_per_batch_despite_duplicates():
    ledger = BudgetLedger([budget()])
    first = ledger.apply([ev("a", "3"), ev("b", "3"), ev("a", "3"), ev("x", "9", team="other")])
    assert kinds(first) == [("threshold", 50)]  # 6 of 10; duplicate 'a' and other team ignored
    c = first[0]
    assert c.spend == Decimal("6") and c.percent == Decimal("60.00") and c.action == "alert"
    assert c.id == crossing_id("search", "month:2026-11@Europe/Berlin", 50)
    assert ledger.apply([ev("a", "3"), ev("b", "3")]) == []  # redelivered batch: nothing, spend unchanged
    both = ledger.apply([ev("c", "2"), ev("d", "2.5")])  # 10.5: 80 and 100 in one batch, one crossing each
    assert kinds(both) == [("threshold", 80), ("threshold", 100)]
    assert both[1].action == "block" and both[1].to_json()["spend"] == "10.5"
    assert ledger.apply([ev("e", "5")]) == []
    assert ledger.stats["duplicates"] == 3


def test_restore_from_snapshot_does_not_refire_or_double_count():
    ledger = BudgetLedger([budget()])
    ledger.apply([ev("a", "6")])
    snap = json.loads(json.dumps(ledger.snapshot()))  # must be JSON-able
    restarted = BudgetLedger([budget()])
    restarted.restore(snap)
    assert restarted.apply([ev("a", "6")]) == []  # redelivery after the restart
    assert kinds(restarted.apply([ev("b", "2")])) == [("threshold", 80)]
    assert restarted.spend["search"]["month:2026-11@Europe/Berlin"] == Decimal("8")


def test_new_period_starts_clean_in_budget_zone():
    ledger = BudgetLedger([budget()])
    ledger.apply([ev("a", "9", ts=datetime(2026, 11, 30, 22, 0, tzinfo=UTC))])  # 23:00 Berlin, November
    december = ledger.apply([ev("b", "6", ts=datetime(2026, 11, 30, 23, 30, tzinfo=UTC))])  # 00:30 Berlin
    assert [(c.period_key, c.threshold) for c in december] == [("month:2026-12@Europe/Berlin", 50)]
    assert december[0].spend == Decimal("6")


def test_tokens_budget_and_rebuild_from_warehouse_totals():
    ledger = BudgetLedger([budget(metric="tokens", limit=1000, thresholds=[50, 100])])
    assert kinds(ledger.apply([ev("a", "0", tokens=(300, 100))])) == []
    key = "month:2026-11@Europe/Berlin"
    fired = ledger.rebuild_from_totals("search", key, 600)  # the warehouse knows better
    assert kinds(fired) == [("threshold", 50)] and ledger.spend["search"][key] == 600
    assert ledger.rebuild_from_totals("search", key, 650) == []  # already fired


def test_forecast_fires_once_before_breach_with_breach_time():
    ledger = BudgetLedger([budget(limit="100", thresholds=[100])])
    start = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)  # 01:00 Berlin, an hour into the period
    # $1 every 10 minutes for 40 minutes: 6 $/h with ~30 days left projects far beyond $100
    crossings = []
    for i in range(5):
        crossings += ledger.apply([ev(f"f{i}", "1", ts=start + timedelta(minutes=10 * i))])
    assert kinds(crossings) == [("forecast", None)]
    forecast = crossings[0]
    assert forecast.spend < 100 and forecast.projected >= 100
    assert forecast.at < forecast.expected_breach_at < forecast.period_end
    assert ledger.apply([ev("f9", "1", ts=start + timedelta(minutes=50))]) == []  # once per period
    assert kinds(ledger.apply([ev("big", "95", ts=start + timedelta(minutes=55))])) == [("threshold", 100)]


def test_no_forecast_for_a_slow_burn_or_too_early():
    ledger = BudgetLedger([budget(limit="100")])
    early = ledger.apply([ev("a", "40", ts=datetime(2026, 10, 31, 23, 1, tzinfo=UTC))])  # 1 min into the month
    assert kinds(early) == []
    ledger2 = BudgetLedger([budget(limit="100000")])
    assert ledger2.apply([ev(f"s{i}", "0.01", ts=T0 + timedelta(minutes=i)) for i in range(30)]) == []


def test_decisions_follow_current_spend_and_severity():
    ledger = BudgetLedger([budget(), budget("ana", scope={"user": "ana"}, limit="1", action="throttle"),
                           budget("alert-only", scope={}, limit="1", action="alert")])
    at = T0 + timedelta(minutes=1)
    assert ledger.decision({"team": "search"}, at=at).decision == "allow"
    ledger.apply([ev("a", "2", user="ana")])
    throttled = ledger.decision({"team": "search", "user": "ana"}, at=at)
    assert throttled.decision == "throttle" and throttled.budget == "ana"
    assert throttled.until == datetime(2026, 11, 30, 23, tzinfo=UTC)
    ledger.apply([ev("b", "9")])
    blocked = ledger.decision({"team": "search", "user": "ana"}, at=at)
    assert blocked.decision == "block" and blocked.budget == "search" and "search" in blocked.reason
    assert ledger.decision({"team": "other"}, at=at).decision == "allow"  # alert-only budgets never block
    assert ledger.decision({"team": "search"}, at=datetime(2026, 12, 2, tzinfo=UTC)).decision == "allow"


def test_rolling_window_fires_rearms_and_unblocks():
    ledger = BudgetLedger([budget(period="rolling:24h", thresholds=[100], action="block")])
    fired = ledger.apply([ev("a", "6"), ev("b", "5", ts=T0 + timedelta(hours=2))])
    assert kinds(fired) == [("threshold", 100)]
    blocked = ledger.decision({"team": "search"}, at=T0 + timedelta(hours=3))
    assert blocked.decision == "block" and blocked.until == T0 + timedelta(hours=24)  # 'a' leaves the window
    assert ledger.apply([ev("c", "1", ts=T0 + timedelta(hours=3))]) == []  # still latched
    # a day later 'a' and 'b' left the window: spend below, re-armed; then a new breach fires again
    assert ledger.apply([ev("d", "1", ts=T0 + timedelta(hours=30))]) == []
    again = ledger.apply([ev("e", "10", ts=T0 + timedelta(hours=31))])
    assert kinds(again) == [("threshold", 100)] and again[0].id != fired[0].id


def test_budget_redefinition_rearms_and_deletion_drops_state():
    ledger = BudgetLedger([budget()])
    ledger.apply([ev("a", "6")])
    ledger.set_budgets([budget(limit="20")])  # same scope: spend kept, thresholds re-armed
    assert ledger.spend["search"]["month:2026-11@Europe/Berlin"] == Decimal("6")
    assert kinds(ledger.apply([ev("b", "5")])) == [("threshold", 50)]
    ledger.set_budgets([])
    assert "search" not in ledger.spend


def test_a_usd_budget_without_spend_yet_has_a_decimal_spend_not_the_integer_zero():
    """walk21: a new USD budget answered `"spend": 0` (refused reservations) and `"committed": 0` (GET
    /v1/reservations) while every other amount, and the same fields a moment later, are decimal strings: `money()`
    keeps ints as ints (token counts), and the ledger's default for a period without spend was the int 0."""
    from tokenmeter.records import money

    ledger = BudgetLedger([budget(), budget("rolling", period="rolling:24h"), budget("tokens", metric="tokens",
                                                                                    limit=1000)])
    for name in ("search", "rolling"):
        spend = ledger.current_spend(ledger.budgets[name], T0)[0]
        assert isinstance(spend, Decimal) and money(spend) == "0", (name, spend)
    assert ledger.current_spend(ledger.budgets["tokens"], T0)[0] == 0  # tokens stay an integer
