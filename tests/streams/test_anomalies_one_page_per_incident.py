"""One page per incident, whatever kinds it shows (oncall24). anom24's runaway loop paged four times (spend_rate,
token_rate, tokens_per_request, then request_burst, all on api_key=search-k1): "one incident, one alert" folded broader
scopes of one kind, not kinds of one scope. Now the kinds opening on a scope together go on one trigger listing each;
a kind opening later while the incident is open is sent on the incident's dedup_key (PagerDuty appends it to the
open incident: no second page); the incident resolves once, when its last anomaly closes."""

from __future__ import annotations

import orjson

from streams.alerts.payloads import pagerduty_event, slack_message, webhook_body
from streams.anomalies.engine import AnomalyEngine, AnomalyUpdate
from streams.anomalies.publish import alert_for
from tests.streams.anomaly_traffic import event, traffic
from tests.streams.test_anomalies_detectors import HISTORY_END, feed, warm_engine

LOOP_AT = HISTORY_END + 3 * 3600  # 03:00 UTC: a runaway agent loop at night


def _loop(engine: AnomalyEngine, tout: int = 900) -> list[AnomalyUpdate]:
    updates = feed(engine, traffic(HISTORY_END, LOOP_AT, seed=5))
    for b in range(LOOP_AT, LOOP_AT + 3600, 300):  # 120 calls per 5 minutes for an hour, 3x the context, longer answers
        updates += engine.observe([event(b + i * 2, "k1", model="gpt-4o", tin=3000, tout=tout, n=i)
                                   for i in range(120)], now=2e9)
    return updates + feed(engine, traffic(LOOP_AT + 3600, LOOP_AT + 4 * 3600, seed=6))


def _alerts(updates: list[AnomalyUpdate]) -> list[dict]:
    return [a for a in (alert_for(u, "http://dash") for u in updates) if a is not None]


def _on_k1(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["scope"] == {"api_key": "k1"}]


def test_a_loop_on_one_key_pages_once_and_resolves_once_with_every_kind():
    updates = _loop(warm_engine())
    kinds = {u.record["kind"] for u in updates if u.action == "open" and u.notify
             and u.record["scope_value"] == "k1" and u.record["scope_dim"] == "api_key"}
    assert {"spend_rate", "request_burst"} <= kinds, kinds  # several kinds: the case
    alerts = _on_k1(_alerts(updates))
    pages = [a for a in alerts if a["action"] == "trigger" and a["id"] == f"{a['dedup_key']}:trigger"]
    assert len(pages) == 1, [(a["title"], a["dedup_key"]) for a in pages]
    incident = pages[0]["dedup_key"]
    assert {a["dedup_key"] for a in alerts} == {incident}  # every trigger and the resolve: one PagerDuty incident
    listed = set(pages[0]["details"].get("kinds", [pages[0]["kind"]]))
    joined = {a["kind"] for a in alerts if a["action"] == "trigger" and a is not pages[0]}
    assert listed | joined == kinds and not listed & joined, (listed, joined)
    resolves = [a for a in alerts if a["action"] == "resolve"]
    assert len(resolves) == 1 and set(resolves[0]["details"]["kinds"]) == kinds, resolves
    # ... sent when the last of them closed, not the first
    closes = [u for u in updates if u.action == "close" and u.record["scope_value"] == "k1"
              and u.record["scope_dim"] == "api_key" and u.notify]
    assert len(closes) == len(kinds) and resolves[0]["at"] == max(u.record["detected_at"] for u in closes)


def test_kinds_opening_together_share_one_trigger_in_every_format():
    # (answers of the usual size: the loop's volume kinds open at one close; longer answers open tokens per request
    # at the call that crossed, before that close, and the volume kinds then join it, as in the test above)
    updates = _loop(warm_engine(), tout=300)
    alerts = _on_k1(_alerts(updates))
    page = next(a for a in alerts if a["action"] == "trigger" and a["id"] == f"{a['dedup_key']}:trigger")
    if len(page["details"].get("kinds", [])) < 2:  # (this traffic opens its kinds in one close; say so if not)
        raise AssertionError(f"the loop's kinds did not open together: {page['title']}")
    for kind in page["details"]["kinds"]:
        assert kind.replace("_", " ").split()[0].lower() in page["title"].lower() or kind in page["summary"]
    assert len(page["details"]["mute_commands"]) == len(page["details"]["kinds"])
    slack = orjson.dumps(slack_message(page)).decode()
    assert "k1" in slack and page["title"][:40] in slack
    assert "*Kinds*\\n" + ", ".join(page["details"]["kinds"]) in slack, slack
    event_ = pagerduty_event(page, "R" * 32)
    assert event_["dedup_key"] and event_["payload"]["custom_details"]["kinds"] == page["details"]["kinds"]
    body = orjson.loads(webhook_body(page))
    assert body["details"]["incident_id"] == page["dedup_key"] and body["details"]["kinds"] == page["details"]["kinds"]


def test_a_restart_mid_incident_keeps_it_one_incident():
    engine = warm_engine()
    updates = feed(engine, traffic(HISTORY_END, LOOP_AT, seed=5))
    loop = [[event(b + i * 2, "k1", model="gpt-4o", tin=3000, tout=900, n=i) for i in range(120)]
            for b in range(LOOP_AT, LOOP_AT + 3600, 300)]
    for batch in loop[:4]:
        updates += engine.observe(batch, now=2e9)
    engine = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))
    for batch in loop[4:]:
        updates += engine.observe(batch, now=2e9)
    updates += feed(engine, traffic(LOOP_AT + 3600, LOOP_AT + 4 * 3600, seed=6))
    alerts = _on_k1(_alerts(updates))
    assert len({a["dedup_key"] for a in alerts}) == 1
    assert len([a for a in alerts if a["action"] == "resolve"]) == 1
