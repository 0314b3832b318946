"""The soak's accounting of a clean stop that could not drain the memory-only broker (`stop_loss` in the stopped
`up`'s status, app/broker_drain.py): events acknowledged before that stop and missing from the warehouse are a
reported broker loss (explained, their at-risk count summed into what was reported), events acknowledged after it
are not. soak34 added the accounting without a test of its own (none of its runs had such a stop)."""

from __future__ import annotations

import random
from decimal import Decimal

from app.soak import _totals, expected_by_team
from app.soak.traffic import Ledger
from tokenmeter.settings import Settings
from warehouse_template import empty_warehouse_in

STOPPED_AT = 1_000_000.0


def _priced(events: list[dict]) -> list[dict]:
    from streams import load_book, price_event
    from tokenmeter.events import UsageEvent
    from tokenmeter.settings import load_settings

    book = load_book(load_settings())
    return [price_event(UsageEvent.model_validate(e), book).to_json() for e in events]


def _stop(at_risk: int) -> dict:
    """A stopped `up`'s status as the soak keeps it (Stack.stopped_status): the drain's loss and when it was seen."""
    return {"state": "stopped", "stopped_at": STOPPED_AT, "broker_losses": [],
            "stop_loss": {"at": "2026-12-07T16:00:00Z", "waiting": {"tokenmeter.usage": at_risk},
                          "at_risk_records": at_risk, "why": "not consumed within 30 s (the worker still behind)"}}


def test_a_clean_stops_loss_explains_what_was_acknowledged_before_it_and_nothing_after(tmp_path, tmp_path_factory):
    from warehouse import open_warehouse

    data_dir = empty_warehouse_in(tmp_path / "data", tmp_path_factory)
    ledger = Ledger(run_id="stoploss", rng=random.Random(35))
    before = [ledger.new_event("direct") for _ in range(5)]
    after = [ledger.new_event("http") for _ in range(2)]
    for at, event in [(STOPPED_AT - 10 + i, e) for i, e in enumerate(before)] + [(STOPPED_AT + 5, e) for e in after]:
        ledger.acked[event["event_id"]], ledger.acked_at[event["event_id"]] = event, at
    stored, lost_before = before[:3] + after[:1], before[3:]
    wh = open_warehouse(Settings(data_dir=data_dir), writer=True, serve=False)
    try:
        assert wh.insert_priced(_priced(stored)) == 4
    finally:
        wh.close()

    explained: list[str] = []
    check = _totals(data_dir, ledger, [], [_stop(2)], explained)
    # the 2 lost before the stop are its loss; the one acknowledged after it and lost is not explained by anything
    assert sorted(explained) == sorted(e["event_id"] for e in lost_before)
    assert not check.ok
    assert [u["event_id"] for u in check.details["unexplained_lost"]] == [after[1]["event_id"]]
    assert check.details["lost_explained"] == 2
    assert "minus 2 lost with a reported broker loss, reported at risk: 2 records" in check.summary
    assert "1 acknowledged events missing without a broker loss" in check.summary

    del ledger.acked[after[1]["event_id"]]  # without that one, the stop's loss accounts for every missing event
    check = _totals(data_dir, ledger, [], [_stop(2)], [])
    assert check.ok, check.summary
    count, cost = map(sum, zip(*expected_by_team(stored).values()))
    assert f"{count} events / ${Decimal(cost).quantize(Decimal('0.000000000001'))} expected" in check.summary

    clean = {"state": "stopped", "stopped_at": STOPPED_AT, "broker_losses": [], "stop_loss": None}
    check = _totals(data_dir, ledger, [], [clean], [])  # a clean stop that drained: no loss to explain them
    assert not check.ok and "2 acknowledged events missing without a broker loss" in check.summary
    assert "reported at risk: n/a" in check.summary
