"""Spend on bursty keys (issue 17 follow-up): a key that works in sessions (a dozen calls in a few minutes, then
nothing) has a spend deviation as large as its level, so a runaway loop at 7x its level never reaches six robust
deviations. No session of it spends twice a busy bucket with twice a busy bucket's calls for 15 minutes; a loop does.
Found on the sparse family (seed 8): two 1-2 hour loops on sk-sparse-01 were never alerted, and the key's busy
baseline learnt the loop while it ran (busy calls 16 -> 70)."""

from __future__ import annotations

import random

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

DAY = 86400
HISTORY_END = MONDAY + 4 * DAY
_cache: dict[str, bytes] = {}


def sessions(start: int, end: int, seed: int, extra=None) -> list[list[dict]]:
    """One key working in sessions: ~5 sessions an hour in the day (fewer at night), each 4-20 calls 5-40 s apart
    with a context that grows, heavy-tailed prompts (log-normal sigma 1.1, 3 % documents of 20k-120k tokens); `extra(bucket_start)` adds calls to a bucket."""
    rng, batches, pending, n = random.Random(seed), [], [], 0
    for b in range(start, end, 300):
        hour = (b // 3600) % 24
        if rng.random() < (0.45 if 8 <= hour < 20 else 0.05):
            t, context = b + rng.randrange(300), 1.0
            for _ in range(rng.randint(4, 20)):
                n += 1
                tin = rng.uniform(20_000, 120_000) if rng.random() < 0.03 else rng.lognormvariate(7.6, 1.1) * context
                pending.append(event(t, "bursty", model="gpt-4o", tin=int(tin), tout=int(rng.lognormvariate(5.5, 0.8)),
                                     n=n))
                t += rng.randrange(5, 40)
                context = min(context * 1.15, 3.0)
        batch = [e for e in pending if e["ts"] < _iso(b + 300)]
        pending = [e for e in pending if e["ts"] >= _iso(b + 300)]
        batches.append(batch + (extra(b) if extra else []))
    return batches


def _iso(t: int) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bursty_engine() -> AnomalyEngine:
    if "bursty" not in _cache:
        engine = AnomalyEngine()
        for batch in sessions(MONDAY, HISTORY_END, seed=5):
            engine.observe(batch, now=2e9)
        _cache["bursty"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["bursty"]))


def spend_alerts(extra=None, seed: int = 6) -> list[dict]:
    engine, updates = bursty_engine(), []
    for batch in sessions(HISTORY_END, HISTORY_END + DAY, seed=seed, extra=extra):
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(HISTORY_END + DAY + 900)
    return [u.record for u in updates if u.action == "open" and u.notify and u.record["kind"] == "spend_rate"]


def test_a_loop_on_a_bursty_key_is_found_after_three_buckets():
    onset = HISTORY_END + 14 * 3600  # a weekday afternoon, the key's busy time
    rng = random.Random(9)

    def loop(b):  # 45 calls per 5 minutes (0.15/s) with 3x the key's median prompt, for 90 minutes
        if not onset <= b < onset + 90 * 60:
            return []
        return [event(b + i * 6 + 3, "bursty", model="gpt-4o", tin=int(rng.lognormvariate(7.6, 0.5) * 3), tout=250,
                      n=10_000 + (b - onset) // 300 * 100 + i) for i in range(45)]

    found = [a for a in spend_alerts(loop) if a["scope_dim"] == "api_key"]
    assert len(found) == 1, found
    # The sustained rule's earliest: three buckets in a row, then the grace period of the third's close.
    assert onset <= _epoch(found[0]["start"]) and _epoch(found[0]["detected_at"]) <= onset + 3 * 300 + 120


def test_the_bursty_key_alone_raises_no_spend_alert():
    for seed in (6, 7, 8):
        assert spend_alerts(seed=seed) == []


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
