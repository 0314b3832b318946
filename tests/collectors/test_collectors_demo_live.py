"""The live demo traffic of `up --demo` (collectors/demo_live.py) continues the history's calendar: the anomaly
detector, after reading the month of history, sees no cliff at 'now' and alerts only on the one live incident
(search's agent loop); growth's loop drives the demo budget `growth-daily` past its limit within minutes."""

from __future__ import annotations

import copy
import functools
import random
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

NOW = datetime(2026, 12, 3, 14, 10, tzinfo=timezone.utc)  # a Thursday afternoon: the calendar's busiest hours


@functools.cache
def _engine_after_history(now: datetime):
    """The detector after reading the month of history up to `now` (~5 CPU-s: build, price and observe 21,575
    calls); the tests take deep copies of it, each as fresh as one built for it alone."""
    from streams.anomalies.engine import AnomalyEngine
    from warehouse.demo_history import history_events, priced_history

    priced = priced_history(history_events(now))
    engine = AnomalyEngine()
    for i in range(0, len(priced), 500):
        engine.observe(priced[i:i + 500], now=now.timestamp())
    return engine


def _new_alerts(now: datetime, live: list[dict], minutes: int) -> list[dict]:
    """Alerts the detector opens on `live` after reading the history up to `now`, fed minute by minute."""
    from warehouse.demo_history import priced_history

    engine = copy.deepcopy(_engine_after_history(now))
    live = priced_history(sorted(live, key=lambda e: e["ts"]))
    alerts, minute, i = [], now.replace(minute=0), 0
    while minute < now + timedelta(minutes=minutes):
        minute += timedelta(minutes=1)
        chunk = []
        while i < len(live) and live[i]["ts"] < minute.isoformat():
            chunk.append(live[i])
            i += 1
        updates = engine.observe(chunk, now=minute.timestamp()) if chunk else []
        updates += engine.advance_to(minute.timestamp())
        alerts += [u.record for u in updates if u.action == "open" and u.notify]
    return alerts


def _growth_blocked_after(live: list[dict], started: datetime, minutes: float) -> list[dict]:
    """The live calls as the demo gateway sends them once the growth budget blocks `minutes` after the start."""
    cut = (started + timedelta(minutes=minutes)).isoformat()
    return [e for e in live if e["attribution"]["team"] != "growth" or e["ts"] < cut]


def test_the_live_calendar_continues_the_history_and_only_the_incident_alerts():
    from collectors.demo_live import COPIES, calendar_calls, live_loops

    end = NOW + timedelta(minutes=60)
    live = calendar_calls(NOW.replace(minute=0), end, COPIES)
    assert len(live) > 300  # an hour of a weekday afternoon: a call every ~10 s
    assert {e["attribution"]["team"] for e in live} >= {"search", "growth", "platform", "support-bot"}
    assert len({e["event_id"] for e in live}) == len(live) and all(e["event_id"].startswith("live-") for e in live)
    live += [e for e in live_loops(NOW, random.Random(1)) if e["ts"] < end.isoformat()]
    alerts = _new_alerts(NOW, _growth_blocked_after(live, NOW, 5), 60)  # blocked 4 minutes into its loop
    assert [(a["kind"], a["scope_value"]) for a in alerts] == [("spend_rate", "sk-acm-sear-chen")]


@pytest.mark.slow(seconds=25)
def test_the_old_flat_demo_rate_after_the_history_is_an_alert_storm():
    """What `up --demo` sent before (collectors/demo.generate's 40 events/s, here 10 minutes): a cliff at 'now'."""
    from collectors.demo import callers, make_event

    rng, people = random.Random(5), callers()
    flat = [make_event(rng, rng.choice(people), NOW + timedelta(seconds=i / 40)) for i in range(40 * 600)]
    assert len(_new_alerts(NOW, flat, 15)) > 20  # 48 here: spend, token, burst and new-model alerts


def test_the_growth_loop_reaches_the_growth_budget_within_minutes():
    from collectors.demo_live import live_loops
    from streams.budgets.service import demo_budgets
    from warehouse.demo_history import priced_history

    budget = next(b for b in demo_budgets() if b.name == "growth-daily")
    assert budget.action == "block"
    five_minutes = (NOW + timedelta(minutes=5)).isoformat()
    calls = priced_history([e for e in live_loops(NOW, random.Random(2)) if e["ts"] < five_minutes])
    spent = sum(Decimal(e["cost_usd"]) for e in calls if e["attribution"]["team"] == "growth")
    assert spent >= Decimal(str(budget.limit))  # blocked within 5 minutes of the start (4 of the loop)


def test_the_sender_keeps_the_loop_at_its_rate_whatever_its_tick():
    """Sent in 1-second ticks, the loop keeps ~LOOP_PER_HOUR calls an hour. Before: each tick restarted the loop's
    random schedule at the tick's start, so a call went out every second (12 times the rate; on a real start the
    growth budget saw 0.04 USD within 7 seconds)."""
    from collectors.demo_live import LOOP_PER_HOUR, due_calls, loop_calls

    loop = loop_calls(NOW + timedelta(seconds=60), random.Random(3))
    sent, cursor = [], NOW
    for second in range(1, 601):
        now = NOW + timedelta(seconds=second)
        sent += due_calls(cursor, now, loop, copies=0)
        cursor = now
    expected = LOOP_PER_HOUR * 540 / 3600  # 45 in the nine minutes since the loop began
    assert expected * 0.5 < len(sent) < expected * 1.6
    assert len({e["event_id"] for e in sent}) == len(sent)
