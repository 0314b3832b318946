"""Early tokens-per-request checks (shift19, opt-in: `Config.early_kinds`; off by default, they raised more chance
alarms on held-out sparse seed 34): a key's CUSUM of standardized log output is judged as its calls arrive,
so a template change is alerted at the end of the minute whose call crossed the threshold, not at its bucket's close
plus the grace (the sixth round's quiet key: one call an hour at minute 7, alerted at :12, now at :08). The same
statistic (same threshold, same calls); the unchanged key raises nothing judged after every call; a restart after
the early alert does not alert again."""

from __future__ import annotations

import orjson

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY
from tests.streams.test_anomalies_quiet_key_template import quiet_key

ONSET = MONDAY + 6 * 86400
EARLY = Config(early_kinds=("error_rate", "model_shift", "tokens_per_request"))  # opt-in: not on by default
CLOSE_ONLY = Config()  # tokens per request judged at the close only (the default)


def _key_opens(engine: AnomalyEngine, calls: list[dict]) -> list[dict]:
    out = []
    for call in calls:
        out += [u.record for u in engine.observe([call], now=2e9)
                if u.action == "open" and u.record["kind"] == "tokens_per_request" and u.record["scope_dim"] == "api_key"]
    return out


def test_a_quiet_keys_template_change_is_alerted_in_the_minute_of_the_call_that_crossed():
    calls = quiet_key(ONSET)
    early, late = _key_opens(AnomalyEngine(EARLY), calls), _key_opens(AnomalyEngine(CLOSE_ONLY), calls)
    assert early and late, (early, late)
    # The same call crossed (same hour, same bucket); alerted at the end of its minute instead of the close + grace.
    assert late[0]["detected_at"][:14] == early[0]["detected_at"][:14] and late[0]["start"] == early[0]["start"]
    assert late[0]["detected_at"][14:] == "12:00Z", late[0]
    assert early[0]["detected_at"][14:] == "08:00Z", early[0]
    assert len(early) == len(late) == 1


def test_the_unchanged_quiet_key_raises_nothing_judged_after_every_call():
    assert _key_opens(AnomalyEngine(EARLY), quiet_key(None)) == []


def test_a_restart_after_the_early_alert_does_not_alert_again():
    calls = quiet_key(ONSET)
    engine = AnomalyEngine(EARLY)
    for i, call in enumerate(calls):
        if _key_opens(engine, [call]):
            break
    else:
        raise AssertionError("no early alert")
    restored = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    assert _key_opens(restored, calls[i + 1:]) == []
