"""A cheap loop on a job key at an hour it is never active (issue 17, office seed 11): the nightly job's key
(~300 calls per bucket for 40 minutes a night) looped at 22:07 with 45 calls per bucket and 3x prompts, $0.25-0.63
an hour. That is below the absolute $0.50/hour floor and a fifth of what the key's busy bucket (the job) spends, so
neither spend rule saw it. What tells it from the job running late (benign, and busier) is that its calls are not the
key's usual calls: each costs twice the key's typical call, at an hour where the key usually spends nothing."""

from __future__ import annotations

import random

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

DAY = 86400
HISTORY_END = MONDAY + 5 * DAY
JOB_START = 90 * 60  # 01:30 UTC, for 40 minutes, ~1 call/s
_cache: dict[str, bytes] = {}


def nightly(start: int, end: int, seed: int, late_day: int | None = None, extra=None) -> list[list[dict]]:
    """The job key alone: 1 call/s of gpt-4o-mini (1,200-token prompts) from 01:30 to 02:10 UTC, an hour later on
    `late_day`; `extra(bucket_start)` adds calls to a bucket."""
    rng, batches, n = random.Random(seed), [], 0
    for b in range(start, end, 300):
        day = (b - MONDAY) // DAY
        offset = b % DAY - (JOB_START + (3600 if day == late_day else 0))
        batch = []
        if 0 <= offset < 40 * 60:
            for i in range(rng.randint(280, 320)):
                n += 1
                batch.append(event(b + i * 300 // 320, "sk-job", team="data", model="gpt-4o-mini",
                                   tin=int(rng.lognormvariate(7.09, 0.3)), tout=int(rng.lognormvariate(5.0, 0.3)), n=n))
        batches.append(batch + (extra(b) if extra else []))
    return batches


def job_engine() -> AnomalyEngine:
    if "job" not in _cache:
        engine = AnomalyEngine()
        for batch in nightly(MONDAY, HISTORY_END, seed=3):
            engine.observe(batch, now=2e9)
        _cache["job"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["job"]))


def spend_alerts(late_day: int | None = None, extra=None) -> list[dict]:
    engine, updates = job_engine(), []
    for batch in nightly(HISTORY_END, HISTORY_END + DAY, seed=4, late_day=late_day, extra=extra):
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(HISTORY_END + DAY + 900)
    return [u.record for u in updates if u.action == "open" and u.notify and u.record["kind"] == "spend_rate"]


def loop_at(onset: int, minutes: int, calls: int = 45, prompt_multiple: float = 3.0):
    rng = random.Random(11)

    def loop(b):  # `calls` per 5 minutes with `prompt_multiple` x the key's prompts
        if not onset <= b < onset + minutes * 60:
            return []
        return [event(b + i * 6 + 3, "sk-job", team="data", model="gpt-4o-mini",
                      tin=int(rng.lognormvariate(7.09, 0.3) * prompt_multiple), tout=int(rng.lognormvariate(5.0, 0.3)),
                      n=100_000 + (b - onset) // 300 * 100 + i) for i in range(calls)]
    return loop


def test_a_cheap_loop_at_an_hour_the_job_key_is_never_active_is_alerted():
    onset = HISTORY_END + 22 * 3600
    found = [a for a in spend_alerts(extra=loop_at(onset, 60)) if a["scope_dim"] == "api_key"]
    assert len(found) == 1, found
    # Sustained: three buckets in a row, then the third's close and its grace period.
    assert onset <= _epoch(found[0]["start"]) and _epoch(found[0]["detected_at"]) <= onset + 3 * 300 + 120
    assert "sk-job" in found[0]["explanation"] and "its typical call, at an hour it is usually quiet" in \
        found[0]["explanation"], found[0]["explanation"]


def test_the_job_running_an_hour_late_is_no_spend_alert():
    assert spend_alerts(late_day=5) == []


def test_usual_calls_at_an_off_hour_are_no_spend_alert():
    """A re-run of part of the job by hand (its own call size, 45 calls per bucket) at 22:00 is the key's usual work
    at another time, like the late job: not a loop."""
    assert spend_alerts(extra=loop_at(HISTORY_END + 22 * 3600, 60, prompt_multiple=1.0)) == []


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_leak_of_cheap_calls_does_not_teach_the_key_a_cheaper_typical_call():
    """Office seed 8: a leaked client's 500 cheap calls per bucket on the weekly report's key dragged its typical call
    from $0.079 to $0.054 (each bucket's mean call, clipped, learnt while the burst was open), so the report's own
    calls looked 2x pricier when daylight saving moved its run to an hour the key is silent at: a false spend alert.
    A bucket of an open volume anomaly (a loop, a leak, an explosion) is not this key's usual call."""
    leak_at, rerun_at = HISTORY_END + 12 * 3600, HISTORY_END + 22 * 3600

    def leak_then_rerun(b):
        if leak_at <= b < leak_at + 3600:  # a leaked client: 2 calls/s of 200-token prompts
            return [event(b + i // 2, "sk-job", team="data", model="gpt-4o-mini", tin=200, tout=20,
                          n=200_000 + (b - leak_at) * 2 + i) for i in range(600)]
        return loop_at(rerun_at, 60, prompt_multiple=1.0)(b)

    engine = job_engine()
    typical = engine.scopes[("api_key", "sk-job")].call_cost
    updates = []
    for batch in nightly(HISTORY_END, HISTORY_END + DAY, seed=4, extra=leak_then_rerun):
        updates += engine.observe(batch, now=2e9)
    assert any(u.record["kind"] == "request_burst" for u in updates if u.action == "open")  # the leak was seen
    assert engine.scopes[("api_key", "sk-job")].call_cost > 0.8 * typical
    assert [u.record for u in updates if u.action == "open" and u.notify and u.record["kind"] == "spend_rate"
            and u.record["start"] >= _iso(rerun_at - 300)] == []


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
