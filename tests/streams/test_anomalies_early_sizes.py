"""Early tokens-per-request checks (shift19 opt-in, tpr23 on by default and judged per call): a key's CUSUM of
standardized log output is judged after each call of the running bucket, so a template change is alerted at the time
of the call that crossed the threshold, not at its bucket's close plus the grace (the sixth round's quiet key: one
call an hour; close-only alerted at :11, :12 before oncall24, per call at the call). The same statistic (same
threshold, same calls); the unchanged key raises nothing judged after every call; one alert per change, not one per
call; a restart after the early alert does not alert again."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY
from tests.streams.test_anomalies_quiet_key_template import quiet_key

ONSET = MONDAY + 6 * 86400
CLOSE_ONLY = Config(early_kinds=("error_rate", "model_shift"))  # tokens per request judged at the close only


def _later(calls: list[dict], seconds: int) -> list[dict]:
    """The same calls `seconds` later (mid-bucket: minute 7 of 5-10, past the previous bucket's close at :07:00)."""
    for call in calls:
        t = datetime.fromisoformat(call["ts"]).timestamp() + seconds
        call["ts"] = datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return calls


def _opens(engine: AnomalyEngine, calls: list[dict]) -> list:
    out = []
    for call in calls:
        out += [u for u in engine.observe([call], now=2e9)
                if u.action == "open" and u.record["kind"] == "tokens_per_request"]
    return out


def _key_opens(engine: AnomalyEngine, calls: list[dict]) -> list[dict]:
    return [u.record for u in _opens(engine, calls) if u.record["scope_dim"] == "api_key"]


def test_a_template_change_whose_crossing_call_arrives_mid_bucket_is_alerted_at_that_calls_time():
    calls = _later(quiet_key(ONSET), 35)
    early, late = _key_opens(AnomalyEngine(), calls), _key_opens(AnomalyEngine(CLOSE_ONLY), calls)
    assert early and late, (early, late)
    # The same call crossed (same hour, same bucket); alerted at its own time (07:35) instead of the close + grace.
    assert late[0]["detected_at"][:14] == early[0]["detected_at"][:14] and late[0]["start"] == early[0]["start"]
    assert late[0]["detected_at"][14:] == "11:00Z", late[0]  # the close (end + grace - 1 min: oncall24)
    assert early[0]["detected_at"][14:] == "07:35Z", early[0]
    assert len(early) == len(late) == 1


def test_one_alert_per_change_not_one_per_call_or_scope():
    updates = _opens(AnomalyEngine(), _later(quiet_key(ONSET), 35))
    # The key, its user, project, team and feature may all open; one of them pages, the rest join it.
    assert sum(u.notify for u in updates) == 1, [(u.record["scope_dim"], u.notify) for u in updates]
    assert len({(u.record["scope_dim"], u.record["scope_value"]) for u in updates}) == len(updates)


def test_the_unchanged_quiet_key_raises_nothing_judged_after_every_call():
    assert _key_opens(AnomalyEngine(), quiet_key(None)) == []


def test_a_restart_after_the_early_alert_does_not_alert_again():
    calls = quiet_key(ONSET)
    engine = AnomalyEngine()
    for i, call in enumerate(calls):
        if _key_opens(engine, [call]):
            break
    else:
        raise AssertionError("no early alert")
    restored = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    assert _key_opens(restored, calls[i + 1:]) == []
