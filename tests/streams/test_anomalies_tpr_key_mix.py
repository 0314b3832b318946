"""A broad scope's tokens per request that moves with who called is not a changed template (issue 17, fourteenth
round).

Sparse seed 21 paged project support-b at 16:00 on 03-18: 'output tokens per request jumped to 1,324, 5.8x the usual
229'. The project's per-bucket mean had learnt its buckets of short answers; in two buckets a key with long answers
made a session, each call of it its own usual size (the calls' scores against their own keys: +0.23 and +0.5
deviations per call; a 2.5x template moves each changed call by ~+1.15). Now a broad scope's per-bucket verdict on
output is only 'elevated' when most of its calls are scored against their keys and their log output is less than
half the rule's smallest jump (ln 1.6 / 2) above their keys' means (`KindRules._usual_sizes`)."""

from __future__ import annotations

import math
from statistics import NormalDist

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

BUCKET, DAYS = 300, 3
# Evenly spread normal quantiles (no random draw): a key's usual log output sizes around its median.
Q = [NormalDist().inv_cdf((i + 0.5) / 20) for i in (7, 15, 2, 12, 18, 4, 10, 0, 13, 19, 5, 16, 9, 1, 14, 6, 17, 3, 11, 8)]


def size(median: float, i: int, sigma: float = 0.5, mult: float = 1.0) -> int:
    return int(mult * median * math.exp(sigma * Q[i % len(Q)]))


def traffic(mult: float) -> list[list[dict]]:
    """DAYS days of k-short's short answers (10 calls a bucket, median 100 tokens) and k-long's long ones (one call
    every two hours, median 2,000), both in team support's feature chat; then two buckets in which k-long makes a
    10-call session beside k-short's usual calls. `mult` multiplies every output of those two buckets (a template)."""
    batches, n = [], 0
    start = MONDAY
    for b in range(start, start + DAYS * 86400 + 12 * BUCKET, BUCKET):
        batch = []
        session = start + DAYS * 86400 + 4 * BUCKET <= b < start + DAYS * 86400 + 6 * BUCKET
        for i in range(10):
            n += 1
            batch.append(event(b + 5 + 25 * i, "k-short", team="support", tout=size(100, n, mult=mult if session else 1),
                               n=n))
        if session or (b - start) % 7200 == 0:
            for i in range(10 if session else 1):
                n += 1
                batch.append(event(b + 17 + 25 * i, "k-long", team="support",
                                   tout=size(2000, n, mult=mult if session else 1), n=n))
        batches.append(batch)
    return batches


def run(mult: float) -> tuple[list[dict], list[dict]]:
    """(tokens-per-request anomalies opened, those alerted)."""
    engine, opened = AnomalyEngine(), []
    for batch in traffic(mult):
        opened += [u for u in engine.observe(batch, now=2e9)
                   if u.action == "open" and u.record["kind"] == "tokens_per_request"]
    return [u.record for u in opened], [u.record for u in opened if u.notify]


def test_a_session_of_a_key_with_long_answers_is_not_a_template_change_of_its_feature():
    opened, alerted = run(mult=1.0)
    assert alerted == [], [f"{r['scope_dim']}={r['scope_value']}: {r['explanation']}" for r in alerted]
    assert opened == [], [f"{r['scope_dim']}={r['scope_value']}" for r in opened]


def test_the_same_buckets_with_every_answer_longer_still_open_on_the_feature():
    # The control: the same two buckets with every call 2.5x its key's usual size (a changed template) open the
    # broad scopes' per-bucket rule as before.
    opened, alerted = run(mult=2.5)
    assert ("feature", "chat") in {(r["scope_dim"], r["scope_value"]) for r in opened}, opened
    assert alerted, opened


def test_a_broad_scopes_change_closes_when_its_usual_calls_come_back():
    # Only a firing verdict is demoted: a usual bucket after the change stays "normal" and closes the anomaly (had
    # it been made "elevated", hysteresis would have held the feature's anomaly open for as long as k-short calls).
    engine, closed = AnomalyEngine(), []
    for batch in traffic(mult=2.5):
        closed += [u.record for u in engine.observe(batch, now=2e9) if u.action == "close"
                   and u.record["kind"] == "tokens_per_request" and u.record["scope_dim"] == "feature"]
    assert [r["scope_value"] for r in closed] == ["chat"], closed
