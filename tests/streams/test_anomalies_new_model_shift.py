"""A model new to a team that takes over its calls is a model shift (issue 17, eighth round).

Sparse seed 8, "team research switches to premium o1": o1 was new to the team, so it was alerted 9 minutes in as a
new model on project research-b, and never as a model shift: one key (sk-sparse-59) made most of the o1 calls, so the
takeover rule's session guard left 1-4 calls of the other keys, and the team's cost per token, swinging with its
premium sessions, never reached 5 deviations. "o1 is new to the team" does not tell its reader that the team's calls
left their usual model. Now a model new to a scope and its teams that takes most of the scope's calls within an hour
of its first call, from two or more keys, pricier per token, is also a model shift naming from -> to. One key's
session on a model it never used stays a new model only, and a move to a cheaper model is no cost news."""

from __future__ import annotations

import orjson

from tests.streams.anomaly_traffic import event, traffic
from tests.streams.test_anomalies_model_takeover import DAY, HISTORY_END, KEYS, MODELS, heavy_tailed, history

ONSET = HISTORY_END + DAY + 14 * 3600  # Sunday 14:00 UTC, a quiet afternoon (~1 call per key and bucket)


def opened_after(moves: dict[str, float], extra: list[dict] = ()) -> list[dict]:
    """A day of the team's traffic after its history; from ONSET on, key k calls `model` with probability moves[k]
    (model per key: "o1" unless given as "model:share"); plus `extra` calls. The anomalies opened."""
    engine, updates = history(), []
    base = heavy_tailed(31)

    def modify(e, t):
        e = base(e, t)
        move = moves.get(e["attribution"]["api_key"])
        if move and ONSET <= t < ONSET + 2 * 3600 and _coin(e) < move[1]:
            e.update(model=move[0], cost_usd=event(t, model=move[0], tin=e["usage"]["input_tokens"],
                                                    tout=e["usage"]["output_tokens"])["cost_usd"])
        return e

    for b, batch in zip(range(HISTORY_END, HISTORY_END + 2 * DAY, 300),
                        traffic(HISTORY_END, HISTORY_END + 2 * DAY, peak=3.0, keys=KEYS, seed=31, models=MODELS,
                                modify=modify)):
        updates += engine.observe(batch + [e for e in extra if b <= _epoch(e["ts"]) < b + 300], now=2e9)
    updates += engine.advance_to(HISTORY_END + 2 * DAY + 900)
    return [u.record | {"_notify": u.notify} for u in updates if u.action == "open"]


def _coin(e: dict) -> float:
    """A deterministic draw per event (so every variant moves the same calls)."""
    return (int.from_bytes(orjson.dumps(e["event_id"])[-6:], "big") % 1000) / 1000


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _shifts(opened: list[dict]) -> list[dict]:
    return [r for r in opened if r["kind"] == "model_shift"]


def test_a_new_model_taking_over_a_teams_calls_from_two_keys_is_a_model_shift_naming_from_and_to():
    opened = opened_after({"k1": ("o1", 0.9), "k2": ("o1", 0.9)})
    alerted = [r for r in _shifts(opened) if r["_notify"]]
    assert len(alerted) == 1, _shifts(opened)
    shift = alerted[0]
    assert ONSET - 300 <= _epoch(shift["start"]) and _epoch(shift["detected_at"]) <= ONSET + 3600, shift
    assert "its calls moved from gpt-4o-mini to o1, never used by it before" in shift["explanation"]
    assert "from 2 API keys" in shift["explanation"]
    # Both kinds: the new model stays news of its own (alerted earlier, when its second call came).
    new = [r for r in opened if r["kind"] == "new_model" and r["_notify"]]
    assert new and new[0]["detected_at"] < shift["detected_at"]


def test_one_keys_calls_on_a_model_it_never_used_stay_a_new_model():
    opened = opened_after({"k1": ("o1", 0.9)})
    assert _shifts(opened) == []
    assert [(r["scope_dim"], r["scope_value"]) for r in opened if r["kind"] == "new_model" and r["_notify"]] == \
        [("api_key", "k1")]


def test_a_move_to_a_new_model_that_is_not_pricier_is_no_model_shift():
    opened = opened_after({"k1": ("gemini-2.0-flash", 0.9), "k2": ("gemini-2.0-flash", 0.9)})
    assert _shifts(opened) == []
    assert any(r["kind"] == "new_model" and r["_notify"] for r in opened)
