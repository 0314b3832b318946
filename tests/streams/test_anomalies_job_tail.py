"""A template change in the last minutes of a nightly batch job (office seed 34, issue 17: `nightly-enrichment`'s
outputs 2.5x longer from 01:08, two minutes before its job ended, 129 changed calls, nothing recorded). The job's
last bucket holds ~300 calls, half of them changed: the bucket's mean output is ~1.75x usual (anomalous, needs a second
bucket, which never comes: the job ends), while the per-call CUSUM is far past its threshold (strong). The stronger
verdict must win."""

from __future__ import annotations

import math
import random

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event

DAY = 86400
JOB_START, JOB_MINUTES = 30 * 60, 40  # 00:30-01:10 UTC, about one call a second


def job_night(day_start: int, seed: int, changed_from: float | None = None) -> list[list[dict]]:
    """One batch per 5 minutes of one night; outputs log-normal (sigma 0.35), 2.5x from `changed_from` on."""
    rng, batches = random.Random(seed), []
    start, end = day_start + JOB_START, day_start + JOB_START + JOB_MINUTES * 60
    for b in range(day_start, day_start + 4 * 3600, 300):
        batch = []
        if start <= b < end:
            for i in range(300):
                t = b + rng.randrange(300)
                tout = int(rng.lognormvariate(math.log(150), 0.35))
                if changed_from is not None and t >= changed_from:
                    tout = int(tout * 2.5)
                batch.append(event(t, "sk-etl", team="data", tin=int(rng.lognormvariate(math.log(1200), 0.5)),
                                   tout=tout, n=i))
        batches.append(batch)
    return batches


def run(nights: int, changed_from_s_before_end: int | None) -> list[dict]:
    engine, updates = AnomalyEngine(), []
    for night in range(nights):
        for batch in job_night(MONDAY + night * DAY, seed=night):
            engine.observe(batch, now=2e9)
    last = MONDAY + nights * DAY
    onset = None if changed_from_s_before_end is None else last + JOB_START + JOB_MINUTES * 60 - changed_from_s_before_end
    for batch in job_night(last, seed=99, changed_from=onset):
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(last + JOB_START + JOB_MINUTES * 60 + 1200)  # (within live_lag_s of the last call)
    return [u.record for u in updates if u.action == "open" and u.record["kind"] == "tokens_per_request"]


def test_a_template_change_in_a_jobs_last_minutes_is_found():
    found = run(8, changed_from_s_before_end=150)
    assert ("api_key", "sk-etl") in {(r["scope_dim"], r["scope_value"]) for r in found}, found


def test_the_same_job_unchanged_raises_nothing():
    assert run(8, changed_from_s_before_end=None) == []
