"""A key starting on a model its team already uses is recorded, not alerted (issue #17, new_model precision).

On the sparse family's incident-free days, 7 of the 8 new_model alerts were keys calling their team's usual second
model for the first time after warm-up (a quiet key's mix shows up slowly). A model new to the team is still alerted
on the key, the narrowest scope that uses it."""

from __future__ import annotations

from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, traffic

DAY = 86400
HISTORY_END = MONDAY + 3 * DAY


def only_mini_on_k2(e, t):
    """k2 never calls gpt-4o during the history (its team does, through k1)."""
    if e["attribution"]["api_key"] == "k2" and e["model"] == "gpt-4o":
        e["model"] = "gpt-4o-mini"
    return e


def run(new_model: str) -> list:
    engine = AnomalyEngine()
    for batch in traffic(MONDAY, HISTORY_END, modify=only_mini_on_k2):
        engine.observe(batch, now=2e9)

    def k2_switches(e, t):
        e = only_mini_on_k2(e, t)
        if e["attribution"]["api_key"] == "k2" and e["event_id"].endswith(("0", "1", "2")):
            e["model"] = new_model
        return e

    updates = []
    for batch in traffic(HISTORY_END + 13 * 3600, HISTORY_END + 16 * 3600, seed=5, modify=k2_switches):
        updates += engine.observe(batch, now=2e9)
    return [u for u in updates if u.action == "open" and u.record["kind"] == "new_model"]


def test_a_key_on_its_teams_usual_model_is_recorded_not_alerted():
    opened = run("gpt-4o")
    on_key = [u for u in opened if u.record["scope_value"] == "k2"]
    assert len(on_key) == 1 and not on_key[0].notify
    assert "Already used by team search (not alerted)." in on_key[0].record["explanation"]
    assert not [u for u in opened if u.notify]


def test_a_model_new_to_the_team_is_alerted_on_the_key():
    opened = run("claude-opus-4")
    alerted = [u.record for u in opened if u.notify]
    assert [(r["scope_dim"], r["scope_value"]) for r in alerted] == [("api_key", "k2")]
    assert any(u.record["scope_dim"] == "team" and not u.notify for u in opened)
