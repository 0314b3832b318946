"""Decide from evidence, not one call (issue #17, point 1): on a quiet key one premium call or one 120k-token prompt
is not an anomaly; a runaway loop or a token explosion on the same key still is, within 15 minutes."""

from __future__ import annotations

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

DAY = 86400
HISTORY_END = MONDAY + 3 * DAY
_cache: dict[str, bytes] = {}


def quiet_engine() -> AnomalyEngine:
    """Three days of a quiet key (about one cheap call per 10 minutes at its busiest)."""
    if "quiet" not in _cache:
        engine = AnomalyEngine()
        for batch in traffic(MONDAY, HISTORY_END, peak=0.5, keys=("quiet",), models=(("gpt-4o-mini", 1.0),)):
            engine.observe(batch, now=2e9)
        _cache["quiet"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["quiet"]))


def replay(engine: AnomalyEngine, extra: dict[int, list[dict]], hours: float = 3.0) -> list:
    updates = []
    batches = traffic(HISTORY_END, HISTORY_END + int(hours * 3600), peak=0.5, keys=("quiet",), seed=11,
                      models=(("gpt-4o-mini", 1.0),))
    for i, batch in enumerate(batches):
        updates += engine.observe(batch + extra.get(i, []), now=2e9)
    updates += engine.advance_to(HISTORY_END + int(hours * 3600) + 900)
    return [u for u in updates if u.action == "open" and u.notify]


def test_one_premium_call_on_a_quiet_key_is_not_an_alert():
    t = HISTORY_END + 13 * 3600 + 30  # a weekday afternoon
    opus = event(t, "quiet", model="claude-opus-4", tin=5000, tout=1000, n=99)  # $0.15 in one call
    alerts = replay(quiet_engine(), {13 * 12: [opus]}, hours=15)
    assert [a.record["explanation"] for a in alerts] == []


def test_one_huge_prompt_on_a_quiet_key_is_not_an_alert():
    t = HISTORY_END + 13 * 3600 + 30
    document = event(t, "quiet", model="gpt-4o-mini", tin=120_000, tout=800, n=98)
    alerts = replay(quiet_engine(), {13 * 12: [document]}, hours=15)
    assert [a.record["explanation"] for a in alerts] == []


def test_runaway_loop_on_the_quiet_key_is_still_found_within_15_minutes():
    start = HISTORY_END + 2 * 3600  # 02:00: the key is at its quietest
    loop = {24 + b: [event(start + b * 300 + i * 6, "quiet", model="gpt-4o", tin=3000, n=1000 + i) for i in range(50)]
            for b in range(8)}
    alerts = replay(quiet_engine(), loop, hours=4)
    spend = [a.record for a in alerts if a.record["kind"] == "spend_rate" and a.record["scope_dim"] == "api_key"]
    assert len(spend) == 1 and spend[0]["detected_at"] <= "2026-09-10T02:15:00Z"


def test_token_explosion_on_the_quiet_key_is_still_found_within_15_minutes():
    start = HISTORY_END + 14 * 3600
    boom = {14 * 12 + b: [event(start + b * 300 + i * 20, "quiet", tin=90_000, tout=200, n=2000 + i) for i in range(15)]
            for b in range(8)}
    alerts = replay(quiet_engine(), boom, hours=17)
    tokens = [a.record for a in alerts if a.record["kind"] == "token_rate" and a.record["scope_dim"] == "api_key"]
    assert len(tokens) == 1 and tokens[0]["detected_at"] <= "2026-09-10T14:15:00Z"
