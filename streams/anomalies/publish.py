"""Anomaly updates -> records: the anomaly record itself (`tokenmeter.anomalies`, key = id) and, when an anomaly
opens or closes, an alert record (`tokenmeter.alerts`, source "anomaly") that the alert dispatcher delivers to its
own anomaly routes.

One trigger per anomaly id and one resolve when it closes; both carry dedup_key = the anomaly id, so PagerDuty
groups them and a redelivered record (same alert id) is delivered once. Updates of an ongoing anomaly are only
re-published on `tokenmeter.anomalies` (later `end`), never re-alerted. An anomaly explained by a narrower one of
the same kind (the team's spend spike that is one key's loop) is recorded but alerted only on the narrower scope.
"""

from __future__ import annotations

import re
import shlex

from tokenmeter.records import SEVERITIES, alert_record
from tokenmeter.timefmt import people_utc

from .engine import AnomalyUpdate

# detectors.explain's closing sentence on non-money kinds ("Spend meanwhile: $15.12/hour (usually $0.0407/hour).")
_SPEND_SENTENCE = re.compile(r" Spend meanwhile: \$[^ ]+/hour(?: \(usually \$[^ ]+/hour\))?\.")

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
    incident = update.incident or {}
    role = incident.get("role")
    if role in ("on_page", "held"):
        return None  # on another anomaly's page; or closed while others of its incident are open (resolved with them)
    a = update.record
    if role == "page" and len(incident["kinds"]) > 1:
        return _page(incident, a, dashboard_url, update.teams)
    if role in ("join", "resolve") and (role == "join" or len(incident["kinds"]) > 1):
        return _incident_alert(incident, a, dashboard_url, update.teams)
    action = "trigger" if update.action == "open" else "resolve"
    title = f"{TITLES.get(a['kind'], a['kind'])}: {a['scope_dim']}={a['scope_value']}{_whose(a, update.teams)}"
    if action == "resolve":
        title = f"Resolved: {title}"
    mute = mute_command(a)
    return alert_record(
        id=f"{a['id']}:{action}", source="anomaly", kind=a["kind"], action=action, severity=a["severity"],
        dedup_key=a["id"], title=title, summary=(
            f"{a['explanation']} Since {people_utc(a['start'])}. Silence this kind on this scope for 24 h: {mute}"
            if action == "trigger" else f"Back to normal since {people_utc(a['end'])}. It was: {a['explanation']}"),
        at=a["detected_at"], scope={a["scope_dim"]: a["scope_value"]}, notify=[],
        details={"anomaly_id": a["id"], **_figures(a), **_teams(update.teams),
                 **({"mute_command": mute} if action == "trigger" else {})},
        dashboard_url=_anomaly_url(a, dashboard_url),
    )


def _whose(a: dict, teams: tuple[str, ...]) -> str:
    """" (team growth)" after a key's, user's, feature's, project's or model's scope: whose traffic it is. Not after
    a team's own scope, nor when unknown (an anomaly opened before anom32)."""
    if not teams or a["scope_dim"] == "team":
        return ""
    shown = ", ".join(teams[:3]) + (f" and {len(teams) - 3} more" if len(teams) > 3 else "")
    return f" (team{'s' if len(teams) > 1 else ''} {shown})"


def _teams(teams: tuple[str, ...]) -> dict:
    return {"teams": list(teams)} if teams else {}


def _figures(a: dict) -> dict:
    """What every anomaly alert's details carry of the record (`unpriced` optional, as on the record)."""
    return {"observed": a["observed"], "expected": a["expected"], "expected_low": a["expected_low"],
            "expected_high": a["expected_high"], "unit": a["unit"], "start": a["start"], "end": a["end"],
            "status": a["status"], **({"unpriced": True} if a.get("unpriced") else {})}


def _anomaly_url(a: dict, dashboard_url: str) -> str:
    """The Anomalies page on this anomaly: its id and its days (UTC). The page lists the anomalies of its date range
    (the last 7 days unless given) and selects the first row when the id is not among them, so a link to an older
    anomaly (the demo history's, a week-old Slack message) showed another anomaly's band (anom32)."""
    if not dashboard_url:
        return ""
    days = "".join(f"&{name}={str(a.get(field) or '')[:10]}" for name, field in (("start", "start"), ("end", "end"))
                   if len(str(a.get(field) or "")) >= 10)
    return f"{dashboard_url.rstrip('/')}/anomalies?id={a['id']}{days}"


def _kinds_title(kinds: list[str]) -> str:
    return ", ".join(TITLES.get(k, k) for k in kinds)


def _page(incident: dict, lead: dict, dashboard_url: str, teams: tuple[str, ...] = ()) -> dict:
    """One trigger for several kinds opened together on one scope (kinds.py): titled by all of them, the summary one
    line per kind, severity the highest, mute commands for each kind."""
    records = incident["records"]
    scope = f"{lead['scope_dim']}={lead['scope_value']}"
    mutes = [mute_command(r) for r in records]
    # A spend anomaly's sentence is the incident's money: the other kinds' "Spend meanwhile" repeated it (anom32).
    said = any(r["kind"] == "spend_rate" for r in records)
    lines = [f"{TITLES.get(r['kind'], r['kind'])}: "
             f"{_SPEND_SENTENCE.sub('', r['explanation']) if said else r['explanation']}" for r in records]
    return alert_record(
        id=f"{lead['id']}:trigger", source="anomaly", kind=lead["kind"], action="trigger",
        severity=max((r["severity"] for r in records), key=SEVERITIES.index),
        dedup_key=incident["id"], title=f"{_kinds_title(incident['kinds'])}: {scope}{_whose(lead, teams)}",
        summary=(f"One incident, {len(records)} kinds on {scope}, since {people_utc(lead['start'])}. "
                 + " ".join(lines) + " Silence a kind on this scope for 24 h: " + "; ".join(mutes)),
        at=lead["detected_at"], scope={lead["scope_dim"]: lead["scope_value"]}, notify=[],
        details={"anomaly_id": lead["id"], "incident_id": incident["id"], "kinds": list(incident["kinds"]),
                 "anomaly_ids": [r["id"] for r in records], **_figures(lead), **_teams(teams),
                 "mute_command": mutes[0], "mute_commands": mutes},
        dashboard_url=_anomaly_url(lead, dashboard_url),
    )


def _incident_alert(incident: dict, a: dict, dashboard_url: str, teams: tuple[str, ...] = ()) -> dict:
    """A later kind joining an open incident (a trigger on the incident's dedup_key: PagerDuty appends it, no second
    page), or the incident's resolve once its last anomaly closed (listing every kind it had)."""
    scope = f"{a['scope_dim']}={a['scope_value']}{_whose(a, teams)}"
    kinds, since = incident["kinds"], people_utc(incident.get("at") or a["start"])
    if incident["role"] == "join":
        mute = mute_command(a)
        action, alert_id = "trigger", f"{a['id']}:trigger"
        title = f"{TITLES.get(a['kind'], a['kind'])}: {scope} (same incident as {_kinds_title(kinds[:-1])})"
        # (the explanation already ends "Same incident as the … alerted on this scope at 03:06 UTC (one page).": the
        # summary said it a second time, anom32)
        summary = f"{a['explanation']} Since {people_utc(a['start'])}. Silence this kind on this scope for 24 h: {mute}"
        extra = {"mute_command": mute}
    else:
        action, alert_id = "resolve", f"{incident['id']}:resolve"
        title = f"Resolved: {_kinds_title(kinds)}: {scope}"
        summary = (f"Back to normal since {people_utc(a['end'])}: every kind of the incident paged at {since} "
                   f"({', '.join(kinds)}). The last to close: {a['explanation']}")
        extra = {}
    return alert_record(
        id=alert_id, source="anomaly", kind=a["kind"], action=action, severity=a["severity"],
        dedup_key=incident["id"], title=title, summary=summary, at=a["detected_at"],
        scope={a["scope_dim"]: a["scope_value"]}, notify=[],
        details={"anomaly_id": a["id"], "incident_id": incident["id"], "kinds": list(kinds), **_figures(a),
                 **_teams(teams), **extra},
        dashboard_url=_anomaly_url(a, dashboard_url),
    )
