"""Error storms on quiet keys (issue #17, held-out seed 11): a key revoked at night fails every call, but it makes a
call every few minutes. The error share of a quiet scope is judged on a window of its last calls; it must hold the
storm's calls even when they fall into four buckets with an empty one between them, and a window of 5-9 calls is
enough when the binomial tail says so (5 failures of 5 calls of a key that fails 1 % of the time is not chance).
Sporadic failures and their retries on such a key stay quiet."""

from __future__ import annotations

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

DAY = 86400
HISTORY_END = MONDAY + 3 * DAY  # Thursday 00:00 UTC
STORM = HISTORY_END + 18 * 3600  # 18:00 UTC: the key makes about one call every three minutes
_cache: dict[str, bytes] = {}


def warm_key() -> AnomalyEngine:
    """Three days of one key: ~6 calls per 5 minutes at its busiest (so its error share has a baseline), 1 % errors."""
    if "warm" not in _cache:
        engine = AnomalyEngine()
        for batch in traffic(MONDAY, STORM, peak=6.0, keys=("k1",), models=(("gpt-4o-mini", 1.0),)):
            engine.observe(batch, now=2e9)
        _cache["warm"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["warm"]))


def failed(t: int, n: int) -> dict:
    e = event(t, "k1", model="gpt-4o-mini", status="error", n=1000 + n)
    return e


def ok(t: int, n: int) -> dict:
    return event(t, "k1", model="gpt-4o-mini", n=2000 + n)


def run(calls: list[dict]) -> list:
    """The key's calls after its history, then an hour of nothing; the error-rate anomalies opened on the key."""
    engine = warm_key()
    updates = []
    for start in range(STORM, STORM + 3600, 300):
        updates += engine.observe([c for c in calls if start <= _epoch(c) < start + 300], now=2e9)
    updates += engine.advance_to(STORM + 2 * 3600)
    return [u.record for u in updates if u.action == "open" and u.record["kind"] == "error_rate"
            and u.record["scope_dim"] == "api_key"]


def _epoch(e: dict) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp())


def test_every_call_of_a_quiet_key_fails_across_four_buckets():
    """The sparse family's missed storm: 5 failures in 11 minutes, in buckets of 2, 2, 0 and 1 calls."""
    calls = [failed(STORM + 270, 1), failed(STORM + 295, 2), failed(STORM + 335, 3), failed(STORM + 525, 4),
             failed(STORM + 900, 5)]
    found = run(calls)
    assert len(found) == 1 and float(found[0]["observed"]) == 1.0, found
    assert found[0]["detected_at"] <= "2026-09-10T18:22:00Z"  # the close of the bucket of the fifth failure


def test_a_revoked_key_with_nine_calls_in_its_window():
    """Synthetic seed 11's missed revocation: 3 ok and 2 failed calls, then 2 and 2 failed (6 of 9 fail)."""
    calls = [ok(STORM + 10, 1), ok(STORM + 50, 2), ok(STORM + 60, 3), failed(STORM + 190, 1), failed(STORM + 200, 2),
             failed(STORM + 330, 3), failed(STORM + 400, 4), failed(STORM + 620, 5), failed(STORM + 650, 6)]
    found = run(calls)
    assert len(found) == 1, found


def test_sporadic_failures_and_retries_on_a_quiet_key_stay_quiet():
    """Two failed calls, each retried and failing again (4 errors), then ordinary calls; 35 minutes later one more
    failure retried twice: the window never joins failures more than 30 minutes apart, nor counts empty buckets."""
    calls = [ok(STORM + 30, 1), failed(STORM + 100, 1), failed(STORM + 104, 2), ok(STORM + 250, 2),
             failed(STORM + 420, 3), failed(STORM + 425, 4), ok(STORM + 700, 3), ok(STORM + 1000, 4)]
    calls += [failed(STORM + 2520, 5), failed(STORM + 2524, 6), failed(STORM + 2530, 7), ok(STORM + 2700, 5)]
    assert run(calls) == []


def test_a_snapshot_from_before_the_window_change_restores():
    """Saved engines keep working: a scope saved with the old four-number error window restores, with no bucket
    start, so nothing of it joins a window."""
    snapshot = warm_key().snapshot()
    for scope in snapshot["scopes"]:
        scope["recent"] = scope["recent"][:4]
    engine = AnomalyEngine.restore(orjson.loads(orjson.dumps(snapshot)))
    assert engine.scopes[("api_key", "k1")].recent[4:] == [-1, -1]
    assert run([]) == []
