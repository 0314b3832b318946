"""Sustain counted in minutes (issue #17, detection delay): a spend deviation on a key must last 15 minutes (three
buckets) because a key working in sessions spends a busy bucket's worth in one session; but a runaway loop calls
minute after minute, and a session's chain of calls ends. Office seed 21: loops were found a median 15.8 minutes after
their first call (21:46 -> 22:02), above the 15-minute target. A key whose calls came in every one of the last 8+
minutes, anomalous in two buckets in a row, opens after those two."""

from __future__ import annotations

import random

from tests.streams.anomaly_traffic import event
from tests.streams.test_anomalies_bursty_keys import HISTORY_END, _epoch, spend_alerts


def loop_from(onset: int, seconds_apart: int):
    rng = random.Random(9)

    def loop(b):  # a call every `seconds_apart` with 5x the key's median prompt, for 90 minutes
        if not onset - 300 < b < onset + 90 * 60:
            return []
        return [event(t, "bursty", model="gpt-4o", tin=int(rng.lognormvariate(7.6, 0.5) * 5), tout=250, n=10_000 + t)
                for t in range(max(b, onset) + 3, b + 300, seconds_apart)]
    return loop


def test_a_loop_calling_every_minute_opens_after_two_buckets():
    onset = HISTORY_END + 14 * 3600 + 60  # 14:01 on a weekday, the key's busy time; 0.15 calls/s
    found = [a for a in spend_alerts(loop_from(onset, 6)) if a["scope_dim"] == "api_key"]
    assert len(found) == 1, found
    # 14:00 and 14:05 are anomalous, with calls in every minute since 14:01: open at the close of 14:05-14:10, 14:12
    # (11 minutes after the first call), not at the third bucket's, 14:17.
    # at the close: end + grace - 1 min (oncall24)
    assert _epoch(found[0]["detected_at"]) == HISTORY_END + 14 * 3600 + 2 * 300 + 60


def test_the_same_spend_in_bursts_with_quiet_minutes_waits_for_the_third_bucket():
    """The same calls per bucket in every other minute (sessions leave minutes without a call): the sustained rule."""
    onset = HISTORY_END + 14 * 3600 + 60

    def bursts(b):
        loop = loop_from(onset, 3)(b)  # the same calls per bucket
        return [e for e in loop if int(e["ts"][14:16]) % 2 == 0]  # every other minute only

    found = [a for a in spend_alerts(bursts) if a["scope_dim"] == "api_key"]
    assert len(found) == 1 and _epoch(found[0]["detected_at"]) == HISTORY_END + 14 * 3600 + 3 * 300 + 60
