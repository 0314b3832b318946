"""Anomaly updates -> records: the anomaly record itself (`tokenmeter.anomalies`, key = id) and, when an anomaly
opens or closes, an alert record (`tokenmeter.alerts`, source "anomaly") that the alert dispatcher delivers to its
own anomaly routes.

One trigger per anomaly id and one resolve when it closes; both carry dedup_key = the anomaly id, so PagerDuty
groups them and a redelivered record (same alert id) is delivered once. Updates of an ongoing anomaly are only
re-published on `tokenmeter.anomalies` (later `end`), never re-alerted. An anomaly explained by a narrower one of
the same kind (the team's spend spike that is one key's loop) is recorded but alerted only on the narrower scope.
"""

from __future__ import annotations

import shlex

from tokenmeter.records import alert_record
from tokenmeter.timefmt import people_utc

from .engine import AnomalyUpdate

TITLES = {
    "spend_rate": "Spend rate anomaly", "token_rate": "Token rate anomaly",
    "tokens_per_request": "Tokens per request jumped", "request_burst": "Request burst from an API key",
    "new_model": "New model in use", "error_rate": "Error rate spike", "model_shift": "Cost moved to a pricier model",
    "unpriced_usage": "Unpriced usage",
}


def mute_command(anomaly: dict) -> str:
    """What on-call runs to silence an anomaly's kind on its scope (`tokenmeter anomalies mute`, 24 h by default;
    the dashboard's Mute button does the same). Detection goes on; `unmute` with the same arguments lifts it."""
    scope = shlex.quote(f"{anomaly['scope_dim']}={anomaly['scope_value']}")  # a user "Jane Doe", a team "R&D"
    return f"tokenmeter anomalies mute {anomaly['id']} --kind {anomaly['kind']} --scope {scope}"


def alert_for(update: AnomalyUpdate, dashboard_url: str = "") -> dict | None:
    """The alert record of an update (trigger on open, resolve on close), or None for an ongoing update. Its
    `notify` is empty: the dispatcher delivers it to its own TOKENMETER_ANOMALY_NOTIFY. Routes are secrets (Slack
    URLs, routing keys) and every client of tokenmeter.alerts reads the records (leak21)."""
    if update.action not in ("open", "close") or not update.notify:
        return None
    a = update.record
    action = "trigger" if update.action == "open" else "resolve"
    title = f"{TITLES.get(a['kind'], a['kind'])}: {a['scope_dim']}={a['scope_value']}"
    if action == "resolve":
        title = f"Resolved: {title}"
    mute = mute_command(a)
    return alert_record(
        id=f"{a['id']}:{action}", source="anomaly", kind=a["kind"], action=action, severity=a["severity"],
        dedup_key=a["id"], title=title, summary=(
            f"{a['explanation']} Since {people_utc(a['start'])}. Silence this kind on this scope for 24 h: {mute}"
            if action == "trigger" else f"Back to normal since {people_utc(a['end'])}. It was: {a['explanation']}"),
        at=a["detected_at"], scope={a["scope_dim"]: a["scope_value"]}, notify=[],
        details={"anomaly_id": a["id"], "observed": a["observed"], "expected": a["expected"],
                 "expected_low": a["expected_low"], "expected_high": a["expected_high"], "unit": a["unit"],
                 "start": a["start"], "end": a["end"], "status": a["status"],
                 **({"unpriced": True} if a.get("unpriced") else {}),  # optional, as on the record
                 **({"mute_command": mute} if action == "trigger" else {})},
        dashboard_url=f"{dashboard_url.rstrip('/')}/anomalies?id={a['id']}" if dashboard_url else "",
    )
