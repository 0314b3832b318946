"""A template change on a quiet key (issue 17, sixth round). A key making one call an hour never has the 8 calls a
bucket's mean needs; the per-call CUSUM finds a 2.5x longer output after about the changed calls an optimal
sequential test needs at the false-alert budget (~10 at 24 calls a day, docs/rounds/anomalies.md "sixth round").
Before, the threshold never went below h = 8, which was tuned for scopes of 100 calls a day and more (on this key:
~800 days between chance alarms instead of ~190), and it took 14 changed calls; now h = 8 + ln(calls per day / 100)
for quiet scopes too, down to `tpr_cusum_h_min` = 6."""

from __future__ import annotations

import math
from statistics import NormalDist

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

HOUR, DAYS = 3600, 8
# Log outputs of the key's usual calls: sigma 0.8 around ln 300, spread evenly over the normal quantiles (a fixed,
# shuffled order), so the test does not depend on a random draw.
QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 24) for i in (7, 19, 2, 13, 22, 4, 16, 10, 0, 12, 21, 5, 17, 8, 23, 3,
                                                             14, 11, 1, 20, 6, 15, 9, 18)]


def quiet_key(changed_from: int | None) -> list[dict]:
    """One call an hour (minute 7) on key k-quiet for DAYS days; from `changed_from` on, outputs 2.5x longer."""
    calls = []
    for i in range(DAYS * 24):
        t = MONDAY + i * HOUR + 7 * 60
        tout = 300 * math.exp(0.8 * QUANTILES[i % 24])
        if changed_from is not None and t >= changed_from:
            tout = 2.5 * 300 * math.exp(0.8 * QUANTILES[(i * 7) % 24] * 0.25)  # ~2.5x, a little spread
        calls.append(event(t, "k-quiet", team="legal", tout=int(tout), n=i))
    return calls


def opened(changed_from: int | None) -> list[dict]:
    engine, out = AnomalyEngine(), []
    for call in quiet_key(changed_from):
        out += [u.record for u in engine.observe([call], now=2e9)
                if u.action == "open" and u.record["kind"] == "tokens_per_request"]
    return out


def test_a_quiet_keys_template_change_is_found_after_about_ten_changed_calls():
    onset = MONDAY + 6 * 86400
    found = [r for r in opened(onset) if r["scope_dim"] == "api_key"]
    assert found, "not found within 48 changed calls"
    changed_calls = int(found[0]["detected_at"][11:13]) + 1  # its calls came at 00:07, 01:07, ... of that day
    assert found[0]["detected_at"].startswith("2026-09-13T"), found[0]["detected_at"]
    assert changed_calls <= 12, (changed_calls, found[0]["detected_at"])


def test_the_same_quiet_key_unchanged_raises_nothing():
    assert opened(None) == []
