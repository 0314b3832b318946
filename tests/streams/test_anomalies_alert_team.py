"""An anomaly alert on a key, user, feature, project or model names the team(s) whose traffic it is (anom32).

The demo's alerts read "Spend rate anomaly: api_key=sk-glo-grow-hal", "Error rate spike: api_key=sk-acm-supp-bot",
"Unpriced usage: model=acme-internal-llm-v2": on-call had to open the dashboard to learn whose key or whose calls
(anom24 noted it and left it: the scope has one dimension). The detector knows: the bucket that opened the anomaly
holds the scope's calls with their team. The title now says "(team growth)" and `details.teams` lists them, on the
trigger and on the resolve, also after a restart mid-incident; a team's own alert does not repeat itself."""

from __future__ import annotations

import orjson

from streams.alerts.payloads import pagerduty_event, slack_message
from streams.anomalies.engine import AnomalyEngine, AnomalyUpdate
from streams.anomalies.publish import alert_for
from tests.streams.anomaly_traffic import event, traffic
from tests.streams.test_anomalies_detectors import HISTORY_END, feed, warm_engine

LOOP_AT = HISTORY_END + 3 * 3600  # 03:00 UTC: a runaway agent loop at night


def _loop_batches(start: int, end: int):
    for b in range(start, end, 300):  # 120 calls per 5 minutes, 3x the context
        yield [event(b + i * 2, "k1", model="gpt-4o", tin=3000, tout=300, n=i) for i in range(120)]


def _alerts(updates: list[AnomalyUpdate]) -> list[dict]:
    return [a for a in (alert_for(u, "http://dash") for u in updates) if a is not None]


def _k1(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["scope"] == {"api_key": "k1"}]


def test_a_keys_page_and_its_resolve_name_its_team_also_after_a_restart():
    engine = warm_engine()
    updates = feed(engine, traffic(HISTORY_END, LOOP_AT, seed=5))
    updates += feed(engine, _loop_batches(LOOP_AT, LOOP_AT + 1800))
    page = next(a for a in _k1(_alerts(updates)) if a["action"] == "trigger")
    assert page["title"].endswith("api_key=k1 (team search)"), page["title"]
    assert page["details"]["teams"] == ["search"], page["details"]
    assert pagerduty_event(page, "R" * 32)["payload"]["summary"].endswith("(team search)")
    assert any("(team search)" in b["text"]["text"] for b in slack_message(page)["blocks"] if b["type"] == "header")

    restarted = AnomalyEngine.restore(orjson.loads(orjson.dumps(engine.snapshot())))  # mid-incident
    later = feed(restarted, _loop_batches(LOOP_AT + 1800, LOOP_AT + 3600))
    later += feed(restarted, traffic(LOOP_AT + 3600, LOOP_AT + 4 * 3600, seed=6))
    resolves = [a for a in _k1(_alerts(later)) if a["action"] == "resolve"]
    assert len(resolves) == 1, [a["title"] for a in _k1(_alerts(later))]
    assert resolves[0]["title"].endswith("api_key=k1 (team search)"), resolves[0]["title"]
    assert resolves[0]["details"]["teams"] == ["search"]


def test_an_unpriced_models_alert_names_the_team_calling_it():
    engine = warm_engine()
    updates = feed(engine, traffic(HISTORY_END, LOOP_AT, seed=5))
    batches = [[event(b + i * 60, "k2", model="acme-llm", pricing="unpriced", n=i) for i in range(3)]
               for b in range(LOOP_AT, LOOP_AT + 1800, 300)]
    updates += feed(engine, batches)
    unpriced = [a for a in _alerts(updates) if a["kind"] == "unpriced_usage" and a["action"] == "trigger"]
    assert unpriced and unpriced[0]["title"].endswith("model=acme-llm (team search)"), [a["title"] for a in unpriced]


def test_a_teams_own_alert_does_not_repeat_its_team():
    update = AnomalyUpdate("open", {
        "id": "anomaly-t", "kind": "spend_rate", "scope_dim": "team", "scope_value": "search", "severity": "warning",
        "observed": "3", "expected": "0.1", "expected_low": "0", "expected_high": "1", "unit": "usd_per_hour",
        "start": "2026-12-07T09:00:00Z", "end": "2026-12-07T09:05:00Z", "status": "open",
        "detected_at": "2026-12-07T09:06:00Z", "explanation": "team search is spending $3.00/hour"},
        teams=("search",))
    alert = alert_for(update, "")
    assert alert["title"] == "Spend rate anomaly: team=search" and alert["details"]["teams"] == ["search"]
