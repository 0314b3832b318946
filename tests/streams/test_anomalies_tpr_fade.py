"""Evidence of a tokens-per-request CUSUM fades over a quiet key's pauses (issue 17, twelfth round).

Sparse seed 11 paged sk-sparse-49 at 19:15 for a template change that had ended 18 hours before: the change (missed,
its calls were small draws) left the key's CUSUM at 5.09 of h = 6.9, the key was silent overnight, and one long answer
the next evening crossed h. Seven more false pages of sparse seeds 11 and 21 were sums of small excesses carried over
pauses of hours to days. Now the part of a pause beyond `tpr_cusum_fade_after_s` (1 h) halves the evidence every
`tpr_cusum_half_life_s` (3 h); calls an hour apart keep all of it (test_anomalies_quiet_key_template.py)."""

from __future__ import annotations

import math
from statistics import NormalDist

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

HOUR, DAYS = 3600, 6
# The key's usual log outputs: sigma 0.8 around ln 300 over evenly spread normal quantiles (no random draw).
QUANTILES = [NormalDist().inv_cdf((i + 0.5) / 24) for i in (7, 19, 2, 13, 22, 4, 16, 10, 0, 12, 21, 5, 17, 8, 23, 3,
                                                             14, 11, 1, 20, 6, 15, 9, 18)]
CHANGED = 9  # calls of a 2.5x template change: too few to reach h, enough to leave the CUSUM near it


def calls(pause_h: float) -> list[dict]:
    """DAYS days of one call an hour on k-quiet, CHANGED calls 2.5x longer, a pause of `pause_h` hours, then one
    long answer (3.5 deviations above the key's usual; one call counts at most 3) and a usual one."""
    out, t = [], MONDAY + 7 * 60
    for i in range(DAYS * 24):
        out.append(event(t, "k-quiet", team="legal", tout=int(300 * math.exp(0.8 * QUANTILES[i % 24])), n=i))
        t += HOUR
    for i in range(CHANGED):
        out.append(event(t, "k-quiet", team="legal", tout=int(2.5 * 300 * math.exp(0.1 * QUANTILES[i])), n=1000 + i))
        t += HOUR
    t += int((pause_h - 1) * HOUR)
    out.append(event(t, "k-quiet", team="legal", tout=int(300 * math.exp(0.8 * 3.5)), n=2000))
    out.append(event(t + 20 * 60, "k-quiet", team="legal", tout=300, n=2001))  # (its bucket closes)
    return out


def run(pause_h: float) -> tuple[list[dict], float]:
    """The key's tokens-per-request pages and its CUSUM just before the last call."""
    engine, pages = AnomalyEngine(), []
    stream = calls(pause_h)
    cusum = 0.0
    for call in stream:
        if call is stream[-2]:
            cusum = engine.scopes[("api_key", "k-quiet")].cusum
        pages += [u.record for u in engine.observe([call], now=2e9)
                  if u.action == "open" and u.notify and u.record["kind"] == "tokens_per_request"
                  and u.record["scope_dim"] == "api_key"]
    return pages, cusum


def test_a_long_answer_the_day_after_a_short_change_is_not_a_page():
    pages, cusum = run(pause_h=18)
    assert cusum > 3, cusum  # the short change did leave evidence (the case needs it)
    assert pages == [], [p["detected_at"] + " " + p["explanation"] for p in pages]


def test_the_same_long_answer_right_after_the_change_still_counts_its_evidence():
    # One hour later (the key's usual rhythm) nothing fades: the long answer adds to the change's evidence.
    pages, _ = run(pause_h=1)
    assert len(pages) == 1, pages
