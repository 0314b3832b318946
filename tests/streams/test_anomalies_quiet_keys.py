"""Targets on quiet keys (issue 17 follow-up): a template change that makes the outputs of a key calling every few
minutes 2.5x longer is found although no 5-minute bucket holds enough calls for a mean, and heavy-tailed sizes
(one long answer) alone are not."""

from __future__ import annotations

import math
import random

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, traffic

DAY = 86400
HISTORY_END = MONDAY + 3 * DAY
_cache: dict[str, bytes] = {}


def heavy_tailed(seed: int, factor=lambda t: 1.0):
    """Output sizes log-normal with sigma 0.8 (real answers vary a lot), times `factor(t)`."""
    rng = random.Random(seed)

    def modify(e, t):
        if e["status"] == "ok":
            tout = int(rng.lognormvariate(math.log(300), 0.8) * factor(t))
            e["usage"]["output_tokens"] = tout
            pico = e["usage"]["input_tokens"] * 150_000 + tout * 600_000
            e["cost_usd"] = f"{pico // 10**12}.{pico % 10**12:012d}"
        return e
    return modify


def quiet_engine() -> AnomalyEngine:
    """Three days of one key making about one call per 5 minutes at its busiest."""
    if "quiet" not in _cache:
        engine = AnomalyEngine()
        for batch in traffic(MONDAY, HISTORY_END, peak=1.0, keys=("quiet",), models=(("gpt-4o-mini", 1.0),),
                             modify=heavy_tailed(3)):
            engine.observe(batch, now=2e9)
        _cache["quiet"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["quiet"]))


def alerts_on_day_four(factor) -> list[dict]:
    engine, updates = quiet_engine(), []
    end = HISTORY_END + DAY
    for batch in traffic(HISTORY_END, end, peak=1.0, keys=("quiet",), seed=11, models=(("gpt-4o-mini", 1.0),),
                         modify=heavy_tailed(12, factor)):
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(end + 900)
    return [u.record for u in updates if u.action == "open" and u.notify]


def test_longer_outputs_on_a_key_calling_every_few_minutes_are_found():
    onset, until = HISTORY_END + 11 * 3600, HISTORY_END + 15 * 3600  # a template change from 11:00 to 15:00
    alerts = alerts_on_day_four(lambda t: 2.5 if onset <= t < until else 1.0)
    found = [a for a in alerts if a["kind"] == "tokens_per_request"]
    assert [(a["scope_dim"], a["scope_value"]) for a in found] == [("api_key", "quiet")], alerts
    assert onset <= _epoch(found[0]["start"]) < until
    assert "output tokens per request" in found[0]["explanation"]


def test_the_same_key_unchanged_raises_nothing():
    assert alerts_on_day_four(lambda t: 1.0) == []


def test_one_very_long_answer_is_not_a_template_change():
    t_long = HISTORY_END + 13 * 3600
    alerts = alerts_on_day_four(lambda t: 25.0 if t_long <= t < t_long + 300 else 1.0)
    assert [a for a in alerts if a["kind"] == "tokens_per_request"] == []


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def nightly_job(day_start: int, start_min: int, seed: int, rate_per_s: float = 1.0, n0: int = 0) -> list[list[dict]]:
    """A batch job: `rate_per_s` calls from 01:30 (+ `start_min`) for 40 minutes, one batch per 5 minutes."""
    from tests.streams.anomaly_traffic import event

    rng, batches = random.Random(seed), []
    for b in range(day_start, day_start + DAY, 300):
        offset = b - day_start - start_min * 60
        running = 90 * 60 <= offset < 130 * 60
        batches.append([event(b + rng.randrange(300), "etl", team="data", tin=1200, tout=150, n=n0 + i)
                        for i in range(int(300 * rate_per_s))] if running else [])
    return batches


def test_a_batch_job_an_hour_late_is_not_a_burst_but_a_leak_on_its_key_is():
    engine = AnomalyEngine()
    for day in range(3):
        for batch in nightly_job(MONDAY + day * DAY, 0, seed=day):
            engine.observe(batch, now=2e9)
    updates = []
    for batch in nightly_job(HISTORY_END, 60, seed=9):  # the job runs an hour late: an hour the key was never seen in
        updates += engine.observe(batch, now=2e9)
    bursts = [u.record for u in updates if u.action == "open" and u.record["kind"] == "request_burst"]
    assert bursts == []
    late_day = HISTORY_END + DAY
    for batch in nightly_job(late_day, 0, seed=10):
        updates += engine.observe(batch, now=2e9)
    from tests.streams.anomaly_traffic import event
    leak = [[event(late_day + 12 * 3600 + b * 300 + i % 300, "etl", team="data", tin=150, tout=40, n=10_000 + i)
             for i in range(900)] for b in range(6)]  # a new client at 3 calls/s at noon
    for batch in leak:
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(late_day + 13 * 3600)
    bursts = [u.record for u in updates if u.action == "open" and u.record["kind"] == "request_burst"]
    assert [b["start"][11:16] for b in bursts] == ["12:00"]


def sessions_on_two_models(seed: int):
    """A key that runs each 5-minute session on its main model, one session in five on a 16x pricier one."""
    rng = random.Random(seed)
    chosen: dict[int, str] = {}

    def modify(e, t):
        bucket = t - t % 300
        if bucket not in chosen:
            chosen[bucket] = "gpt-4o" if rng.random() < 0.2 else "gpt-4o-mini"
        e["model"] = chosen[bucket]
        if e["status"] == "ok":
            pin, pout = (2_500_000, 10_000_000) if e["model"] == "gpt-4o" else (150_000, 600_000)
            pico = e["usage"]["input_tokens"] * pin + e["usage"]["output_tokens"] * pout
            e["cost_usd"] = f"{pico // 10**12}.{pico % 10**12:012d}"
        return e
    return modify


def test_a_session_on_the_keys_usual_second_model_is_not_a_model_shift():
    engine, updates = AnomalyEngine(), []
    for batch in traffic(MONDAY, MONDAY + 5 * DAY, peak=4.0, keys=("two",), modify=sessions_on_two_models(4)):
        updates += engine.observe(batch, now=2e9)
    shifts = [u.record for u in updates if u.action == "open" and u.notify and u.record["kind"] == "model_shift"]
    assert shifts == []


def test_one_session_with_a_few_huge_documents_is_not_a_token_rate_anomaly():
    from tests.streams.anomaly_traffic import event

    t = HISTORY_END + 13 * 3600
    session = [event(t + 10 * i, "quiet", tin=120_000 if i in (3, 7, 9) else 1500, tout=300, n=5000 + i)
               for i in range(11)]
    engine, updates = quiet_engine(), []
    for i, batch in enumerate(traffic(HISTORY_END, HISTORY_END + DAY, peak=1.0, keys=("quiet",), seed=11,
                                      models=(("gpt-4o-mini", 1.0),), modify=heavy_tailed(12))):
        updates += engine.observe(batch + (session if i == 13 * 12 else []), now=2e9)
    updates += engine.advance_to(HISTORY_END + DAY + 900)
    assert [u.record["kind"] for u in updates if u.action == "open" and u.notify] == []


def test_calls_of_an_unpriced_model_are_its_own_anomaly_not_longer_outputs():
    from tests.streams.anomaly_traffic import event

    start = HISTORY_END + 11 * 3600
    unpriced = {132 + b: [event(start + b * 300 + 60 * i, "quiet", model="acme-internal-llm", tin=1500, tout=3000,
                                pricing="unpriced", n=7000 + 10 * b + i) for i in range(3)] for b in range(18)}
    engine, updates = quiet_engine(), []
    for i, batch in enumerate(traffic(HISTORY_END, HISTORY_END + DAY, peak=1.0, keys=("quiet",), seed=11,
                                      models=(("gpt-4o-mini", 1.0),), modify=heavy_tailed(12))):
        updates += engine.observe(batch + unpriced.get(i, []), now=2e9)
    kinds = {u.record["kind"] for u in updates if u.action == "open" and u.notify}
    assert "unpriced_usage" in kinds and "tokens_per_request" not in kinds

