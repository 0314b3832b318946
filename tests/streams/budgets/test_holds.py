"""The owner's holds: admission against committed + held, settlement by request id, release, expiry, restore."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import orjson

from streams.budgets import parse_budget
from streams.budgets.owner import BudgetOwner
from streams.budgets.routing import BudgetRouter, spend_messages

UTC = timezone.utc
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)


def defs(**extra):
    out = {}
    for data in ({"name": "search", "scope": {"team": "search"}, "limit": "10", "action": "block"},
                 {"name": "gpt-tokens", "scope": {"model": "gpt-4o"}, "metric": "tokens", "limit": 1000,
                  "action": "throttle"},
                 {"name": "watch", "scope": {"team": "search"}, "limit": "1", "action": "alert"}):
        out[data["name"]] = parse_budget(data | extra.get(data["name"], {}))
    return out


def owner_with(budgets, state=None, holds=None):
    owner = BudgetOwner(budgets)
    for name in budgets:
        owner.restore(name, state.get(name) if state else None, holds)
    return owner


def priced(event_id, cost, tokens=(100, 50), tags=None):
    return {"event_id": event_id, "ts": NOW.isoformat(), "model": "gpt-4o", "provider": "openai", "status": "ok",
            "attribution": {"team": "search", "tags": tags or {}},
            "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}, "cost_usd": str(cost),
            "pricing_status": "priced"}


def usage_messages(budgets, origins):
    return [orjson.loads(v) for _, v in spend_messages(BudgetRouter(budgets.values()).route(origins))]


def test_admission_counts_committed_spend_and_open_holds_all_or_none():
    budgets = defs()
    owner = owner_with(budgets)
    owner.process(usage_messages(budgets, [(0, 1, priced("e1", "4"))]), now=NOW)
    placed, refusal = owner.admit({"search": D("5"), "gpt-tokens": 500, "watch": D("5")}, "r1", "req-1", LATER, NOW)
    assert refusal is None and len(placed) == 3  # the alert-only budget holds but never refuses
    assert owner.headroom("search", NOW)["headroom"] == "1"  # 10 - 4 committed - 5 held
    placed, refusal = owner.admit({"search": D("1.01"), "gpt-tokens": 10}, "r2", "req-2", LATER, NOW)
    assert placed == [] and refusal["budget"] == "search" and refusal["action"] == "block"
    assert (refusal["spend"], refusal["held"], refusal["headroom"], refusal["worst_case"]) == ("4", "5", "1", "1.01")
    assert refusal["until"] is None and refusal["retry_after_s"] == 1  # holds may come back
    assert owner.held("gpt-tokens") == 500  # nothing of the refused reservation was held
    placed, refusal = owner.admit({"search": D("1")}, "r3", "req-3", LATER, NOW)
    assert refusal is None  # exactly at the limit is within it
    _, refusal = owner.admit({"gpt-tokens": 501}, "r4", "req-4", LATER, NOW)
    assert refusal["action"] == "throttle" and refusal["headroom"] == 350  # 1000 - 150 committed - 500 held


def test_the_usage_with_the_request_id_settles_the_hold_and_commits_the_real_cost():
    budgets = defs()
    owner = owner_with(budgets)
    owner.admit({"search": D("9")}, "r1", "req-1", LATER, NOW)
    owner.admit({"search": D("1")}, "r2", "req-2", LATER, NOW)
    out = owner.process(usage_messages(budgets, [(0, 1, priced("req-1", "2.5"))]), now=NOW)
    assert [h.reservation_id for h in out.holds] == ["r1"]
    view = owner.headroom("search", NOW)
    assert (view["committed"], view["held"], view["headroom"], view["settled"]) == ("2.5", "1", "6.5", 1)
    # a source whose event ids are its own carries the gateway's id in the tag request_id
    out = owner.process(usage_messages(budgets, [(0, 2, priced("evt-9", "0.5", tags={"request_id": "req-2"}))]),
                        now=NOW)
    assert [h.reservation_id for h in out.holds] == ["r2"] and owner.held("search") == 0
    # redelivery of the same usage neither counts twice nor finds a hold
    out = owner.process(usage_messages(budgets, [(0, 1, priced("req-1", "2.5"))]), now=NOW)
    assert out.holds == [] and owner.headroom("search", NOW)["committed"] == "3.0"


def test_release_and_expiry_are_counted_and_persisted():
    budgets = defs()
    owner = owner_with(budgets)
    owner.admit({"search": D("3"), "watch": D("3")}, "r1", "req-1", LATER, NOW)
    owner.admit({"search": D("3")}, "r2", "req-2", NOW + timedelta(seconds=30), NOW)
    assert [h.budget for h in owner.release("r1")] == ["search", "watch"]
    assert owner.release("r1") == []
    out = owner.tick(NOW + timedelta(seconds=31))
    assert [h.reservation_id for h in out.holds] == ["r2"]
    state = dict(out.states)["search"]
    assert state["reservations"] == {"admitted": 2, "refused": 0, "settled": 0, "released": 1, "expired": 1,
                                     "superseded": 0}
    restored = owner_with(budgets, state={"search": state})
    assert restored.headroom("search", NOW)["expired"] == 1


def test_a_restored_owner_holds_what_was_admitted_before():
    budgets = defs()
    first = owner_with(budgets)
    placed, _ = first.admit({"search": D("8")}, "r1", "req-1", LATER, NOW)
    records = [h.to_json() for h in placed] + [{"garbage": True}, {"budget": "search", "amount": "x"}]
    second = owner_with(budgets, holds=records)
    assert second.held("search") == D("8")
    _, refusal = second.admit({"search": D("2.01")}, "r2", "req-2", LATER, NOW)
    assert refusal is not None  # no double admission across a restart
    out = second.process(usage_messages(budgets, [(0, 1, priced("req-1", "1"))]), now=NOW)
    assert [h.reservation_id for h in out.holds] == ["r1"]


def test_entries_without_a_request_id_keep_their_old_shape_and_hostile_ones_are_skipped():
    budgets = defs()
    entries = BudgetRouter(budgets.values()).route([(0, 1, priced("a", "1")), (0, 2, priced("b", "1", tags={
        "request_id": "gw-1"}))])["search"]
    assert [len(e) for e in entries] == [6, 7] and entries[1][6] == "gw-1"
    owner = owner_with(budgets)
    bad = {"budget": "search", "entries": [[0, 3, "c", NOW.isoformat(), "1", 0, {"x": 1}]]}
    owner.process([bad], now=NOW)
    assert owner.stats["malformed"] == 1


def test_a_restored_hold_whose_usage_the_restored_spend_counts_is_settled_not_held_again():
    """The record sequence a kill -9 between the settled spend and the tombstone leaves (or a hold record that landed
    after the owner that committed its usage had read the topic): state with the usage applied, hold record open."""
    budgets = defs()
    first = owner_with(budgets)
    placed, _ = first.admit({"search": D("8")}, "r1", "req-1", LATER, NOW)
    first.admit({"search": D("1")}, "r2", "req-2", LATER, NOW)
    messages = usage_messages(budgets, [(0, 1, priced("req-1", "1")), (0, 5, priced("e-later", "0.5", tags={
        "request_id": "req-2"}))])
    out = first.process([messages[0] | {"entries": messages[0]["entries"][:1]}], now=NOW)
    state = dict(out.states)["search"]  # stored; the tombstone of r1 never written
    records = [h.to_json() for h in placed] + [first.holds_of("r2")[0].to_json()]
    second = owner_with(budgets, state={"search": state}, holds=records)
    assert second.held("search") == D("9")  # both read back as open
    entries = messages[0]["entries"]  # req-1 at usage offset 1 (applied), req-2's usage at offset 5 (not yet)
    settled = second.settle_counted("search", entries)
    assert [h.reservation_id for h in settled] == ["r1"]  # only the counted one: req-2 settles when applied
    view = second.headroom("search", NOW)
    # settled counted: the state was stored before its batch settled anything
    assert (view["committed"], view["held"], view["settled"]) == ("1", "1", 1)
    assert second.settle_counted("search", entries) == []


def test_usage_arriving_after_its_hold_expired_logs_the_hold_settled_at_its_real_amount():
    """The hold's TTL passed while its usage waited (a worker down longer than the TTL): the usage still commits as
    spend, and the hold's log gets a `settled` step with the real amount, so a rebuild after a broker loss holds
    that amount again if the priced event went with the broker (issue 15: "a hold that expired while its usage
    waited is not carried")."""
    budgets = defs()
    owner = owner_with(budgets)
    owner.admit({"search": D("3")}, "r1", "req-1", NOW + timedelta(seconds=30), NOW)
    expired = owner.tick(NOW + timedelta(seconds=31)).holds
    assert [(h.reservation_id, h.ended) for h in expired] == [("r1", "expired")]
    out = owner.process(usage_messages(budgets, [(0, 1, priced("req-1", "1.25"))]), now=NOW + timedelta(minutes=5))
    assert [(h.reservation_id, h.ended, h.settled_amount) for h in out.holds] == [("r1", "settled", D("1.25"))]
    view = owner.headroom("search", NOW + timedelta(minutes=5))
    assert (view["committed"], view["held"], view["expired"], view["settled"]) == ("1.25", "0", 1, 0)
    # once: a redelivery or a second usage record with the id does not log it again
    again = owner.process(usage_messages(budgets, [(0, 2, priced("e2", "1", tags={"request_id": "req-1"}))]),
                          now=NOW + timedelta(minutes=6))
    assert again.holds == []


def test_a_retried_reservation_of_the_same_request_replaces_its_hold_instead_of_holding_twice():
    """A gateway whose reserve call timed out retries it with the same request id (the LiteLLM path test did, under
    load: the first hold was placed but its answer came after the client's 1 s timeout). The request is held once:
    the retry is admitted against the headroom without its own earlier hold, and that hold is released."""
    budgets = defs()
    owner = owner_with(budgets)
    first, _ = owner.admit({"search": D("6")}, "r1", "req-1", LATER, NOW)
    placed, refusal = owner.admit({"search": D("6")}, "r2", "req-1", LATER, NOW)  # 6 + 6 > 10 if held twice
    assert refusal is None and [h.reservation_id for h in placed] == ["r2"]
    assert owner.held("search") == D("6") and [h.reservation_id for h in owner.holds_of("r1")] == []
    assert [(h.reservation_id, h.ended) for h in owner.superseded_holds()] == [("r1", "released")]
    view = owner.headroom("search", NOW)
    assert (view["open_reservations"], view["admitted"], view["superseded"]) == (1, 2, 1)
    out = owner.process(usage_messages(budgets, [(0, 1, priced("req-1", "2"))]), now=NOW)  # settles the retry's
    assert [h.reservation_id for h in out.holds] == ["r2"] and owner.held("search") == D(0)
    _, refusal = owner.admit({"search": D("6")}, "r3", "req-2", LATER, NOW)  # another request: 2 + 6 <= 10
    assert refusal is None


def test_a_call_that_cannot_fit_before_the_period_ends_is_told_so_not_to_retry_in_a_second():
    """walk36: a gateway reserved gpt-4o with max_output_tokens 100,000 against the demo's growth-agent-daily (limit
    $0.10): 403 with "this call's worst case 1.70 exceeds the limit", `until: null` and `retry_after_s: 1`, so a
    gateway honouring it retries every second for the rest of the day. Holds coming back cannot help a call whose
    worst case does not fit beside the committed spend alone, which only grows within a period: `until` is the
    period's end then (as for a spent-out budget), and a worst case above the limit itself says what would fit."""
    budgets = defs()
    owner = owner_with(budgets)
    owner.process(usage_messages(budgets, [(0, 1, priced("e1", "4"))]), now=NOW)
    _, alone = owner.admit({"search": D("12")}, "r1", "req-1", LATER, NOW)
    assert alone["until"] == "2026-12-01T00:00:00Z" and alone["retry_after_s"] == int((datetime(2026, 12, 1, tzinfo=UTC)
                                                                                       - NOW).total_seconds())
    assert "alone is above the limit" in alone["reason"] and "max_output_tokens" in alone["reason"], alone["reason"]
    _, beside = owner.admit({"search": D("6.5")}, "r2", "req-2", LATER, NOW)  # 4 committed + 6.5 > 10, no holds
    assert beside["until"] == "2026-12-01T00:00:00Z" and "alone" not in beside["reason"], beside
    owner.admit({"search": D("5")}, "r3", "req-3", LATER, NOW)
    _, held = owner.admit({"search": D("1.5")}, "r4", "req-4", LATER, NOW)  # fits once the hold of r3 settles
    assert held["until"] is None and held["retry_after_s"] == 1, held
