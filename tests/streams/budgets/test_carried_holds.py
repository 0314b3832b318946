"""After a broker loss the rebuild holds again what the warehouse says was admitted but whose usage it never got
(issue 15: usage acknowledged and lost with the embedded broker let the chaos soak's bill reach 104-112 % of a
hard limit). Real chDB: hold log rows as the loader stores them, priced events, `carried_holds`."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal as D

import pytest

from streams.budgets import parse_budget
from streams.budgets.holds import Hold, hold_from_json, hold_log_record
from streams.budgets.rebuild import carried_holds
from tokenmeter import topics
from tokenmeter.settings import Settings
from warehouse.records_load import RecordRowError, record_to_row
from warehouse_template import empty_warehouse_in

# Noon of the day before: holds are carried until their day's end at most, so a NOW of the wall clock failed the
# grace test whenever the suite ran in the last 15 minutes before midnight UTC (CI at 23:57, 2026-12-05)
NOW = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
pytestmark = pytest.mark.slow(seconds=3)  # one chDB warehouse (migrations) for the file


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path_factory.mktemp("carried"), tmp_path_factory)
    warehouse = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    yield warehouse
    warehouse.close()


def priced(event_id: str, team: str, cost: str, tags: dict | None = None) -> dict:
    return {"event_id": event_id, "ts": NOW.isoformat(), "source": "test", "provider": "openai", "model": "gpt-4o",
            "status": "ok", "attribution": {"org": "acme", "team": team, "tags": tags or {}},
            "usage": {"input_tokens": 1000, "output_tokens": 100}, "tokens_source": "provider", "cost_usd": cost,
            "cost_breakdown": {"input": cost}, "pricing_status": "priced",
            "price": {"entry": "openai/gpt-4o", "effective_from": "2024-08-06", "catalog_version": "t"},
            "priced_at": NOW.isoformat()}


def log(wh, *steps: Hold) -> None:
    rows = [record_to_row(topics.BUDGET_HOLD_LOG, hold_log_record(h, NOW))[1] for h in steps]
    wh.insert_records(topics.BUDGET_HOLD_LOG, rows + rows)  # a redelivered copy changes nothing


def test_admitted_holds_whose_usage_the_warehouse_lacks_are_held_again(wh):
    team = f"t-{uuid.uuid4().hex[:6]}"
    usd = parse_budget({"name": f"usd-{team}", "scope": {"team": team}, "period": "day", "limit": "1",
                        "action": "block"})
    tokens = parse_budget({"name": f"tok-{team}", "scope": {"team": team}, "period": "day", "metric": "tokens",
                           "limit": 100_000, "action": "block"})
    def hold(rid: str, amount, name: str = usd.name, at: datetime = NOW) -> Hold:
        return Hold(f"rsv_{rid}_p0", name, f"req-{rid}-{team}", amount, at, at + timedelta(seconds=30))

    settled_in_wh = hold("a", D("0.2"))  # usage loaded: its real cost is in the rebuilt spend already
    tagged_in_wh = hold("b", D("0.2"))  # usage loaded, its request id in the request_id tag
    open_lost = hold("c", D("0.3"))  # open at the loss: usage lost or still on its way -> worst case
    settled_lost = hold("d", D("0.25"))  # settled, then its priced event lost with the broker -> real amount
    released = hold("e", D("0.4"))
    # expired unsettled longer than the grace (one TTL) ago: its usage had all that time to arrive; not carried
    expired = hold("f", D("0.4"), at=NOW - timedelta(hours=1))
    yesterday = hold("g", D("0.4"), at=NOW - timedelta(days=2))  # another period
    tokens_open = hold("h", 5_000, name=tokens.name)
    log(wh, settled_in_wh, replace(settled_in_wh, ended="settled", settled_amount=D("0.1")), tagged_in_wh,
        open_lost, settled_lost, replace(settled_lost, ended="settled", settled_amount=D("0.05")), released,
        replace(released, ended="released"), expired, replace(expired, ended="expired"), yesterday, tokens_open)
    wh.insert_priced([priced(settled_in_wh.request_id, team, "0.1"),
                      priced(f"evt-{team}", team, "0.1", tags={"request_id": tagged_in_wh.request_id})])

    # the journal has what the loader had not stored when the broker died (and a torn last line)
    journal_only = hold("i", D("0.15"))
    released_late = hold("j", D("0.4"))
    log(wh, released_late)
    journal = [hold_log_record(journal_only, NOW), hold_log_record(replace(released_late, ended="released"), NOW),
               {"budget": usd.name, "reservation_id": "torn"}]
    carried = {h.reservation_id: h for h in carried_holds(wh, [usd, tokens], now=NOW, journal=journal)}
    assert sorted(carried) == sorted([open_lost.reservation_id, settled_lost.reservation_id,
                                      tokens_open.reservation_id, journal_only.reservation_id])
    assert carried[journal_only.reservation_id].amount == D("0.15")
    assert carried[open_lost.reservation_id].amount == D("0.3")
    assert carried[settled_lost.reservation_id].amount == D("0.05")
    assert carried[tokens_open.reservation_id].amount == 5_000 and isinstance(
        carried[tokens_open.reservation_id].amount, int)
    day_end = datetime.combine(NOW.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    for hold_again in carried.values():
        assert hold_again.carried and hold_again.expires_at == day_end  # until the period ends or usage settles it
        assert hold_from_json(hold_again.to_json()) == hold_again  # the record the owner restores


def test_a_rolling_budget_holds_a_carried_hold_for_its_window_after_the_admission(wh):
    team = f"t-{uuid.uuid4().hex[:6]}"
    rolling = parse_budget({"name": f"roll-{team}", "scope": {"team": team}, "period": "rolling:24h",
                            "limit": "1", "action": "block"})
    admitted = NOW - timedelta(hours=3)
    log(wh, Hold(f"rsv_r_{team}_p0", rolling.name, f"req-r-{team}", D("0.2"), admitted, admitted))
    carried, = carried_holds(wh, [rolling], now=NOW)
    assert carried.expires_at == admitted + timedelta(hours=24) and carried.amount == D("0.2")


def test_hold_log_records_that_do_not_fit_are_refused_with_the_field():
    good = hold_log_record(Hold("rsv_x_p0", "b", "r", D("1"), NOW, NOW))
    with pytest.raises(RecordRowError, match="status"):
        record_to_row(topics.BUDGET_HOLD_LOG, good | {"status": "lost"})
    with pytest.raises(RecordRowError, match="amount"):
        record_to_row(topics.BUDGET_HOLD_LOG, good | {"amount": 1.5})
    with pytest.raises(RecordRowError, match="request_id"):
        record_to_row(topics.BUDGET_HOLD_LOG, good | {"request_id": ""})


def test_the_journal_keeps_each_log_record_across_a_restart_and_skips_torn_lines(tmp_path):
    from streams.budgets.journal import HoldJournal, read_journal

    first = HoldJournal(tmp_path)
    records = [hold_log_record(Hold(f"rsv_{i}_p0", "b", f"r{i}", D("0.5"), NOW, NOW), NOW) for i in range(3)]
    first.append(records[:2])
    first.close()
    with open(next((tmp_path / "hold-journal").glob("*.jsonl")), "ab") as torn:
        torn.write(b'{"budget": "b", "reserv')  # a process killed mid-line
    second = HoldJournal(tmp_path)  # a restarted worker appends, never truncates
    second.append(records[2:])
    second.close()
    assert sorted(r["reservation_id"] for r in read_journal(tmp_path)) == ["rsv_0_p0", "rsv_1_p0", "rsv_2_p0"]


def test_a_hold_that_expired_while_its_usage_waited_is_carried_for_the_grace(wh):
    """Issue 15: "a hold that expired while its usage waited is not carried". The TTL passed before the call's usage
    reached the warehouse (a worker down longer than the TTL), then the broker was lost with the usage: the old
    rebuild held nothing, so the call's real cost could be admitted twice. An expired, unsettled hold whose usage
    the warehouse lacks counts at its worst case until one grace period after its expiry; one whose usage arrived
    after the expiry (a late `settled` step) counts its real amount to the period's end, as any settled hold."""
    team = f"t-{uuid.uuid4().hex[:6]}"
    usd = parse_budget({"name": f"usd-{team}", "scope": {"team": team}, "period": "day", "limit": "1",
                        "action": "block"})
    grace = timedelta(minutes=15)
    admitted = NOW - timedelta(minutes=20)
    def hold(rid: str, amount, ttl: timedelta) -> Hold:
        return Hold(f"rsv_{rid}_p0", usd.name, f"req-{rid}-{team}", amount, admitted, admitted + ttl)

    waited = hold("w", D("0.3"), timedelta(minutes=10))  # expired 10 min ago, within the grace
    settled_late = hold("s", D("0.3"), timedelta(minutes=10))  # expired, then its usage came ($0.07), then lost
    long_gone = hold("g", D("0.3"), timedelta(minutes=2))  # expired 18 min ago: past the grace
    in_wh = hold("i", D("0.3"), timedelta(minutes=10))  # expired, its usage loaded later: counted in spend
    log(wh, waited, replace(waited, ended="expired"), settled_late, replace(settled_late, ended="expired"),
        replace(settled_late, ended="settled", settled_amount=D("0.07")), long_gone,
        replace(long_gone, ended="expired"), in_wh, replace(in_wh, ended="expired"))
    wh.insert_priced([priced(in_wh.request_id, team, "0.1")])
    carried = {h.reservation_id: h for h in carried_holds(wh, [usd], now=NOW, expired_grace=grace)}
    assert sorted(carried) == sorted([waited.reservation_id, settled_late.reservation_id])
    assert (carried[waited.reservation_id].amount, carried[waited.reservation_id].expires_at) == (
        D("0.3"), waited.expires_at + grace)
    day_end = datetime.combine(NOW.date() + timedelta(days=1), datetime.min.time(), timezone.utc)
    assert (carried[settled_late.reservation_id].amount, carried[settled_late.reservation_id].expires_at) == (
        D("0.07"), day_end)
    # the journal alone (the loader had not stored these steps yet) says the same
    journal_team = f"t-{uuid.uuid4().hex[:6]}"
    other = parse_budget({"name": f"usd-{journal_team}", "scope": {"team": journal_team}, "period": "day",
                          "limit": "1", "action": "block"})
    only_journal = replace(waited, reservation_id=f"rsv_j_{journal_team}_p0", budget=other.name)
    journal = [hold_log_record(only_journal, NOW), hold_log_record(replace(only_journal, ended="expired"), NOW)]
    again, = carried_holds(wh, [other], now=NOW, journal=journal, expired_grace=grace)
    assert (again.amount, again.expires_at) == (D("0.3"), waited.expires_at + grace)


def _hold_ids(wh, budget: str) -> list[str]:
    frame = wh.query("SELECT DISTINCT reservation_id FROM budget_holds WHERE budget = {b:String} ORDER BY 1",
                     {"b": budget})
    return frame["reservation_id"].to_list() if frame.height else []


def test_budget_holds_are_kept_for_the_longest_budget_period_and_no_longer_than_raw_events(wh):
    """Issue 15: "no retention for budget_holds" (the table grew forever). Rows are kept for the longest period a
    rebuild looks back (a rolling:90d budget) and never longer than priced_events keeps the usage they are matched
    with (a hold whose priced event retention dropped would otherwise be held again as if its usage were lost)."""
    from streams.budgets.model import ROLLING_MAX_HOURS
    from warehouse.retention import HOLD_DAYS, apply_retention

    assert HOLD_DAYS * 24 > ROLLING_MAX_HOURS  # a rebuild of the longest open period finds its holds
    name = f"ret-{uuid.uuid4().hex[:6]}"
    ages = {"old": 100, "month": 40, "week": 10, "today": 0}
    log(wh, *[Hold(f"rsv_{label}_{name}", name, f"req-{label}", D("0.1"), NOW - timedelta(days=days),
                   NOW - timedelta(days=days) + timedelta(seconds=30)) for label, days in ages.items()])
    wh.backend.command("OPTIMIZE TABLE budget_holds FINAL")
    assert _hold_ids(wh, name) == sorted(f"rsv_{label}_{name}" for label in ("month", "week", "today"))
    try:
        assert apply_retention(wh.backend, 7)  # raw events kept 7 days: holds too
        wh.backend.command("OPTIMIZE TABLE budget_holds FINAL")
        assert _hold_ids(wh, name) == [f"rsv_today_{name}"]
    finally:
        apply_retention(wh.backend, 400)
    engine = wh.query("SELECT engine_full FROM system.tables WHERE database = currentDatabase() "
                      "AND name = 'budget_holds'")["engine_full"][0]
    assert f"toIntervalDay({HOLD_DAYS})" in engine
