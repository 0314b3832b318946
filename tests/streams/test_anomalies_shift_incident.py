"""A team's move to a pricier model is one incident, paged once (issue 17, ninth round).

Sparse seed 8, "team research switches to premium o1": project research-b's model shift was alerted at 12:52 and
resolved at 13:07 (the takeover rule speaks once per scope and model); feature research-agent's own takeover of the
same model, reached at 13:32, paged again. Office seed 8 paged team eng's move to claude-opus-4 on each of its five
keys. Now a model shift to a model that every team of its traffic was alerted to move to, while that team's shift
records to it keep coming with gaps under `shift_incident_gap_s` (an hour), joins the alert ("Part of the model shift
to o1 alerted on ..."); a move to another model, or the same move again after the gap, is alerted.

Eleventh round: the team's own calls on the model keep the move going too, not only shift records. Records pause while
the team goes on (a quiet scope's anomaly closes after three buckets without new evidence): sparse seed 11 paged its 9
moves 16 times, 70-240 minutes apart, while every team's calls on its model came at most 54 minutes apart."""

from __future__ import annotations

import orjson

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic
from tests.streams.test_anomalies_model_takeover import heavy_tailed

DAY = 86400
HISTORY_END = MONDAY + 5 * DAY
KEYS = ("k1", "k2", "k3", "k4")
FEATURE = {"k1": "chat", "k2": "chat", "k3": "agent", "k4": "agent"}  # two features of one team and project
MODELS = (("gpt-4o-mini", 0.98), ("claude-opus-4", 0.02))
ONSET = HISTORY_END + DAY + 14 * 3600  # Sunday 14:00 UTC
_cache: dict[str, bytes] = {}


def _features(base):
    def modify(e, t):
        e = base(e, t)
        e["attribution"]["feature"] = FEATURE[e["attribution"]["api_key"]]
        return e
    return modify


def _history() -> AnomalyEngine:
    if "engine" not in _cache:
        engine = AnomalyEngine()
        for batch in traffic(MONDAY, HISTORY_END, peak=3.0, keys=KEYS, models=MODELS,
                             modify=_features(heavy_tailed(3))):
            engine.observe(batch, now=2e9)
        _cache["engine"] = orjson.dumps(engine.snapshot())
    return AnomalyEngine.restore(orjson.loads(_cache["engine"]))


def shifts_after(moves: dict[str, list[tuple[float, float, str]]], restart_at: float | None = None) -> list[dict]:
    """Two days after the history; key k calls `model` with probability 0.9 from `since` to `until` seconds after
    ONSET for each (since, until, model) in moves[k]; with `restart_at` (seconds after ONSET), the detector restarts
    from its snapshot there. The model shift anomalies opened, with whether they paged."""
    engine, updates = _history(), []
    base = _features(heavy_tailed(31))

    def modify(e, t):
        e = base(e, t)
        for since, until, model in moves.get(e["attribution"]["api_key"], ()):
            if ONSET + since <= t < ONSET + until and _coin(e) < 0.9:
                e.update(model=model, cost_usd=event(t, model=model, tin=e["usage"]["input_tokens"],
                                                     tout=e["usage"]["output_tokens"])["cost_usd"])
        return e

    for batch in traffic(HISTORY_END, HISTORY_END + 2 * DAY, peak=3.0, keys=KEYS, seed=31, models=MODELS,
                         modify=modify):
        if restart_at is not None and batch and _epoch(batch[0]["ts"]) >= ONSET + restart_at:
            engine, restart_at = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot()))), None
        updates += engine.observe(batch, now=2e9)
    updates += engine.advance_to(HISTORY_END + 2 * DAY + 900)
    return [u.record | {"_notify": u.notify} for u in updates
            if u.action == "open" and u.record["kind"] == "model_shift"]


def _epoch(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def _coin(e: dict) -> float:
    return (int.from_bytes(orjson.dumps(e["event_id"])[-6:], "big") % 1000) / 1000


def _paged(opened: list[dict]) -> list[tuple[str, str, str]]:
    return [(r["scope_dim"], r["scope_value"], r["detected_at"][11:16]) for r in opened if r["_notify"]]


# (Alerted at 14:15, the end of the newest minute of the 5-minute batch that completed the evidence: model shifts are
# judged on the running bucket too, early_shifts.py; at the close of 14:10-14:15 plus the grace it was 14:17.)
HOUR = 3600
TO_O1 = (0, 20 * 60, "o1")  # feature chat's two keys call o1 (new to the team) for 20 minutes from 14:00


def test_a_sibling_features_shift_to_the_same_model_while_the_first_is_open_joins_its_alert():
    # Feature chat's keys move at 14:00 (alerted at 14:15); feature agent's key k3 too, its shift opening a bucket
    # later (14:22): the old code paged it again.
    opened = shifts_after({"k1": [(0, 3 * HOUR, "o1")], "k2": [(0, 3 * HOUR, "o1")], "k3": [(0, 3 * HOUR, "o1")]})
    assert _paged(opened) == [("feature", "chat", "14:15")], _paged(opened)
    joined = [(r["scope_dim"], r["scope_value"]) for r in opened
              if "Part of the model shift to o1 alerted on feature chat at 14:15 UTC (not alerted again)." in
              r["explanation"]]
    assert ("api_key", "k3") in joined, opened


def test_a_shift_to_the_same_model_after_the_first_resolved_within_the_hour_joins_its_alert():
    # Feature chat's shift resolves after its keys' 20 minutes on o1; feature agent's keys move at 14:45 and its
    # shift opens at 15:02 (sparse seed 8: project research-b at 12:52, resolved 13:07, feature research-agent 13:32).
    opened = shifts_after({"k1": [TO_O1], "k2": [TO_O1], "k3": [(45 * 60, 2 * HOUR, "o1")],
                           "k4": [(45 * 60, 2 * HOUR, "o1")]})
    assert _paged(opened) == [("feature", "chat", "14:15")], _paged(opened)
    assert any(r["scope_dim"] == "feature" and r["scope_value"] == "agent" and not r["_notify"] and
               "Part of the model shift to o1 alerted on feature chat" in r["explanation"] for r in opened), opened


def test_a_restart_between_the_two_keeps_the_move_one_incident():
    # The detector restarts from its snapshot at 14:40, between chat's alert and agent's move: the team's mark of
    # its alerted move to o1 is part of the saved state.
    opened = shifts_after({"k1": [TO_O1], "k2": [TO_O1], "k3": [(45 * 60, 2 * HOUR, "o1")],
                           "k4": [(45 * 60, 2 * HOUR, "o1")]}, restart_at=40 * 60)
    assert _paged(opened) == [("feature", "chat", "14:15")], _paged(opened)


def test_the_same_move_again_after_more_than_the_gap_is_paged_again():
    again = (3 * HOUR, 4 * HOUR, "o1")
    opened = shifts_after({"k1": [TO_O1, again], "k2": [TO_O1, again]})
    assert [page[2] for page in _paged(opened)] == ["14:15", "17:53"], _paged(opened)


def test_a_move_to_another_model_within_the_hour_is_paged():
    to_opus = (45 * 60, 2 * HOUR, "claude-opus-4")
    opened = shifts_after({"k1": [TO_O1], "k2": [TO_O1], "k3": [to_opus], "k4": [to_opus]})
    assert len(_paged(opened)) == 2, _paged(opened)
    assert not any("Part of the model shift" in r["explanation"] for r in opened), opened


AGENT_LATER = (2 * HOUR, 3 * HOUR, "o1")  # feature agent's keys move two hours after chat's alert


def test_a_move_whose_records_pause_while_the_team_calls_the_model_in_sessions_is_paged_once():
    # Chat's shift is alerted at 14:15 and resolves; k1 goes on calling o1 in 5-minute sessions 20-25 minutes apart
    # (too few calls for a record), feature agent's keys move at 16:00: the old code paged it at 16:32, more than an
    # hour after chat's last shift record.
    sessions = [(start * 60, (start + 5) * 60, "o1") for start in (45, 70, 95)]
    opened = shifts_after({"k1": [TO_O1, *sessions], "k2": [TO_O1], "k3": [AGENT_LATER], "k4": [AGENT_LATER]})
    assert _paged(opened) == [("feature", "chat", "14:15")], _paged(opened)
    assert any(r["scope_dim"] == "feature" and r["scope_value"] == "agent" and not r["_notify"] and
               "Part of the model shift to o1 alerted on feature chat at 14:15 UTC" in r["explanation"]
               for r in opened), opened


def test_a_move_whose_records_pause_while_one_key_stays_on_the_model_is_paged_once():
    # k1 stays on o1 for three hours; the team's and project's shift records pause from 14:37 to 16:07 (the old code
    # paged project search-app at 16:07).
    opened = shifts_after({"k1": [(0, 3 * HOUR, "o1")], "k2": [TO_O1], "k3": [AGENT_LATER], "k4": [AGENT_LATER]})
    assert _paged(opened) == [("feature", "chat", "14:15")], _paged(opened)
