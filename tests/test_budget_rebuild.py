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

NOW = datetime.now(timezone.utc).replace(microsecond=0)


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from warehouse import open_warehouse

    warehouse = open_warehouse(Settings(data_dir=tmp_path_factory.mktemp("rebuild")), writer=True, serve=False)
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
