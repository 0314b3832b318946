"""Calls of an unpriced model are not learnt as their key's own output sizes (issue 17, thirteenth round).

Sparse seed 11 paged sk-sparse-37 on 03-30 at 19:15 for a session of its usual answers: the night before, a client
on the key called an unpriced model (the `unpriced_usage` injection: ~200 calls of ~400 output tokens in 105 minutes)
and the key learnt those calls as its own, taking its learnt median output from ~880 to ~540 tokens (0.6 deviations),
so its usual answers scored high for a day. The feature sales-summarize was paged on 03-20 the same way (its key
sk-sparse-21 learnt two such streams). The tokens-per-request CUSUM already left unpriced calls out of its scores (their
own anomaly); now the key's distribution leaves them out too."""

from __future__ import annotations

import math
from statistics import NormalDist

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

HOUR, USUAL = 3600, 900
# The key's usual log outputs: sigma 0.8 around ln 900 over evenly spread normal quantiles (no random draw).
QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 24) for i in (7, 19, 2, 13, 22, 4, 16, 10, 0, 12, 21, 5, 17, 8, 23, 3,
                                                             14, 11, 1, 20, 6, 15, 9, 18)]
UNPRICED_FROM = MONDAY + 4 * 86400 + 1 * HOUR  # the fifth night, 01:00-03:00: a client on an unpriced model
SESSION = MONDAY + 4 * 86400 + 14 * HOUR  # that afternoon: seven answers one deviation above the key's usual


def usual(t: int, i: int) -> dict:
    return event(t, "k-sales", team="sales", tout=int(USUAL * math.exp(0.8 * QUANTILES[i % 24])), n=i)


def calls() -> list[dict]:
    out = [usual(MONDAY + 7 * 60 + i * 1800, i) for i in range(4 * 48 + 24)]  # a call every half hour, 4.5 days
    for b in range(24):  # 8 calls per 5 minutes for two hours, ~400 output tokens each
        for j in range(8):
            t = UNPRICED_FROM + b * 300 + j * 30 + 5
            tout = int(400 * math.exp(0.4 * QUANTILES[(b + j) % 24]))
            out.append(event(t, "k-sales", team="sales", model="acme-internal-llm", tin=1500, tout=tout,
                             pricing="unpriced", n=5000 + b * 8 + j))
    out += [event(SESSION + 30 * j, "k-sales", team="sales", tout=int(USUAL * math.exp(0.8)), n=9000 + j)
            for j in range(7)]
    out.append(usual(SESSION + 3600, 9100))  # (its bucket closes)
    return sorted(out, key=lambda e: e["ts"])


def test_an_unpriced_client_does_not_teach_a_key_shorter_answers():
    engine, pages, median_before_session = AnomalyEngine(), [], None
    for call in calls():
        if median_before_session is None and call["ts"] >= "2026-09-11T14:00:00Z":
            median_before_session = math.exp(engine.scopes[("api_key", "k-sales")].out_log[1])
        pages += [u.record for u in engine.observe([call], now=2e9)
                  if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"]
    # Its usual median (~900; log(1 + tokens) learnt from 24 quantiles), not pulled towards the unpriced calls' 400.
    assert 800 < median_before_session < 1000, median_before_session
    assert pages == [], [p["detected_at"] + " " + p["explanation"] for p in pages]
