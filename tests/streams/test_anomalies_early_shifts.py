"""Early model-shift checks (shift19): a team's move to a pricier model it rarely uses is alerted in the minute its
evidence is complete, not at its bucket's close plus the grace (sparse seed 8, team research to o1: the rules' evidence
was complete at 13:57, alerted at 14:02, 15.8 minutes after the first changed call). The same rules on the same
window; one alert per move; nothing more on traffic without a move; a restart does not alert again. Events are fed
minute by minute, as a live consumer reads them (and as `anomalies evaluate` does)."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from streams.anomalies.evaluate import by_minute
from tests.streams.anomaly_traffic import event, traffic
from tests.streams.test_anomalies_model_takeover import DAY, HISTORY_END, KEYS, MODELS, heavy_tailed, history

ONSET, UNTIL = HISTORY_END + 14 * 3600, HISTORY_END + 16 * 3600  # Saturday afternoon: ~1 call per key and bucket
pytestmark = pytest.mark.slow(seconds=3)  # rough seconds: longest files first (tests/suite_order.py)

CLOSE_ONLY = Config(early_kinds=("error_rate",))  # the model shift rules judged at the close only, as before


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _minutes(premium_share, seed: int = 12, days: int = 1, extra: list[dict] = ()) -> list[list[dict]]:
    calls = [e for batch in traffic(HISTORY_END, HISTORY_END + days * DAY, peak=3.0, keys=KEYS, seed=seed,
                                    models=MODELS, modify=heavy_tailed(seed, premium_share)) for e in batch]
    return by_minute(calls + list(extra))


def _run(engine: AnomalyEngine, minutes: list[list[dict]], end: float) -> list:
    updates = []
    for minute in minutes:
        updates += engine.observe(minute, now=2e9)
    return updates + engine.advance_to(end)


def _shift_opens(updates: list) -> list[dict]:
    return [u.record | {"_notify": u.notify} for u in updates if u.action == "open" and u.record["kind"] == "model_shift"]


def _moved(t: float) -> float:
    return 0.8 if ONSET <= t < UNTIL else 0.0


def test_a_teams_move_is_alerted_in_the_minute_its_evidence_is_complete():
    minutes = _minutes(_moved)
    early = _shift_opens(_run(history(), minutes, HISTORY_END + DAY + 900))
    engine = history()
    engine.cfg = CLOSE_ONLY
    late = _shift_opens(_run(engine, minutes, HISTORY_END + DAY + 900))
    first_early = min((r for r in early if r["_notify"]), key=lambda r: r["detected_at"])
    first_late = min((r for r in late if r["_notify"]), key=lambda r: r["detected_at"])
    # Before: the close of its bucket plus the grace. Now: the end of the minute that completed the evidence, at
    # least the grace earlier (here 14:12 for 14:17), on a scope of the move, naming its model.
    assert ONSET - 300 <= _epoch(first_early["start"]) < UNTIL
    assert _epoch(first_early["detected_at"]) <= _epoch(first_late["detected_at"]) - 120, (first_early, first_late)
    assert "claude-opus-4" in first_early["explanation"]
    # One alert per move, early or not.
    assert len([r for r in early if r["_notify"]]) == len([r for r in late if r["_notify"]]) == 1, (early, late)


def test_no_shift_without_a_move_when_judged_every_minute():
    for seed in (12, 13):  # the keys' rare premium calls alone (2 % of their calls)
        assert [r for r in _shift_opens(_run(history(), _minutes(lambda t: 0.0, seed), HISTORY_END + DAY + 900))
                if r["_notify"]] == []
    # One key's session on a model it never used (9 calls in 4 minutes): a session's calls share one model.
    t = HISTORY_END + 2 * DAY + 14 * 3600 + 20
    session = [event(t + 25 * i, "k1", model="gpt-4o", tin=4000, tout=500, n=7000 + i) for i in range(9)]
    updates = _run(history(), _minutes(lambda t: 0.0, 14, days=3, extra=session), HISTORY_END + 3 * DAY + 900)
    assert [r for r in _shift_opens(updates) if r["_notify"]] == []


def test_a_restart_after_the_early_alert_does_not_alert_again():
    minutes = _minutes(_moved)
    engine, before = history(), []
    for i, minute in enumerate(minutes):
        before += engine.observe(minute, now=2e9)
        if _shift_opens(before):
            break
    opened = _shift_opens(before)
    assert opened and any(r["_notify"] for r in opened), "no early shift"
    restored = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    after = _run(restored, minutes[i + 1:], HISTORY_END + DAY + 900)
    again = [r for r in _shift_opens(after) if r["_notify"] and _epoch(r["start"]) < ONSET + 3600]
    assert again == [], again
    assert {u.record["id"] for u in after if u.record["kind"] == "model_shift"} >= {opened[0]["id"]}
