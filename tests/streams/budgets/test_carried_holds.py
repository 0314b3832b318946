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

NOW = datetime.now(timezone.utc).replace(microsecond=0)
pytestmark = pytest.mark.slow(seconds=10)  # one chDB warehouse (migrations) for the file


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from warehouse import open_warehouse

    warehouse = open_warehouse(Settings(data_dir=tmp_path_factory.mktemp("carried")), writer=True, serve=False)
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
    expired = hold("f", D("0.4"))  # no usage within its TTL: the TTL rule, not carried
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
