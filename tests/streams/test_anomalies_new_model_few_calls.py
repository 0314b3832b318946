"""A model none of a team's keys ever used is news after two calls (issue #17, new_model recall and delay).

On the synthetic month a user trying a model at night makes 1-2 calls an hour: seed 11 missed 3 of 10 such tries
(growth-user1 on mistral-large: 2 calls in all; platform-user2 on claude-3-5-haiku: 2 calls an hour) and seed 21
found them after a median of 19.5 minutes, because every scope waited for 3 calls in 2 buckets. A model new to one key
only (its team's usual model showing up on a quiet key) still needs 3 calls. The alert is on the narrowest scope
(the key), the team's the same incident; when the calls came from several keys, the team alerts, and a key reaching
its own evidence later is part of the team's alert, not a second one."""

from __future__ import annotations

from streams.anomalies.detectors import Config
from streams.anomalies.engine import AnomalyEngine
from tests.streams.anomaly_traffic import MONDAY, event, traffic

DAY = 86400
HISTORY_END = MONDAY + 3 * DAY
NIGHT = HISTORY_END + 2 * 3600  # Thursday 02:00 UTC: ~1 call per key and bucket


def only_mini_on_k2(e, t):
    """k2 never calls gpt-4o during the history (its team does, through k1)."""
    if e["attribution"]["api_key"] == "k2" and e["model"] == "gpt-4o":
        e["model"] = "gpt-4o-mini"
    return e


def history() -> AnomalyEngine:
    engine = AnomalyEngine()
    for batch in traffic(MONDAY, HISTORY_END + 3600, modify=only_mini_on_k2):
        engine.observe(batch, now=2e9)
    return engine


def feed(engine: AnomalyEngine, model: str, minutes: list[int], keys: list[str] | None = None) -> list:
    """k2 (or `keys`, one per call) calls `model` at these minutes after 02:00, in the night's usual traffic; the
    new_model openings."""
    keys = keys or ["k2"] * len(minutes)
    extra = [event(NIGHT + 60 * m + 17, k, model=model, n=900 + i) for i, (m, k) in enumerate(zip(minutes, keys))]
    updates = []
    for b, batch in zip(range(HISTORY_END + 3600, NIGHT + 2 * 3600, 300),
                        traffic(HISTORY_END + 3600, NIGHT + 2 * 3600, seed=7, modify=only_mini_on_k2)):
        mine = [e for e, m in zip(extra, minutes) if b <= NIGHT + 60 * m + 17 < b + 300]
        updates += engine.observe(batch + mine, now=2e9)
    return [u for u in updates if u.action == "open" and u.record["kind"] == "new_model"]


def test_two_calls_of_a_model_no_key_of_the_team_used_alert_on_the_key():
    opened = feed(history(), "gemini-2.0-flash", [10, 22])
    alerted = [u.record for u in opened if u.notify]
    assert [(r["scope_dim"], r["scope_value"]) for r in alerted] == [("api_key", "k2")]
    # at the close: end + grace - 1 min (oncall24)
    assert alerted[0]["start"].startswith("2026-09-10T02:20") and alerted[0]["detected_at"] == "2026-09-10T02:26:00Z"
    assert "api_key k2 started using gemini-2.0-flash" in alerted[0]["explanation"]
    assert any(u.record["scope_dim"] == "team" and not u.notify for u in opened)  # the same incident


def test_one_call_each_from_two_keys_alerts_once_and_a_key_later_is_part_of_it():
    """Two keys, one call each: the narrowest scope holding both calls alerts (here their shared feature), once."""
    opened = feed(history(), "gemini-2.0-flash", [10, 22, 35, 50], ["k1", "k2", "k2", "k2"])
    assert [(u.record["scope_dim"], u.record["detected_at"]) for u in opened if u.notify] == \
        [("feature", "2026-09-10T02:26:00Z")]
    on_k2 = [u.record for u in opened if u.record["scope_value"] == "k2"]
    assert len(on_k2) == 1 and on_k2[0]["explanation"].endswith("Part of the anomaly of feature chat (alerted there).")


def test_two_calls_of_the_teams_usual_model_new_to_one_key_stay_silent():
    assert not feed(history(), "gpt-4o", [10, 22])


def test_a_model_the_team_tried_once_long_ago_is_new_again():
    """Synthetic seed 11: platform-user1 tried claude-3-5-haiku on 09-09 (alerted), nobody on the team called it again,
    and platform-user2's two calls of it on 09-30 were missed as the team's known model. Here the team's try is on the
    history's first day and forgetting takes one day (the default is 14)."""
    def k1_tries_flash_on_day_one(e, t):
        e = only_mini_on_k2(e, t)
        if e["attribution"]["api_key"] == "k1" and MONDAY + 12 * 3600 <= t < MONDAY + 13 * 3600:
            e["model"] = "gemini-2.0-flash"
        return e

    def engine_after(config: Config) -> AnomalyEngine:
        engine = AnomalyEngine(config)
        for batch in traffic(MONDAY, HISTORY_END + 3600, modify=k1_tries_flash_on_day_one):
            engine.observe(batch, now=2e9)
        return engine

    alerted = [u.record for u in feed(engine_after(Config(new_model_forgotten_s=DAY)), "gemini-2.0-flash", [10, 22])
               if u.notify]
    assert [(r["scope_dim"], r["scope_value"]) for r in alerted] == [("api_key", "k2")]
    assert not feed(engine_after(Config()), "gemini-2.0-flash", [10, 22])
