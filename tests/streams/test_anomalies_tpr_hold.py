"""A key does not learn an open template change (issue 17, seventh round). Held-out sparse seed 34: a key's
tokens-per-request anomaly opened, the key learnt the changed calls while it stayed open (its log-output mean 6.05 ->
6.24), and when the same change came back the next day it needed ~1.5x the changed calls. Now, while the key's own
tokens-per-request anomaly is open, its buckets are held, not learnt: dropped when the change reverts (the anomaly
closes), adopted as the key's new normal when it lasts `tpr_new_normal_s` (the anomaly then closes as a new normal)."""

from __future__ import annotations

import math
from statistics import NormalDist

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

HOUR, DAY = 3600, 86400
# Log outputs of the key's calls: sigma 0.8 around ln 300, spread evenly over the normal quantiles in a fixed,
# shuffled order (the test does not depend on a random draw).
QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 24) for i in (7, 19, 2, 13, 22, 4, 16, 10, 0, 12, 21, 5, 17, 8, 23, 3,
                                                             14, 11, 1, 20, 6, 15, 9, 18)]
FIRST, SECOND = MONDAY + 3 * DAY + 12 * HOUR, MONDAY + 4 * DAY + 12 * HOUR  # Thursday and Friday 12:00 UTC


def key_calls(days: int, changes: list[tuple[int, int]]) -> list[dict]:
    """One call every 10 minutes (144 a day) on key k-tpl; outputs 2.5x longer within each (start, end) change."""
    calls = []
    for i in range(days * 144):
        t = MONDAY + i * 600 + 180
        factor = 2.5 if any(start <= t < end for start, end in changes) else 1.0
        calls.append(event(t, "k-tpl", team="mobile", tout=int(factor * 300 * math.exp(0.8 * QUANTILES[i % 24])), n=i))
    return calls


def run(changes: list[tuple[int, int]], days: int = 6) -> tuple[AnomalyEngine, list]:
    engine, updates = AnomalyEngine(), []
    calls = key_calls(days, changes)
    for i in range(0, len(calls), 30):  # 5-hour batches (the buckets close as the calls go on)
        updates += [u for u in engine.observe(calls[i:i + 30], now=2e9)
                    if u.record["kind"] == "tokens_per_request" and u.record["scope_dim"] == "api_key"]
    return engine, updates


def calls_until_found(updates: list, onset: int) -> int | None:
    from datetime import datetime
    for u in updates:
        if u.action == "open" and datetime.fromisoformat(u.record["detected_at"]).timestamp() >= onset:
            found = datetime.fromisoformat(u.record["detected_at"]).timestamp()
            return sum(1 for i in range(144 * 7) if onset <= MONDAY + i * 600 + 180 < found - 120)
    return None


def test_the_same_change_the_next_day_needs_no_more_calls_than_the_first():
    """An 8-hour change that reverts (before: 14 changed calls, then 22), then the same change on the same key the next day."""
    _, updates = run([(FIRST, FIRST + 8 * HOUR), (SECOND, SECOND + 8 * HOUR)])
    first, second = calls_until_found(updates, FIRST), calls_until_found(updates, SECOND)
    print("changed calls until found:", first, second)
    assert first is not None and second is not None, (first, second)
    assert second <= first + 1, (first, second)


def test_a_change_that_lasts_becomes_the_keys_new_normal():
    """The change stays: one anomaly, resolved as the key's new normal a day after it opened, none after it."""
    engine, updates = run([(FIRST, MONDAY + 7 * DAY)], days=7)
    opens = [u.record for u in updates if u.action == "open"]
    closes = [u.record for u in updates if u.action == "close"]
    assert len(opens) == 1 and len(closes) == 1, ([r["detected_at"] for r in opens], [r["detected_at"] for r in closes])
    assert "new normal" in closes[0]["explanation"], closes[0]["explanation"]
    assert closes[0]["detected_at"] < "2026-09-12T00:00:00Z", closes[0]["detected_at"]
    mean = engine.scopes[("api_key", "k-tpl")].out_log[1]
    assert abs(mean - (math.log(2.5 * 300))) < 0.15, mean  # learnt the new level (~ln 750; before ~ln 300)


def test_the_held_calls_survive_a_restart():
    """A snapshot taken while the first change is open restores the held calls: the same detections as without."""
    changes = [(FIRST, FIRST + 8 * HOUR), (SECOND, SECOND + 8 * HOUR)]
    _, expected = run(changes)
    engine, updates = AnomalyEngine(), []
    calls = key_calls(6, changes)
    cut = next(i for i, c in enumerate(calls) if c["ts"] >= "2026-09-10T18:00")  # the first change's anomaly is open
    for i in range(0, len(calls), 30):
        if i <= cut < i + 30:
            assert engine.scopes[("api_key", "k-tpl")].held is not None
            engine = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
        updates += [u for u in engine.observe(calls[i:i + 30], now=2e9)
                    if u.record["kind"] == "tokens_per_request" and u.record["scope_dim"] == "api_key"]
    assert [(u.action, u.record["id"], u.record["detected_at"]) for u in updates] == \
           [(u.action, u.record["id"], u.record["detected_at"]) for u in expected]
