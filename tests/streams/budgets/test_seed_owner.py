"""The owner's side of a seed (streams/budgets/seed.py), pure: the warehouse's spend of the period less its copies of
the events counted live is added once; the seeded ids are remembered; the thresholds passed before the budget existed
alert once; a pending seed survives a restore and a limit change, and a scope change starts one again."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from decimal import Decimal as D

import orjson

from streams.budgets import parse_budget
from streams.budgets.owner import BudgetOwner
from streams.budgets.periods import hour_floor, hour_key
from streams.budgets.routing import BudgetRouter, spend_messages
from streams.budgets.seed import LOADER_GROUP, seeded_ids, seeded_messages

UTC = timezone.utc
NOW = datetime(2026, 11, 20, 12, 30, tzinfo=UTC)
HOUR = NOW.replace(minute=0)


def priced(event_id, cost, ts=NOW):
    return {"event_id": event_id, "ts": ts.isoformat(), "model": "gpt-4o", "provider": "openai", "status": "ok",
            "attribution": {"team": "search", "tags": {}}, "usage": {"input_tokens": 1, "output_tokens": 1},
            "cost_usd": str(cost), "pricing_status": "priced"}


def defs(**extra):
    data = {"name": "search", "scope": {"team": "search"}, "period": "month", "limit": "10", "action": "block",
            "thresholds": [50, 80, 100]} | extra
    return {data["name"]: parse_budget(data)}


def live(owner, router, offset, *events):
    return owner.process([orjson.loads(v) for _, v in spend_messages(router.route(
        [(0, offset + i, e) for i, e in enumerate(events)]))], now=NOW)


def spend(owner, name="search"):
    return Decimal(owner.enforcement_record(owner.runtimes[name], NOW)["spend"])


def test_the_seed_adds_the_warehouse_spend_less_its_copies_of_live_events_and_alerts_once():
    budgets = defs()
    owner, router = BudgetOwner(budgets), BudgetRouter(budgets.values())
    owner.restore("search", None)
    assert owner.seeds_pending() == ["search"]
    assert owner.enforcement_record(owner.runtimes["search"], NOW)["spend_before_definition"] == "pending"
    live(owner, router, 0, priced("live-1", "1"))  # counted live; the warehouse has it too by the seed
    assert owner.runtimes["search"].seed_live == {"live-1"}
    # warehouse: 8.6 in the period (7.6 from before the budget, live-1's 1); its copy of live-1 is left out
    out = owner.complete_seed("search", {HOUR - timedelta(hours=5): Decimal("7.6"), HOUR: Decimal("1")},
                              {HOUR: Decimal("1")}, ["old-2", "old-1", "live-1"], now=NOW)
    assert spend(owner) == Decimal("8.6")
    assert owner.seeds_pending() == []
    (alert,) = out.alerts  # 50 % and 80 % passed before the budget existed: one alert
    assert alert["details"]["threshold"] == 80 and alert["details"]["passed_thresholds"] == [50, 80]
    assert "was defined at 86.00%" in alert["title"] and "50 %, 80 %" in alert["summary"]
    assert out.enforcement[0][1]["spend_before_definition"] == "counted"
    # a resend of a seeded event counts once; new spend crosses 100 % live, alerted as usual
    out = live(owner, router, 1, priced("old-1", "7.6"), priced("new", "1.4"))
    assert spend(owner) == Decimal("10.0")
    assert [a["details"]["threshold"] for a in out.alerts] == [100]
    assert owner.state_of(owner.runtimes["search"])["seed"] is None


def test_a_pending_seed_survives_a_restore_and_a_limit_change_and_a_scope_change_starts_one():
    budgets = defs()
    owner, router = BudgetOwner(budgets), BudgetRouter(budgets.values())
    owner.restore("search", None)
    live(owner, router, 0, priced("live-1", "2"))
    state = owner.state_of(owner.runtimes["search"])
    assert state["seed"]["since"]
    again = BudgetOwner(budgets)
    again.restore("search", orjson.loads(orjson.dumps(state)))
    rt = again.runtimes["search"]
    assert again.seeds_pending() == ["search"] and not rt.seed_live_complete  # seed.py re-reads the live ids
    again.remember("search", [[0, 0, "live-1", NOW.isoformat(), "2", 0]])
    assert rt.seed_live == {"live-1"}

    again.set_definitions(defs(limit="20"), now=NOW)  # the limit: spend and the pending seed kept
    assert again.seeds_pending() == ["search"] and spend(again) == Decimal("2")
    again.complete_seed("search", {HOUR: Decimal("5")}, {HOUR: Decimal("2")}, [], now=NOW)
    assert spend(again) == Decimal("5")
    again.set_definitions(defs(limit="20", thresholds=[90]), now=NOW)  # thresholds: spend kept, no seed
    assert again.seeds_pending() == [] and spend(again) == Decimal("5")
    again.set_definitions(defs(limit="20", scope={"team": "ads"}), now=NOW)  # counted differently: seeded again
    assert again.seeds_pending() == ["search"] and spend(again) == Decimal("0")


def test_a_rolling_budget_is_seeded_per_hour_and_a_rebuilt_one_is_not_pending():
    budgets = defs(period="rolling:3h", limit="100")
    owner = BudgetOwner(budgets)
    owner.restore("search", None)
    start, end = owner.seed_window("search", NOW)
    assert (start, end) == (hour_floor(NOW) - timedelta(hours=3), hour_floor(NOW) + timedelta(hours=1))
    owner.complete_seed("search", {HOUR - timedelta(hours=2): Decimal("30"), HOUR: Decimal("25")}, {}, [], now=NOW)
    assert owner.runtimes["search"].ledger.spend["search"] == {hour_key(HOUR - timedelta(hours=2)): Decimal("30"),
                                                               hour_key(HOUR): Decimal("25")}
    assert spend(owner) == Decimal("55")
    state, _ = BudgetOwner(budgets).rebuild("search", NOW, {}, hour_totals={hour_key(HOUR): Decimal("1")})
    assert state["seed"] is None  # `budget rebuild` took the whole window from the warehouse


def test_the_seeded_ids_travel_on_budget_spend_oldest_first_in_small_messages():
    ids = [f"id-{i}" for i in range(12_000)]  # newest first, as the warehouse lists them
    values = seeded_messages("search", ids)
    assert len(values) == 3 and all(len(v) < 1_000_000 for v in values)
    assert [i for v in values for i in seeded_ids(v)] == list(reversed(ids))
    assert all(orjson.loads(v)["entries"] == [] for v in values)  # nothing for the owner to apply
    assert seeded_ids(b'{"budget": "search", "entries": []}') == [] and seeded_ids(b"not json") == []


def test_the_loader_group_is_the_loaders():
    from warehouse.loader import GROUP_ID

    assert LOADER_GROUP == GROUP_ID


def test_a_rebuilds_counted_ids_are_marked_by_the_owner_of_that_rebuild_only():
    """walk33: `budget rebuild` writes the ids its total counted to budget-spend; an owner restored from that rebuild
    skips a re-send of one, an owner that counted live meanwhile (its state not the rebuild's) ignores them, since
    it may not have applied an id's own entry yet."""
    from streams.budgets.seed import seeded_messages

    budgets = defs()
    owner, router = BudgetOwner(budgets), BudgetRouter(budgets.values())
    state, _ = owner.rebuild("search", NOW, {}, period_total=D("3"))
    messages = seeded_messages("search", ["old-1"], state["rebuilt_at"])
    ids = [orjson.loads(m) for m in messages]
    # read back from history (a restored owner's duplicate window): the same rule
    assert seeded_ids(messages[0], state["rebuilt_at"]) == ["old-1"] and seeded_ids(messages[0]) == []
    restored = BudgetOwner(budgets)
    restored.restore("search", orjson.loads(orjson.dumps(state)))
    restored.process(ids, now=NOW)
    live(restored, router, 0, priced("old-1", "3"), priced("new", "1"))
    assert spend(restored) == D("4")

    other = BudgetOwner(budgets)
    other.restore("search", None)
    other.complete_seed("search", {}, {}, [], now=NOW)
    other.process(ids, now=NOW)  # not this owner's rebuild: its entry for old-1 still counts
    live(other, router, 0, priced("old-1", "3"))
    assert spend(other) == D("3")
