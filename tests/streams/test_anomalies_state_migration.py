"""A detector restored from a state saved before a release that changed a default follows today's default (oncall24).
The detector process always runs with the default Config, but a restore kept the saved one: a state saved before
tpr23 went on judging tokens per request at the close only (alerts minutes later) until someone deleted it. A saved
default is migrated; a Config that is not a default (a test's, an evaluation's) is kept as saved."""

from __future__ import annotations

import orjson

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.test_anomalies_early_sizes import ONSET, _key_opens, _later
from tests.streams.test_anomalies_quiet_key_template import quiet_key

BEFORE_TPR23 = ("error_rate", "model_shift")


def _saved_before_this_release(engine: AnomalyEngine) -> dict:
    """The engine's snapshot as a release before oncall24 wrote it (no `config_is_default`), through JSON."""
    data = orjson.loads(orjson.dumps(engine.snapshot()))
    data.pop("config_is_default", None)
    return data


def test_a_default_state_saved_before_tpr23_judges_tokens_per_request_per_call_after_a_restart():
    calls = _later(quiet_key(ONSET), 35)
    old = AnomalyEngine(Config(early_kinds=BEFORE_TPR23))  # the default of its time
    half = len(calls) // 2  # (the key's history, before the change)
    for call in calls[:half]:
        old.observe([call], now=2e9)
    restored = AnomalyEngine.restore(_saved_before_this_release(old))
    assert restored.cfg == Config() and "tokens_per_request" in restored.cfg.early_kinds
    assert "early checks" in restored.restored_note
    found = _key_opens(restored, calls[half:])
    assert found and found[0]["detected_at"][14:] == "07:35Z", found  # at the crossing call, not the close


def test_a_config_that_is_not_a_default_is_kept():
    custom = Config(early_kinds=BEFORE_TPR23, tpr_cusum_h=9.0)
    restored = AnomalyEngine.restore(_saved_before_this_release(AnomalyEngine(custom)))
    assert restored.cfg == custom and restored.restored_note == ""
    kept = AnomalyEngine.restore(orjson.loads(orjson.dumps(AnomalyEngine(Config(early_kinds=())).snapshot())))
    assert kept.cfg.early_kinds == ()


def test_todays_default_round_trips_as_the_default():
    data = orjson.loads(orjson.dumps(AnomalyEngine().snapshot()))
    assert data["config_is_default"] is True
    assert AnomalyEngine.restore(data).cfg == Config()
