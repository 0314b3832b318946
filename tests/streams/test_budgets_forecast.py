"""One forecast: the alert, its payload and the enforcement record the Budgets page and /api read are the same
projection at the same moment (forecast36: the demo's worker alerted "projected 86.03 USD" for search-monthly while
the page, from the same worker, said "not enough data yet"), and old event times never pass for the last hour."""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson

from streams.budgets import parse_budget
from streams.budgets.owner import BudgetOwner
from streams.budgets.routing import BudgetRouter, spend_messages

UTC = timezone.utc
NOW = datetime(2026, 12, 7, 20, 55, tzinfo=UTC)  # the demo's evening: ~24 days left in the month
BUDGET = parse_budget({"name": "search-monthly", "scope": {"team": "search"}, "period": "month", "limit": "25",
                       "thresholds": [50, 80, 100], "action": "alert"})
DEFS = {BUDGET.name: BUDGET}


def priced(event_id: str, ts: datetime, cost: str) -> dict:
    return {"event_id": event_id, "ts": ts.isoformat(), "model": "gpt-4o", "provider": "openai", "status": "ok",
            "attribution": {"team": "search", "user": "chen", "tags": {}},
            "usage": {"input_tokens": 100, "output_tokens": 50}, "cost_usd": cost, "pricing_status": "priced"}


def spend(events: list[dict], first_offset: int) -> list[dict]:
    """The budget-spend messages the pricing side sends for these events (usage partition 0)."""
    router = BudgetRouter()
    router.set_budgets(DEFS)
    origins = [(0, first_offset + i, e) for i, e in enumerate(events)]
    return [orjson.loads(v) for _, v in spend_messages(router.route(origins))]


def live_owner(state: dict | None = None) -> BudgetOwner:
    owner = BudgetOwner(DEFS)
    owner.restore(BUDGET.name, None if state is None else orjson.loads(orjson.dumps(state)))
    owner.runtimes[BUDGET.name].seed_since = None  # the period's earlier spend is counted (rebuild or seed done)
    return owner


def record_of(outcome) -> dict:
    (name, record), = [(n, r) for n, r in outcome.enforcement if r is not None]
    return record


def test_the_demos_start_the_alert_and_the_page_give_one_projection():
    """`up --demo`: `budget rebuild` takes the month's spend from the history in the warehouse, then the live sender
    catches up on the hour so far (55 minutes of calendar calls, sent at once), then goes on live. The alert fired
    on the catch-up and every enforcement record after it said projected = null ("not enough data yet")."""
    rebuilt, alerts = BudgetOwner(DEFS).rebuild(BUDGET.name, NOW - timedelta(minutes=1), {},
                                                period_total=Decimal("8"))
    assert alerts == []
    owner = live_owner(rebuilt)
    hour = NOW.replace(minute=0)
    catch_up = [priced(f"cal-{i}", hour + timedelta(minutes=i, seconds=20), "0.02") for i in range(55)]
    out = owner.process(spend(catch_up, 0), now=NOW)
    forecast, = [a for a in out.alerts if a["kind"] == "forecast"]
    record = record_of(out)
    # the alert and the record published with it: the same projection and breach time, to the digit
    assert record["projected"] == forecast["details"]["projected"]
    assert record["expected_breach_at"] == forecast["details"]["expected_breach_at"]
    assert Decimal(record["projected"]) >= Decimal(record["limit"])
    assert forecast["details"]["expected_breach_at"] > NOW.isoformat()
    # walk36: the alert was dated at the batch's newest event time (here 20:54:20; on a fresh `up --demo`, before the
    # stack had started) while its projection is made at the owner's clock: it is dated when it was projected
    assert forecast["at"] == record["updated_at"], (forecast["at"], record["updated_at"])

    # three minutes of live traffic later the page still shows a projection past the limit (it said "not enough data")
    live = [priced(f"live-{i}", NOW + timedelta(seconds=30 * i), "0.02") for i in range(6)]
    later = record_of(owner.process(spend(live, 100), now=NOW + timedelta(minutes=3)))
    assert later["projected"] is not None and Decimal(later["projected"]) >= Decimal(later["limit"])
    assert later["expected_breach_at"] is not None
    ticked = owner.tick(NOW + timedelta(minutes=3, seconds=REPUBLISH_AFTER))
    assert record_of(ticked)["projected"] is not None  # time passing alone does not lose it either


REPUBLISH_AFTER = 61  # seconds: past owner.REPUBLISH_SECONDS, so a tick publishes the record


def test_a_replay_of_old_event_times_is_not_taken_for_the_last_hours_burn():
    """Events of three days ago arriving now (a collector's backfill, a replay): their spend counts, but their burn
    is three days old. The forecast was evaluated at the replayed events' own time: their hour plus today's
    minutes read as one hour of burn, projected from three days ago, with a breach time already past."""
    owner = live_owner()
    # twenty minutes of a slow live burn: ~0.03 USD an hour, within the limit by the period end
    live = [priced(f"live-{i}", NOW - timedelta(minutes=20 - i), "0.0005") for i in range(20)]
    quiet = owner.process(spend(live, 0), now=NOW)
    assert [a for a in quiet.alerts if a["kind"] == "forecast"] == []
    assert Decimal(record_of(quiet)["projected"]) < 25
    old = NOW - timedelta(days=3, hours=8)
    replay = [priced(f"old-{i}", old + timedelta(minutes=i), "0.1") for i in range(30)]  # 3 USD three days ago
    out = owner.process(spend(replay, 100), now=NOW + timedelta(seconds=5))
    assert [a["details"]["expected_breach_at"] for a in out.alerts if a["kind"] == "forecast"] == []
    record = record_of(out)
    assert Decimal(record["spend"]) == Decimal("3.01")  # counted, as spend
    assert Decimal(record["projected"]) < 25 and record["expected_breach_at"] is None  # not as the last hour's burn


def test_a_state_rebuilt_before_the_fix_projects_again():
    """`budget rebuild` stored the period END as the ledger's newest event time (2027-01-01 here); every batch's burn
    was then pruned as over an hour older than it, right after its own evaluation. A state written so (kept on an
    external broker's compacted topic) must not keep the page at "not enough data yet" for the rest of the month."""
    rebuilt, _ = BudgetOwner(DEFS).rebuild(BUDGET.name, NOW - timedelta(minutes=1), {}, period_total=Decimal("8"))
    rebuilt["ledger"]["newest"] = {BUDGET.name: "2027-01-01T00:00:00Z"}  # as the rebuild before the fix wrote it
    owner = live_owner(rebuilt)
    calls = [priced(f"call-{i}", NOW - timedelta(minutes=30 - i), "0.01") for i in range(30)]
    for i in range(3):  # a batch a minute, as live traffic comes
        record = record_of(owner.process(spend(calls[10 * i:10 * i + 10], 10 * i), now=NOW + timedelta(minutes=i)))
    assert record["projected"] is not None and Decimal(record["projected"]) > Decimal("8.3")


def test_one_event_from_a_gateway_a_day_ahead_does_not_erase_the_last_hours_burn():
    """Events up to a day ahead are accepted (tokenmeter/events.py, clock skew between gateways). The ledger pruned
    burn minutes older than an hour before its NEWEST minute: one skewed call 23 hours ahead dropped every real
    minute of the last hour, and the page read "not enough data yet" (or a projection without that burn) until the
    skewed minute was itself an hour old. The horizon is the owner's clock, at most the newest minute."""
    owner = live_owner()
    live = [priced(f"live-{i}", NOW - timedelta(minutes=30 - i), "0.01") for i in range(30)]  # 0.30 USD in 30 min
    before = record_of(owner.process(spend(live, 0), now=NOW))
    assert before["projected"] is not None
    skewed = [priced("skewed", NOW + timedelta(hours=23), "0.01")]
    owner.process(spend(skewed, 100), now=NOW + timedelta(seconds=5))  # (the record then is not republished: asked)
    after = owner.enforcement_record(owner.runtimes[BUDGET.name], NOW + timedelta(seconds=5))
    assert after["projected"] is not None, after
    # the same half hour of burn, measured 5 s later (~0.3 % lower), not the skewed minute's burn alone
    assert Decimal(after["projected"]) >= Decimal(before["projected"]) * Decimal("0.99"), (before, after)
