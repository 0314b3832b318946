"""A young key learns a leak's first bucket as one session, not as most of its calls (issue 17, thirteenth round).

Sparse seed 21: sk-sparse-16 had made 23 calls when a leaked client sent 67 calls of ~40 output tokens in one bucket,
before the burst opened. A key younger than `tpr_key_min_calls` (30) learnt each bucket at full weight (a running
mean), so that bucket took its learnt median output from 308 to 66 tokens and its spread from 0.63 to 1.81: every
usual answer for weeks scored high (paged on 03-16 before the twelfth round's fade, blind to a template change after).
Now a young key's bucket counts as at most `tpr_young_bucket_calls` (10) calls, as a scope's model mix caps a bucket
(`learn_mix`), and, once it has that many calls behind it, the bucket's mean and spread are clipped as a mature key's
are (a leak's calls are not the key's own)."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from statistics import NormalDist

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

HOUR, USUAL = 3600, 300
# The key's usual log outputs: sigma 0.8 around ln 300 over evenly spread normal quantiles (no random draw).
QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 24) for i in (7, 19, 2, 13, 22, 4, 16, 10, 0, 12, 21, 5, 17, 8, 23, 3,
                                                             14, 11, 1, 20, 6, 15, 9, 18)]
# A quiet key's first days: 23 calls 2.5 hours apart (warm after two days, still young), then 67 calls of 40 output
# tokens in one bucket, then its usual calls, one an hour, for three days.
YOUNG_CALLS, APART = 23, 2.5 * HOUR
LEAK = MONDAY + int(YOUNG_CALLS * APART)
# (the leak's bucket closes when the next call comes, an hour later)
LEAK_DONE = datetime.fromtimestamp(LEAK + 90 * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def calls() -> list[dict]:
    out = [event(MONDAY + int(i * APART) + 7 * 60, "k-young", team="search", n=i,
                 tout=int(USUAL * math.exp(0.8 * QUANTILES[i % 24]))) for i in range(YOUNG_CALLS)]
    out += [event(LEAK + 4 * j, "k-young", team="search", tout=40, n=1000 + j) for j in range(67)]
    out += [event(LEAK + (i + 1) * HOUR, "k-young", team="search", n=2000 + i,
                  tout=int(USUAL * math.exp(0.8 * QUANTILES[(i + 5) % 24]))) for i in range(72)]
    return sorted(out, key=lambda e: e["ts"])


def test_a_leak_in_a_young_keys_first_day_does_not_reset_its_sizes():
    engine, pages, after_leak = AnomalyEngine(), [], None
    for call in calls():
        if after_leak is None and call["ts"] >= LEAK_DONE:
            seen, mu, var = engine.scopes[("api_key", "k-young")].out_log
            after_leak = (math.exp(mu), math.sqrt(var))
        pages += [u.record for u in engine.observe([call], now=2e9)
                  if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    median, spread = after_leak
    assert 180 < median < 400 and spread < 1.2, after_leak  # its usual 300 and 0.8, not the leak's 40
    # ... so its usual answers over the next three days are not a template change
    assert pages == [], [p["detected_at"] + " " + p["explanation"] for p in pages]
