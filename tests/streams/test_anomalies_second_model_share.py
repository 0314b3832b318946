"""A key's usual second model is its mix, not a model shift (issue 17, tenth round). Sparse seed 21 paged 5 false model
shifts, each a session on a key's own second model (gpt-4o or mistral-large, one session in five). The "routine"
test read the key's call share of that model as a per-*bucket* average; a quiet key's bucket holds one session on one
model, so the share swung with the sessions and dipped under 10 % after a run of main-model sessions (sk-sparse-42's
gpt-4o: 0.13 one day, under 0.10 the next, 15 % of its calls all along), started from 0 for days after the model was
first seen, and did not exist for a second model called in one-call sessions (never "news", so never learnt: the
calls of sk-sparse-30's loop on it counted as calls on a rare model). The share is now learnt per call, for every
model called."""

from __future__ import annotations

import random

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

DAY = 86400


def sessions(seed: int, start: int, end: int, key: str, *, per_hour: float, second_share: float,
             calls=(1, 6)) -> list[tuple[int, dict]]:
    """One quiet key's sessions: a few calls seconds apart, all on one model; the second model for `second_share`
    of the sessions. Office hours on weekdays, rarer at night and at weekends."""
    rng, out, t, n = random.Random(seed), [], float(start), 0
    while True:
        t += rng.expovariate(per_hour / 3600)
        if t >= end:
            return out
        hour, weekend = (t / 3600) % 24, ((int(t) // DAY) + 3) % 7 >= 5
        if rng.random() > (0.15 if weekend or not 8 <= hour < 19 else 1.0):
            continue
        model = "gpt-4o" if rng.random() < second_share else "gpt-4o-mini"
        when = t
        for _ in range(rng.randint(*calls)):
            n += 1
            out.append((int(when), event(int(when), key, model=model, tin=int(rng.lognormvariate(7.3, 0.6)),
                                         tout=int(rng.lognormvariate(5.7, 0.5)), n=n)))
            when += rng.uniform(2, 40)


def model_shift_alerts(seed: int, days: int = 14, per_hour: float = 1.5) -> list[str]:
    end = MONDAY + days * DAY
    calls = sorted(sessions(seed, MONDAY, end, "quiet", per_hour=per_hour, second_share=0.2), key=lambda c: c[0])
    background = traffic(MONDAY, end, peak=2.0, seed=seed, keys=("busy",), models=(("gpt-4o-mini", 1.0),))
    engine, updates, i = AnomalyEngine(), [], 0
    for b, batch in zip(range(MONDAY, end, 300), background):
        mine = []
        while i < len(calls) and calls[i][0] < b + 300:
            mine.append(calls[i][1])
            i += 1
        updates += engine.observe(batch + mine, now=2e9)
    # (From the third day on: both keys past their warm-up, so the feature's rule knows whose model gpt-4o is.)
    return [f"{u.record['start']} {u.record['explanation']}" for u in updates
            if u.action == "open" and u.notify and u.record["kind"] == "model_shift"
            and u.record["start"] >= "2026-09-10"]


def test_sessions_on_a_keys_usual_second_model_page_no_model_shift():
    # Two weeks of a quiet key's sessions in office hours, one in five on gpt-4o (16x the price per token of its main
    # model), beside a busy key of the same feature on gpt-4o-mini only. On the old per-bucket share each of these
    # paged a model shift of the feature (its key's share of gpt-4o had dipped under 10 %, so the calls were "rare").
    # (Seeds 2-5, 7 and 8 at 0.8 sessions an hour page on neither; seed 1 pages on both on its third day, with ~40
    # calls learnt: see "Limits" in docs/anomalies.md.)
    for per_hour, seed in ((0.8, 6), (1.5, 10)):
        assert model_shift_alerts(seed, per_hour=per_hour) == [], (per_hour, seed)
