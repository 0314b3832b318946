"""Early error checks (issue 17, seventh round): a quiet key's storm is alerted in the running bucket once its
failures suffice, not when the bucket closes (sparse seed 8: fifth failure at 11:45:00, alerted at 11:52). One
anomaly, one alert: the close extends it, a close under the threshold resolves it as usual, a restart does not re-fire.
Events are fed minute by minute, as a live consumer reads them."""

from __future__ import annotations

import orjson

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.test_anomalies_error_window import STORM, _epoch, failed, ok, warm_key

# The sparse family's storm: 5 failures in 11 minutes, in buckets of 2, 2, 0 and 1 calls; the fifth at 18:15:00.
STORM_CALLS = [failed(STORM + 270, 1), failed(STORM + 295, 2), failed(STORM + 335, 3), failed(STORM + 525, 4),
               failed(STORM + 900, 5)]


def per_minute(engine: AnomalyEngine, calls: list[dict], start: int, end: int) -> list:
    updates = []
    for minute in range(start, end, 60):
        updates += engine.observe([c for c in calls if minute <= _epoch(c) < minute + 60], now=2e9)
    return updates


def key_error_updates(updates: list) -> list:
    return [(u.action, u.record) for u in updates if u.record["kind"] == "error_rate"
            and u.record["scope_dim"] == "api_key"]


def test_a_quiet_keys_storm_is_alerted_in_the_minute_of_its_fifth_failure():
    engine = warm_key()
    updates = per_minute(engine, STORM_CALLS, STORM, STORM + 3600) + engine.advance_to(STORM + 2 * 3600)
    found = key_error_updates(updates)
    opens = [r for action, r in found if action == "open"]
    assert len(opens) == 1, found
    # Before: 18:22:00 (the close of 18:15-18:20 plus the grace). Now: the end of the fifth failure's minute.
    assert opens[0]["detected_at"] == "2026-09-10T18:16:00Z", opens
    assert opens[0]["start"] == "2026-09-10T18:15:00Z"
    # The close of its bucket extends it (no second alert), and it resolves once the key is quiet.
    assert [a for a, _ in found].count("open") == 1 and found[-1][0] == "close", [a for a, _ in found]
    assert len({r["id"] for _, r in found}) == 1
    # The key's user, team, project, feature and model open with it, explained by the key: one alert goes out.
    notified = [u.record["scope_dim"] for u in updates if u.action == "open" and u.notify and u.record["kind"] == "error_rate"]
    assert notified == ["api_key"], notified
    assert engine.stats["early_alerts"] == 6


def test_without_early_checks_the_close_alerts_as_before():
    engine = warm_key()
    engine.cfg = Config(early_kinds=())
    updates = per_minute(engine, STORM_CALLS, STORM, STORM + 3600) + engine.advance_to(STORM + 2 * 3600)
    opens = [r for action, r in key_error_updates(updates) if action == "open"]
    # at the close: end + grace - 1 min (oncall24; it was stamped a minute later than the close ran)
    assert len(opens) == 1 and opens[0]["detected_at"] == "2026-09-10T18:21:00Z", opens


def test_a_restart_after_the_early_alert_does_not_alert_again():
    """Snapshot right after the early alert (as the runner saves it), restore, read on: no second open."""
    engine = warm_key()
    first = key_error_updates(per_minute(engine, STORM_CALLS, STORM, STORM + 960))
    assert [a for a, _ in first] == ["open"], first
    restored = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    later = key_error_updates(per_minute(restored, STORM_CALLS, STORM + 960, STORM + 3600)
                              + restored.advance_to(STORM + 2 * 3600))
    assert "open" not in [a for a, _ in later] and later, later
    assert {r["id"] for _, r in later} == {first[0][1]["id"]}


def test_an_early_alert_whose_bucket_closes_under_the_threshold_is_one_anomaly():
    """After the fifth failure the key recovers within the same bucket (40 ok calls): the close judges the whole
    bucket normal. The early alert stays one anomaly, resolved by the usual close logic, never re-opened."""
    calls = STORM_CALLS + [ok(STORM + 960 + 5 * i, i) for i in range(40)]
    engine = warm_key()
    found = key_error_updates(per_minute(engine, calls, STORM, STORM + 3600) + engine.advance_to(STORM + 2 * 3600))
    actions = [a for a, _ in found]
    assert actions[0] == "open" and actions.count("open") == 1 and actions[-1] == "close", actions
    assert "update" not in actions  # the close found the bucket under the threshold: not extended
    assert len({r["id"] for _, r in found}) == 1


def test_sporadic_failures_stay_quiet_when_judged_every_minute():
    """The error window's negative case, judged in every running minute: still nothing."""
    calls = [ok(STORM + 30, 1), failed(STORM + 100, 1), failed(STORM + 104, 2), ok(STORM + 250, 2),
             failed(STORM + 420, 3), failed(STORM + 425, 4), ok(STORM + 700, 3), ok(STORM + 1000, 4)]
    calls += [failed(STORM + 2520, 5), failed(STORM + 2524, 6), failed(STORM + 2530, 7), ok(STORM + 2700, 5)]
    engine = warm_key()
    assert key_error_updates(per_minute(engine, calls, STORM, STORM + 3600)) == []
