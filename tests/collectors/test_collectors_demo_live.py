"""The live demo traffic of `up --demo` (collectors/demo_live.py) continues the history's calendar: the anomaly
detector, after reading the month of history, sees no cliff at 'now' and alerts only on the one live incident
(search's agent loop); growth's loop drives the demo budget `growth-agent-daily` past its limit within minutes, and
growth's usual traffic alone never reaches it."""

from __future__ import annotations

import copy
import functools
import random
from collections import Counter
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
    """The live calls as the demo gateway sends them once the growth agent's budget blocks its key `minutes` after
    the start (the rest of growth goes on)."""
    from collectors.demo_live import AGENT_KEY

    cut = (started + timedelta(minutes=minutes)).isoformat()
    return [e for e in live if e["attribution"]["api_key"] != AGENT_KEY or e["ts"] < cut]


def _blocking_growth_budget():
    from streams.budgets.service import demo_budgets

    return next(b for b in demo_budgets() if b.action == "block" and b.scope.get("team") == "growth")


def test_the_live_calendar_continues_the_history_and_only_the_incident_alerts():
    from collectors.demo_live import COPIES, calendar_calls, floor_calls, live_loops

    end = NOW + timedelta(minutes=60)
    live = calendar_calls(NOW.replace(minute=0), end, COPIES)
    live += floor_calls(NOW.replace(minute=0), end, COPIES)  # as the sender adds it (a weekday afternoon: ~none)
    assert len(live) > 300  # an hour of a weekday afternoon: a call every ~10 s
    assert {e["attribution"]["team"] for e in live} >= {"search", "growth", "platform", "support-bot"}
    assert len({e["event_id"] for e in live}) == len(live) and all(e["event_id"].startswith("live-") for e in live)
    live += [e for e in live_loops(NOW, random.Random(1)) if e["ts"] < end.isoformat()]
    alerts = _new_alerts(NOW, _growth_blocked_after(live, NOW, 5), 60)  # blocked 4 minutes into its loop
    assert [(a["kind"], a["scope_value"]) for a in alerts] == [("spend_rate", "sk-acm-sear-chen")]


@pytest.mark.slow(seconds=20)
def test_a_weekend_night_moves_every_minute_without_new_alerts():
    """On a weekend night the calendar is ~40 calls an hour (minutes without a call: the dashboard barely moved).
    The sender's background floor gives every minute at least FLOOR_PER_MINUTE calls, cheap ones on the history's
    callers, and the detector still alerts on nothing but search's live loop."""
    from collectors.demo_live import FLOOR_PER_MINUTE, due_calls, live_loops

    night = datetime(2026, 11, 28, 22, 10, tzinfo=timezone.utc)  # a Saturday, the calendar's quietest hours
    loop = live_loops(night, random.Random(1))
    live, cursor = [], night.replace(minute=0)
    for second in range(20, 70 * 60 + 1, 20):  # the sender's ticks (here every 20 s)
        now = night.replace(minute=0) + timedelta(seconds=second)
        live += due_calls(cursor, now, loop)
        cursor = now
    per_minute = Counter(e["ts"][:16] for e in live)
    assert len(per_minute) == 70 and min(per_minute.values()) >= FLOOR_PER_MINUTE
    assert len({e["event_id"] for e in live}) == len(live)
    floor = [e for e in live if e["event_id"].startswith("live-floor-")]
    assert {e["attribution"]["team"] for e in floor} >= {"search", "growth", "platform"}
    from warehouse.demo_history import priced_history
    assert sum(Decimal(e["cost_usd"]) for e in priced_history(floor)) < Decimal("0.10")  # low cost: ~0.03 USD/h
    alerts = _new_alerts(night, _growth_blocked_after(live, night, 5), 60)
    assert [(a["kind"], a["scope_value"]) for a in alerts] == [("spend_rate", "sk-acm-sear-chen")]


@pytest.mark.slow(seconds=25)
def test_the_old_flat_demo_rate_after_the_history_is_an_alert_storm():
    """What `up --demo` sent before (collectors/demo.generate's 40 events/s, here 10 minutes): a cliff at 'now'."""
    from collectors.demo import callers, make_event

    rng, people = random.Random(5), callers()
    flat = [make_event(rng, rng.choice(people), NOW + timedelta(seconds=i / 40)) for i in range(40 * 600)]
    assert len(_new_alerts(NOW, flat, 15)) > 20  # 48 here: spend, token, burst and new-model alerts


def test_the_growth_loop_reaches_the_growth_budget_within_minutes():
    from collectors.demo_live import AGENT_KEY, live_loops
    from warehouse.demo_history import priced_history

    budget = _blocking_growth_budget()
    assert budget.scope == {"team": "growth", "api_key": AGENT_KEY}
    six_minutes = (NOW + timedelta(minutes=6)).isoformat()
    calls = priced_history([e for e in live_loops(NOW, random.Random(2)) if e["ts"] < six_minutes])
    spent = sum(Decimal(e["cost_usd"]) for e in calls if budget.matches(e))
    assert spent >= Decimal(str(budget.limit))  # blocked within 6 minutes of the start (5 of the loop)


def test_growths_usual_traffic_alone_never_reaches_the_blocking_budget():
    """A whole weekday of growth's calendar traffic at the live level (6 draws: ~2.5 USD) stays under the budget
    that blocks growth, so the block comes from the live agent loop. Before: `growth-daily` (team growth, 0.10 USD
    a day) was reached by the calendar alone in the first UTC hours of every weekday (by 01:00-03:00), and growth
    was blocked for the rest of the day whether or not its loop ran."""
    from collectors.demo_live import COPIES, calendar_calls
    from warehouse.demo_history import priced_history

    budget = _blocking_growth_budget()
    thursday = NOW.replace(hour=0, minute=0)  # the calendar's busiest weekday for growth
    day = priced_history(calendar_calls(thursday, thursday + timedelta(days=1), COPIES))
    growth = sum(Decimal(e["cost_usd"]) for e in day if e["attribution"]["team"] == "growth")
    assert growth > 1  # the usual traffic is there
    assert sum(Decimal(e["cost_usd"]) for e in day if budget.matches(e)) < Decimal(str(budget.limit))


def test_the_sender_keeps_the_loop_at_its_rate_whatever_its_tick():
    """Sent in 1-second ticks, the loop keeps ~LOOP_PER_HOUR calls an hour. Before: each tick restarted the loop's
    random schedule at the tick's start, so a call went out every second (12 times the rate; on a real start the
    growth budget saw 0.04 USD within 7 seconds)."""
    from collectors.demo_live import LOOP_PER_HOUR, due_calls, loop_calls

    loop = loop_calls(NOW + timedelta(seconds=60), random.Random(3))
    sent, cursor = [], NOW
    for second in range(1, 601):
        now = NOW + timedelta(seconds=second)
        sent += due_calls(cursor, now, loop, copies=0, floor=0)
        cursor = now
    expected = LOOP_PER_HOUR * 540 / 3600  # 45 in the nine minutes since the loop began
    assert expected * 0.5 < len(sent) < expected * 1.6
    assert len({e["event_id"] for e in sent}) == len(sent)


def test_a_restarted_sender_sends_each_floor_call_as_it_was():
    """walk33: `up` restarted within an hour re-sends the hour's calls with the same ids (the loader skips them),
    but a floor call drew its feature and latency only when its time fell in the tick, so the calls after it in
    that minute drew other callers: `live-floor-20261207T1245-1` was growth's call when sent live (1-second ticks)
    and support-bot's when re-sent at once, and the support-bot budget counted it while the warehouse kept growth's.
    An id now means one call however the sender's windows fall."""
    from collectors.demo_live import floor_calls

    night = datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc)  # the calendar's quietest hours: floor calls
    at_once = floor_calls(night, night + timedelta(minutes=10))
    ticked: list[dict] = []
    for second in range(0, 600):  # the live sender's 1-second ticks
        ticked += floor_calls(night + timedelta(seconds=second), night + timedelta(seconds=second + 1))
    assert at_once and {e["event_id"]: e for e in ticked} == {e["event_id"]: e for e in at_once}
